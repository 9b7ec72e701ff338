"""`python -m benchmarks`: throughput of llama_cx and its peers on the same weights.

For every (model, engine, thread count) a fresh subprocess loads the model and measures
  load time, time to first token (16-token prompt), prefill tok/s (128 and 512 tokens), decode tok/s
  (128 greedy tokens), peak RSS,
and the parent adds effective bandwidth (weight bytes per token x decode tok/s), the machine's read
bandwidth from benchmarks/stream.c, and the decode roofline (bandwidth / weight bytes per token).

Engines: llama_cx (public API), torch-bf16 / torch-fp32 (benchmarks/peers_torch.py), llama.cpp
(llama-cpp-python or a llama-bench binary, on a BF16 GGUF of the same weights). An engine that cannot run
is listed as "absent: <reason>"; no number is ever made up for it.

Layout: run.py (this file: what to measure, in which order, on a shared machine), worker.py (one
measurement in its own process), models.py (checkpoints), machine.py (CPU facts, bandwidth probe, load of
other processes), report.py (derived numbers and tables), plot.py.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from . import models as M
from .machine import (all_cores, compile_stream, cpu_busy_seconds, machine_info, measure_bandwidth, mem_available,
                      probe_bandwidth, source_digest, wait_until_quiet, warm_page_cache)
from .report import cell, combine_rounds, derive, format_markdown, format_text_table, greedy_agreement, ratio_lines, table_rows, tokenizer_line

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ENGINES = ("llama_cx", "llama_cx-bf16pf", "llama_cx-bf16", "llama_cx-hp", "torch-bf16", "torch-fp32", "llama.cpp")


def settings(quick: bool) -> dict:
    """What each worker measures. Quick mode is sized for CI (2 cores, about 3 minutes in all)."""
    if quick:
        return dict(prompts=[128, 512], n_decode=64, reps=1, stream_mib=1024, stream_reps=3, engines=list(ENGINES))
    return dict(prompts=[128, 512], n_decode=128, reps=2, stream_mib=1024, stream_reps=7, engines=list(ENGINES))


def run_worker(job: dict, timeout: float, log) -> dict:
    """Run one measurement in a fresh interpreter with the thread count pinned through the environment."""
    t = job["threads"]
    env = dict(os.environ, OMP_NUM_THREADS=str(t), MKL_NUM_THREADS=str(t), OPENBLAS_NUM_THREADS=str(t),
               LLAMA_CX_NUM_THREADS=str(t), PYTHONUNBUFFERED="1")
    # fairscale installs a top-level `benchmarks` package; the repository must come first on the path.
    env["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    with tempfile.TemporaryDirectory(prefix="lcx-bench-") as tmp:
        job = dict(job, result_path=os.path.join(tmp, "result.json"))
        jp = os.path.join(tmp, "job.json")
        with open(jp, "w") as f:
            json.dump(job, f)
        errp = os.path.join(tmp, "stderr.txt")
        busy0, ru0, t0 = cpu_busy_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        with open(errp, "w") as err:
            try:
                r = subprocess.run([sys.executable, "-m", "benchmarks.worker", jp], cwd=REPO, env=env,
                                   stdout=subprocess.DEVNULL, stderr=err, timeout=timeout)
                rc = r.returncode
            except subprocess.TimeoutExpired:
                return {"failed": f"timed out after {timeout:.0f} s"}
        ru1, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - t0
        ours = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        # Cores other processes kept busy while the worker ran: a shared machine makes numbers noisy.
        others = max(0.0, (cpu_busy_seconds() - busy0 - ours) / wall) if busy0 else None
        if os.path.exists(job["result_path"]):
            with open(job["result_path"]) as f:
                res = json.load(f)
            res["other_cpu_cores"] = others
            if "failed" in res:
                with open(errp) as f:
                    tail = f.read().strip()[-2000:]
                log("    worker stderr (tail):\n      " + tail.replace("\n", "\n      "))
            return res
        with open(errp) as f:
            tail = [ln for ln in f.read().strip().splitlines() if ln.strip()]
        return {"failed": f"worker exited with {rc}: {tail[-1] if tail else 'no output'}"}


def measure_on_shared_machine(job: dict, args, files: str, log) -> dict:
    """run_worker, after waiting for the machine to go quiet (--wait-quiet); with --max-other-load, measure
    again (up to --retries times) while other processes kept more cores busy than that, and keep the run
    that was disturbed least.

    The read bandwidth at the job's thread count is probed just before and just after the worker: on a
    virtual machine the host's other tenants move it by tens of percent within minutes, so the decode
    roofline of a row is taken from the bandwidth of its own minutes (the better of the two probes)."""
    exe, _ = compile_stream(log)
    best, attempts = None, 1 + (args.retries if args.max_other_load is not None else 0)
    for attempt in range(1, attempts + 1):
        if args.wait_quiet:
            wait_until_quiet(args.wait_quiet, log)
        probes = [probe_bandwidth(exe, job["threads"], 1024, 3)] if exe else []
        warm_page_cache(files)
        digest = source_digest()  # the checkout may be rebuilt during a long run
        t0 = time.perf_counter()
        res = run_worker(job, timeout=7200, log=log)
        res.update(wall_s=time.perf_counter() - t0, llama_cx_source=digest, attempts=attempt)
        if exe:
            probes.append(probe_bandwidth(exe, job["threads"], 1024, 3))
            gbs = [p["best_gbs"] for p in probes if "best_gbs" in p]
            if gbs:
                res.update(bw_probes_gbs=gbs, bw_gbs=max(gbs))
        others = res.get("other_cpu_cores") or 0.0
        if best is None or others < (best.get("other_cpu_cores") or 0.0):
            best = res
        if "decode_tps" not in res or args.max_other_load is None or others <= args.max_other_load:
            break
        if attempt < attempts:
            log(f"    other processes kept {others:.2f} cores busy during the run; measuring again")
    return best


def cpu_has_flag(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and flag in line.split() for line in f)
    except OSError:
        return False


def engine_absent(engine: str, prepared, spec, quick: bool) -> "str | None":
    """Why `engine` cannot run on this model here, or None. Cheap checks only; the worker finds the rest."""
    if engine in ("llama_cx-bf16pf", "llama_cx-bf16") and not cpu_has_flag("avx512_bf16"):
        return "bf16 activations need AVX512-BF16, which this CPU lacks"
    if engine.startswith("torch-") and importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    if engine == "torch-fp32":
        need = 4 * spec.n_params() * 1.15 + 1e9
        if mem_available() < need:
            return f"fp32 weights need ~{need / 1e9:.0f} GB of RAM, {mem_available() / 1e9:.0f} GB available"
    if engine == "llama.cpp":
        from .peers_llamacpp import binding_status, llama_bench_path

        mod, why = binding_status()
        if mod is None and llama_bench_path() is None:
            return why + "; no llama-bench on PATH"
        if prepared.gguf_path is None:
            return prepared.gguf_absent
    return None


def tokenizer_bench(quick: bool, log) -> dict:
    """Encode MB/s of llama_cx's tokenizer vs tiktoken, from benchmarks/bench_tokenizer.py (one thread)."""
    if importlib.util.find_spec("tiktoken") is None:
        return {"absent": "tiktoken is not installed"}
    try:
        M.import_llama_cx()
        from . import bench_tokenizer
    except Exception as e:
        return {"absent": f"benchmarks.bench_tokenizer did not import: {type(e).__name__}: {e}"}
    try:
        tok = M.llama3_tokenizer(log)
        try:
            gguf = M.smollm2_gguf(log)
        except M.Unavailable:
            gguf = None
        if quick:
            return bench_tokenizer.run(tok, repeat=2, max_bytes=1_000_000, gguf_path=gguf)
        return bench_tokenizer.run(tok, gguf_path=gguf)
    except M.Unavailable as e:
        return {"absent": str(e)}
    except Exception as e:
        return {"failed": f"{type(e).__name__}: {e}"}


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized run: SmolLM2 only, fewer tokens (~3 min on 2 cores)")
    ap.add_argument("--threads", help=f"comma-separated thread counts (default 1,{all_cores()})")
    ap.add_argument("--models", help="comma-separated of " + ",".join(M.MODELS) + " (default: smollm2 in quick "
                    "mode, all in full mode)")
    ap.add_argument("--engines", help="comma-separated of " + ",".join(ENGINES) + " (default: all)")
    ap.add_argument("--out", default=os.path.join(HERE, "out"), help="directory for results.json/.md/.png")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                    help="before each measurement wait up to S seconds for other processes to go idle")
    ap.add_argument("--max-other-load", type=float, default=None, metavar="CORES",
                    help="measure again when other processes kept more than CORES cores busy during a run")
    ap.add_argument("--retries", type=int, default=2, help="most repeated measurements for --max-other-load")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every engine N times, in alternating order, and report the medians (default 1)")
    ap.add_argument("--no-tokenizer", action="store_true", help="skip the tokenizer benchmark")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    def log(msg):
        print(msg, flush=True)

    quick = args.quick
    st = settings(quick)
    threads = sorted({int(x) for x in args.threads.split(",")}) if args.threads else sorted({1, all_cores()})
    keys = args.models.split(",") if args.models else (["smollm2"] if quick else list(M.MODELS))
    engines = args.engines.split(",") if args.engines else st["engines"]
    for k in keys:
        if k not in M.MODELS:
            raise SystemExit(f"unknown model {k!r}; choose from {', '.join(M.MODELS)}")
    for e in engines:
        if e not in ENGINES:
            raise SystemExit(f"unknown engine {e!r}; choose from {', '.join(ENGINES)}")
    if args.rounds < 1:
        raise SystemExit(f"--rounds must be >= 1, not {args.rounds}")
    os.makedirs(args.out, exist_ok=True)
    t_begin = time.perf_counter()
    report = {"mode": "quick" if quick else "full", "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine_info(),
              "settings": dict(st, threads=threads, models=keys, engines=engines, rounds=args.rounds),
              "results": [], "notes": []}
    m = report["machine"]
    log(f"machine: {m.get('cpu', '?')}, {m['cores']} cores, ISA {' '.join(m.get('isa', []))}, "
        f"{m.get('mem_total_gb', '?')} GB RAM; cache {M.cache_dir()}")

    log("bandwidth probe:")
    report["bandwidth"] = measure_bandwidth(threads, st["stream_mib"], st["stream_reps"], log)
    if report["bandwidth"].get("absent"):
        log(f"  absent: {report['bandwidth']['absent']}")
        report["notes"].append(f"bandwidth probe absent: {report['bandwidth']['absent']}")

    for key in keys:
        spec = M.MODELS[key]
        log(f"\nmodel {key}: {spec.label}, {spec.n_params() / 1e9:.3f} B params, "
            f"{spec.weight_bytes_per_token() / 1e9:.3f} GB of bf16 weights per token")
        try:
            prepared = M.prepare(spec, want_gguf="llama.cpp" in engines, log=log)
        except M.Unavailable as e:
            log(f"  absent: {e}")
            for eng in engines:
                for t in threads:
                    report["results"].append({"engine": eng, "model": key, "threads": t, "absent": str(e)})
            continue
        reps = st["reps"] if spec.n_params() < 2e9 else 1
        order = [(eng, t) for eng in engines for t in threads]
        runs = {key2: [] for key2 in order}
        for rnd in range(1, args.rounds + 1):
            if args.rounds > 1:
                log(f"  round {rnd} of {args.rounds}")
            for eng, t in (order if rnd % 2 else order[::-1]):  # alternate the order: drift hits both ends
                row = {"engine": eng, "model": key, "threads": t, "round": rnd}
                why = engine_absent(eng, prepared, spec, quick)
                if why:
                    row["absent"] = why
                else:
                    job = dict(engine=eng, model=key, threads=t, meta_dir=prepared.meta_dir, gguf=prepared.gguf_path,
                               vocab=spec.vocab, prompts=st["prompts"], n_decode=st["n_decode"], reps=reps,
                               rope_scale_factor=spec.rope_scale_factor,
                               model_weight_bytes_per_token=spec.weight_bytes_per_token())
                    if eng == "llama.cpp" and importlib.util.find_spec("llama_cpp") is None:
                        job["via"] = "llama-bench"
                    files = prepared.gguf_path if eng == "llama.cpp" else prepared.meta_dir
                    row.update(measure_on_shared_machine(job, args, files, log))
                derive(row, report["bandwidth"])
                runs[(eng, t)].append(row)
                _, body = table_rows([row])
                log(f"  {eng:>10} {t} thr: " + (body[0][3] if len(body[0]) == 4 else
                    f"import {cell(row, 'import_s', '{:.2f}')} s, load {cell(row, 'load_s', '{:.0f}', 1e3)} ms, TTFT {cell(row, 'ttft_s', '{:.0f}', 1e3)} ms, "
                    f"prefill {', '.join(f'{n}: {v:.1f}' for n, v in row['prefill_tps'].items())} tok/s, "
                    f"decode {row['decode_tps']:.2f} tok/s ({row['wall_s']:.0f} s, other load "
                    f"{cell(row, 'other_cpu_cores', '{:.2f}')} cores)"))
                if why:
                    break  # absent in every round
        for key2 in order:
            report["results"].append(combine_rounds(runs[key2]))

    if not report["bandwidth"].get("absent"):
        log("\nbandwidth probe again:")
        measure_bandwidth(threads, st["stream_mib"], st["stream_reps"], log, out=report["bandwidth"])
    for row in report["results"]:
        derive(row, report["bandwidth"])
    greedy_agreement(report["results"])
    if not args.no_tokenizer:
        log("\ntokenizer benchmark:")
        report["tokenizer"] = tokenizer_bench(quick, log)
        log("  " + tokenizer_line(report["tokenizer"]))
    report["total_s"] = time.perf_counter() - t_begin

    from .plot import plot

    png, why = plot(report, os.path.join(args.out, "results.png"))
    if png is None:
        report["notes"].append(f"plot skipped: {why}")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(format_markdown(report))
    log("\n" + format_text_table(report["results"]))
    ratios = ratio_lines(report["results"])
    if ratios:
        log("\nllama_cx / peer:\n" + "\n".join(ratios))
    log(f"\nwrote {args.out}/results.json, results.md" + (", results.png" if png else f" (no plot: {why})")
        + f" in {report['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
