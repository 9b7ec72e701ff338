"""`python -m benchmarks.long_context`: decode speed as the context fills, llama_cx next to llama.cpp.

A decode step reads the whole KV cache besides the weights: at a few thousand positions attention costs as
much as the matrix products. For each engine (in its own process, alternating, --rounds times) this fills
the context with a prompt of P tokens and times 32 decode steps after it (fixed token ids, no sampling), for
P in --positions. Prints tok/s per position and the llama_cx / llama.cpp ratio (median over rounds).
llama.cpp keeps its KV cache in f16 (its default), llama_cx in f32: llama.cpp reads half the cache bytes.
`--kv-dtype f32,f16` runs llama_cx once per KV cache type ("llama_cx" = f32, "llama_cx/f16", ...), so the
half-size cache's gain deep into a context shows next to the f32 one.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from . import models as M

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
STEPS = 32


def _prompt(n: int):
    return [(i * 7) % 1000 + 3 for i in range(n)]


def _measure(engine: str, path: str, threads: int, positions: list, n_ctx: int) -> dict:
    """Runs in the child process: {position: decode tok/s}, through the benchmark workers' engines."""
    if engine.startswith("llama_cx"):
        from .worker import LlamaCxEngine

        eng = LlamaCxEngine(path, threads, n_ctx, kv_dtype=engine.partition("/")[2] or "f32")
    else:
        from .peers_llamacpp import LlamaCpp

        eng = LlamaCpp(path, threads, n_ctx)
    out = {}
    for p in positions:
        eng.reset()
        eng.forward(_prompt(p))
        t0 = time.perf_counter()
        for i in range(STEPS):
            eng.forward([i + 5])
        out[str(p)] = STEPS / (time.perf_counter() - t0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.long_context", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", choices=sorted(M.MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--positions", default="16,1000,2000,3800", help="comma-separated prompt lengths")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kv-dtype", default="f32", help="llama_cx's KV cache types, comma-separated (f32, bf16, f16)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    positions = [int(x) for x in args.positions.split(",")]
    if not positions or min(positions) < 1:
        raise SystemExit("--positions: prompt lengths must be >= 1")
    n_ctx = max(positions) + STEPS
    if args.child:
        engine, path = json.loads(args.child)
        print(json.dumps(_measure(engine, path, args.threads, positions, n_ctx)))
        return 0
    prepared = M.prepare(M.MODELS[args.model], want_gguf=True, log=print)
    kinds = args.kv_dtype.split(",")
    if not kinds or any(k not in ("f32", "bf16", "f16") for k in kinds):
        raise SystemExit(f"--kv-dtype: expected f32, bf16 or f16 (comma-separated), got {args.kv_dtype!r}")
    engines = [("llama_cx" if k == "f32" else f"llama_cx/{k}", prepared.meta_dir) for k in kinds]
    if prepared.gguf_path is None:
        print(f"llama.cpp absent: {prepared.gguf_absent}")
    else:
        from .peers_llamacpp import binding_status

        mod, why = binding_status()
        if mod is None:
            print(f"llama.cpp absent: {why}")
        else:
            engines.append(("llama.cpp", prepared.gguf_path))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    runs = {e: {str(p): [] for p in positions} for e, _ in engines}
    for r in range(args.rounds):
        for engine, path in (engines if r % 2 == 0 else engines[::-1]):
            cmd = [sys.executable, "-m", "benchmarks.long_context", "--model", args.model, "--threads",
                   str(args.threads), "--positions", args.positions, "--child", json.dumps([engine, path])]
            res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                print(f"{engine} failed: {(res.stderr.strip().splitlines() or ['?'])[-1]}")
                return 1
            tps = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"round {r + 1} {engine:>12}: " + ", ".join(f"{p}: {v:.1f}" for p, v in tps.items()) + " tok/s")
            for p, v in tps.items():
                runs[engine][p].append(v)
    print(f"\nmedian decode tok/s after a prompt of P tokens ({args.model}, {args.threads} threads, "
          f"{args.rounds} rounds):")
    for p in positions:
        line = f"  P = {p:>5}: " + ", ".join(f"{e} {statistics.median(runs[e][str(p)]):.1f}" for e, _ in engines)
        if "llama.cpp" in runs:
            ref = statistics.median(runs["llama.cpp"][str(p)])
            line += "  vs llama.cpp: " + ", ".join(f"{e} {statistics.median(runs[e][str(p)]) / ref:.2f}x"
                                                  for e, _ in engines if e != "llama.cpp")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
