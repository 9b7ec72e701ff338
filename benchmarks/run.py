"""`python -m benchmarks`: throughput of llama_cx and its peers on the same weights.

For every (model, engine, thread count) a fresh subprocess loads the model and measures
  load time, time to first token (16-token prompt), prefill tok/s (128 and 512 tokens), decode tok/s
  (128 greedy tokens), peak RSS,
and the parent adds effective bandwidth (weight bytes per token x decode tok/s), the machine's read
bandwidth from benchmarks/stream.c, and the decode roofline (bandwidth / weight bytes per token).

Engines: llama_cx (public API), torch-bf16 / torch-fp32 (benchmarks/peers_torch.py), llama.cpp
(llama-cpp-python or a llama-bench binary, on a BF16 GGUF of the same weights). An engine that cannot run
is listed as "absent: <reason>"; no number is ever made up for it.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from . import models as M

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ENGINES = ("llama_cx", "torch-bf16", "torch-fp32", "llama.cpp")
N_CTX = 1024
TTFT_PROMPT = 16
PROMPT_SEED = 1234


# ---- settings ------------------------------------------------------------------------------------------

def all_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def settings(quick: bool) -> dict:
    """What each worker measures. Quick mode is sized for CI (2 cores, about 3 minutes in all)."""
    if quick:
        return dict(prompts=[128, 512], n_decode=64, reps=1, stream_mib=1024, stream_reps=3, engines=list(ENGINES))
    return dict(prompts=[128, 512], n_decode=128, reps=2, stream_mib=1024, stream_reps=7, engines=list(ENGINES))


def prompt_ids(n: int, vocab: int, salt: int = 0) -> list:
    rng = random.Random(PROMPT_SEED * 1000 + salt)
    return [rng.randrange(vocab) for _ in range(n)]


# ---- machine facts and the bandwidth probe ------------------------------------------------------------

def machine_info() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cores": all_cores(),
            "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith("model name") and "cpu" not in info:
                info["cpu"] = line.split(":", 1)[1].strip()
            if line.startswith("flags") and "isa" not in info:
                flags = set(line.split(":", 1)[1].split())
                wanted = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                          "avx512_fp16", "amx_bf16", "amx_tile"]
                info["isa"] = [f for f in wanted if f in flags]
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            mem = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f if ln.split()[1:]}
        info["mem_total_gb"] = round(mem["MemTotal"] / 1e9, 1)
    except (OSError, KeyError, ValueError):
        pass
    info["llama_cx_source"] = source_digest()
    for mod in ("torch", "llama_cpp", "numpy"):
        try:
            if importlib.util.find_spec(mod) is not None:
                from importlib import metadata
                name = {"llama_cpp": "llama-cpp-python"}.get(mod, mod)
                info[f"{mod}_version"] = metadata.version(name)
        except Exception:
            pass
    return info


def source_digest() -> "str | None":
    """Short hash of what decides llama_cx's speed in this checkout (kernels, their built extension, the
    model and weight-loading code): ties the numbers to a state of the code that others may be editing."""
    import glob

    files = sorted(glob.glob(os.path.join(REPO, "csrc", "*.[ch]"))) + sorted(
        glob.glob(os.path.join(REPO, "llama_cx", "_kernels*.so")))
    files += [os.path.join(REPO, "llama_cx", n) for n in ("_kernels.pyx", "model.py", "runtime.py", "checkpoint.py")]
    h, n = hashlib.sha256(), 0
    for path in files:
        if os.path.isfile(path):
            with open(path, "rb") as f:
                h.update(os.path.basename(path).encode() + b"\0" + f.read())
            n += 1
    return h.hexdigest()[:12] if n else None


def mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for ln in f:
                if ln.startswith("MemAvailable:"):
                    return int(ln.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _compile_stream(log):
    """Build benchmarks/stream.c with the system C compiler, cached by source hash. (exe, note)."""
    src = os.path.join(HERE, "stream.c")
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None, "no C compiler (cc/gcc/clang) on PATH"
    bindir = os.path.join(M.cache_dir(), "bin")
    os.makedirs(bindir, exist_ok=True)
    for flags, note in ((["-O2", "-fopenmp"], None), (["-O2"], "compiled without OpenMP: 1 thread only")):
        exe = os.path.join(bindir, f"stream-{digest}{'-omp' if note is None else '-serial'}")
        if os.path.exists(exe):
            return exe, note
        r = subprocess.run([cc, *flags, src, "-o", exe + ".tmp"], capture_output=True, text=True)
        if r.returncode == 0:
            os.replace(exe + ".tmp", exe)
            return exe, note
        log(f"  {cc} {' '.join(flags)} stream.c failed: {(r.stderr.strip().splitlines() or [''])[-1]}")
    return None, "stream.c did not compile"


def probe_bandwidth(exe: str, threads: int, mib: int, reps: int) -> dict:
    """One run of the compiled stream.c: its JSON, or {"error": why}."""
    r = subprocess.run([exe, str(mib), str(threads), str(reps)], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": f"stream probe failed: {r.stderr.strip()[-200:]}"}
    return json.loads(r.stdout)


def measure_bandwidth(threads: list, mib: int, reps: int, log, out=None) -> dict:
    """{threads: best GB/s} from the read probe, plus notes; {} entries when the probe is unavailable.

    Called at the start and again at the end of a run (out= the first result): on a shared machine the
    neighbours' memory traffic moves the number, and the best of both is the machine's capability."""
    exe, note = _compile_stream(log)
    if out is None:
        out = {"probe": "benchmarks/stream.c: uint64 sum over a %d MiB array, best of %d at the start and "
               "at the end of the run" % (mib, reps), "gbs": {}, "runs": {}, "note": note}
    if exe is None:
        out["absent"] = note
        return out
    for t in threads:
        if note and t > 1:
            continue
        res = probe_bandwidth(exe, t, mib, reps)
        if "error" in res:
            out["absent"] = res["error"]
            return out
        out["gbs"][str(t)] = max(res["best_gbs"], out["gbs"].get(str(t), 0.0))
        out["runs"].setdefault(str(t), []).extend(res["gbs"])
        log(f"  read bandwidth, {t} thread{'s' if t > 1 else ''}: {res['best_gbs']:.1f} GB/s "
            f"(runs {', '.join(f'{g:.1f}' for g in res['gbs'])})")
    return out


def cpu_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cores), from /proc/stat; 0 if unknown."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def wait_until_quiet(max_wait: float, log, window: float = 2.0, limit: float = 0.25) -> float:
    """On a shared machine, wait (up to max_wait seconds) for a window in which other processes use less
    than `limit` cores. Returns the busy cores seen in the last window."""
    deadline, busy = time.monotonic() + max_wait, 0.0
    while True:
        b0 = cpu_busy_seconds()
        time.sleep(window)
        busy = (cpu_busy_seconds() - b0) / window
        if busy < limit or time.monotonic() >= deadline:
            break
    if busy >= limit and max_wait > 0:
        log(f"    machine still busy ({busy:.1f} cores used by others) after waiting {max_wait:.0f} s")
    return busy


def warm_page_cache(path: str) -> float:
    """Read a file once so every engine loads from the page cache, not the disk. Returns seconds."""
    t0 = time.perf_counter()
    files = [path] if os.path.isfile(path) else [os.path.join(path, f) for f in os.listdir(path)]
    for fp in files:
        if os.path.isfile(fp):
            with open(fp, "rb", buffering=0) as f:
                while f.read(1 << 24):
                    pass
    return time.perf_counter() - t0


# ---- engines (inside the worker process) ----------------------------------------------------------------

class LlamaCxEngine:
    def __init__(self, meta_dir: str, n_threads: int, n_ctx: int):
        llama_cx = M.import_llama_cx()
        from llama_cx._kernels import argmax

        self._argmax = argmax
        self.model = llama_cx.load(meta_dir, n_threads=n_threads)
        self.ctx = self.model.new_context(n_ctx=n_ctx)
        self.weight_bytes_per_token = self.model.weight_bytes_per_token
        info = getattr(llama_cx, "cpu_info", None)
        self.info = info() if callable(info) else None

    def reset(self):
        self.ctx.reset()

    def forward(self, ids) -> int:
        return int(self._argmax(self.ctx.forward(ids)))


def _make_engine(job):
    engine, t = job["engine"], job["threads"]
    if engine == "llama_cx":
        return LlamaCxEngine(job["meta_dir"], t, N_CTX)
    if engine.startswith("torch-"):
        import torch

        from .peers_torch import TorchLlama

        torch.set_num_threads(t)
        e = TorchLlama(job["meta_dir"], dtype=engine.split("-")[1], n_ctx=N_CTX,
                       rope_scale_factor=job["rope_scale_factor"])
        e.info = {"torch": torch.__version__, "mkldnn_bf16": torch.backends.mkldnn.is_available()}
        return e
    if engine == "llama.cpp":
        from .peers_llamacpp import LlamaCpp

        e = LlamaCpp(job["gguf"], t, N_CTX)
        e.weight_bytes_per_token = job["model_weight_bytes_per_token"]
        e.info = {"system_info": e.system_info}
        return e
    raise ValueError(engine)


def _measure(job) -> dict:
    res = {"notes": []}
    vocab, reps = job["vocab"], job["reps"]
    t0 = time.perf_counter()
    eng = _make_engine(job)
    res["load_s"] = time.perf_counter() - t0
    res["rss_after_load"] = _rss_now()
    res["weight_bytes_per_token"] = eng.weight_bytes_per_token
    res["engine_info"] = getattr(eng, "info", None)
    p16 = prompt_ids(TTFT_PROMPT, vocab)

    t0 = time.perf_counter()
    tok = eng.forward(p16)  # cold: pages of the mmapped weights fault in here
    res["first_call_s"] = time.perf_counter() - t0
    for _ in range(4):
        tok = eng.forward([tok])

    ttft = []
    for _ in range(max(reps, 2)):
        eng.reset()
        t0 = time.perf_counter()
        eng.forward(p16)
        ttft.append(time.perf_counter() - t0)
    res["ttft_s"] = min(ttft)

    res["prefill_tps"] = {}
    for n in job["prompts"]:
        ids, best = prompt_ids(n, vocab, salt=n), None
        for _ in range(reps):
            eng.reset()
            t0 = time.perf_counter()
            eng.forward(ids)
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        res["prefill_tps"][str(n)] = n / best

    eng.reset()
    tok = eng.forward(p16)
    ids, steps = [], []
    t_start = time.perf_counter()
    for _ in range(job["n_decode"]):
        ids.append(tok)
        t0 = time.perf_counter()
        tok = eng.forward([tok])
        steps.append(time.perf_counter() - t0)
    total = time.perf_counter() - t_start
    res["decode_tps"] = job["n_decode"] / total
    res["decode_ms_median"] = 1e3 * statistics.median(steps)
    res["greedy_ids"] = ids
    res["peak_rss"] = _proc_status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return res


def _proc_status(field: str) -> int:
    """Bytes of a /proc/self/status field. VmHWM (peak RSS) belongs to this process's own address space;
    ru_maxrss would not do: Linux carries the parent's high-water mark across fork + exec."""
    try:
        with open("/proc/self/status") as f:
            for ln in f:
                if ln.startswith(field + ":"):
                    return int(ln.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _rss_now() -> int:
    return _proc_status("VmRSS")


def _worker(job_path: str) -> int:
    with open(job_path) as f:
        job = json.load(f)
    try:
        if job["engine"] == "llama.cpp" and job.get("via") == "llama-bench":
            from .peers_llamacpp import run_llama_bench

            r = run_llama_bench(job["gguf"], job["threads"], job["prompts"], job["n_decode"], max(job["reps"], 1))
            res = {"prefill_tps": r["prefill_tps"], "decode_tps": r["decode_tps"],
                   "weight_bytes_per_token": job["model_weight_bytes_per_token"],
                   "notes": [f"measured by {r['source']}: no load/TTFT/RSS"]}
        else:
            res = _measure(job)
    except ImportError as e:
        res = {"absent": f"{type(e).__name__}: {e}"}
    except Exception as e:  # the parent prints it as the engine's result; a traceback goes to stderr
        import traceback

        traceback.print_exc()
        msg = str(e).strip().splitlines()
        res = {"failed": f"{type(e).__name__}: {msg[0] if msg else ''}"}
    with open(job["result_path"], "w") as f:
        json.dump(res, f)
    return 0


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
                r = subprocess.run([sys.executable, "-m", "benchmarks.run", "--worker", jp], cwd=REPO, env=env,
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
    exe, _ = _compile_stream(log)
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


# ---- orchestration ------------------------------------------------------------------------------------

def engine_absent(engine: str, prepared, spec, quick: bool) -> "str | None":
    """Why `engine` cannot run on this model here, or None. Cheap checks only; the worker finds the rest."""
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


def greedy_agreement(rows: list) -> None:
    """Per (model, threads): how many leading greedy ids each engine shares with a reference engine."""
    order = ("torch-fp32", "torch-bf16", "llama_cx", "llama.cpp")
    groups = {}
    for r in rows:
        if r.get("greedy_ids"):
            groups.setdefault((r["model"], r["threads"]), {})[r["engine"]] = r
    for g in groups.values():
        ref_name = next(e for e in order if e in g)
        ref = g[ref_name]["greedy_ids"]
        for r in g.values():
            n = 0
            for a, b in zip(r["greedy_ids"], ref):
                if a != b:
                    break
                n += 1
            r["agree"] = f"{n}/{len(ref)}" if r["engine"] != ref_name else "ref"
            r["agree_ref"] = ref_name


def derive(row: dict, bandwidth: dict) -> None:
    """Effective GB/s, fraction of the measured read bandwidth, decode roofline."""
    wb, tps = row.get("weight_bytes_per_token"), row.get("decode_tps")
    bw = row.get("bw_gbs") or bandwidth.get("gbs", {}).get(str(row["threads"]))
    if bw and "absent" not in row and "failed" not in row:
        row["bw_gbs"] = bw
    if wb and tps:
        row["effective_gbs"] = wb * tps / 1e9
        if bw:
            row["bw_fraction"] = row["effective_gbs"] / bw
    if wb and bw:
        row["roofline_tps"] = bw * 1e9 / wb


COLUMNS = [
    ("engine", "engine", "{}"), ("model", "model", "{}"), ("thr", "threads", "{}"),
    ("load s", "load_s", "{:.2f}"), ("TTFT ms", "ttft_s", "{:.0f}", 1e3),
    ("prefill128 tok/s", "prefill_tps.128", "{:.1f}"), ("prefill512 tok/s", "prefill_tps.512", "{:.1f}"),
    ("decode tok/s", "decode_tps", "{:.2f}"), ("eff GB/s", "effective_gbs", "{:.1f}"),
    ("BW GB/s", "bw_gbs", "{:.1f}"), ("% of BW", "bw_fraction", "{:.0f}%", 100),
    ("roofline tok/s", "roofline_tps", "{:.1f}"),
    ("peak RSS GB", "peak_rss", "{:.2f}", 1e-9), ("greedy agree", "agree", "{}"),
    ("other load", "other_cpu_cores", "{:.2f}"),
]


def _cell(row, key, fmt, scale=None):
    v = row
    for part in key.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    if v is None:
        return "-"
    if scale is not None:
        v = v * scale
    return fmt.format(v)


def table_rows(rows):
    header = [c[0] for c in COLUMNS]
    body = []
    for r in rows:
        if "absent" in r or "failed" in r:
            why = ("absent: " + r["absent"]) if "absent" in r else ("failed: " + r["failed"])
            body.append([r["engine"], r["model"], str(r["threads"]), why])
        else:
            body.append([_cell(r, c[1], c[2], c[3] if len(c) > 3 else None) for c in COLUMNS])
    return header, body


def format_text_table(rows) -> str:
    header, body = table_rows(rows)
    full = [b for b in body if len(b) == len(header)]
    widths = [max(len(x) for x in col) for col in zip(header, *full)] if full else [len(h) for h in header]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    for b in body:
        if len(b) == len(header):
            lines.append("  ".join(x.rjust(w) for x, w in zip(b, widths)))
        else:
            lines.append("  ".join(x.rjust(w) for x, w in zip(b[:3], widths)) + "  " + b[3])
    return "\n".join(lines)


def format_markdown(report: dict) -> str:
    rows = report["results"]
    header, body = table_rows(rows)
    m = report["machine"]
    out = [f"# llama_cx benchmarks ({report['mode']} mode)", "",
           f"- date: {report['date']}", f"- command: `{report['command']}`",
           f"- CPU: {m.get('cpu', '?')}, {m['cores']} cores usable, ISA: {', '.join(m.get('isa', []))}, "
           f"RAM {m.get('mem_total_gb', '?')} GB",
           f"- versions: python {m['python']}, torch {m.get('torch_version', 'absent')}, "
           f"llama-cpp-python {m.get('llama_cpp_version', 'absent')}, llama_cx engine digest {m.get('llama_cx_source')}"]
    bw = report["bandwidth"]
    if bw.get("gbs"):
        out.append("- read bandwidth (" + bw["probe"] + "): "
                   + ", ".join(f"{t} thr {g:.1f} GB/s" for t, g in bw["gbs"].items()))
    else:
        out.append(f"- read bandwidth: absent ({bw.get('absent')})")
    s = report["settings"]
    out += [f"- per run: TTFT on a {TTFT_PROMPT}-token prompt, prefill {s['prompts']} tokens (best of "
            f"{s['reps']}), decode {s['n_decode']} greedy tokens after a {TTFT_PROMPT}-token prompt; "
            "weights read from the page cache; 'other load' = cores other processes kept busy meanwhile", ""]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "---|" * len(header))
    for b in body:
        if len(b) == len(header):
            out.append("| " + " | ".join(b) + " |")
        else:
            out.append("| " + " | ".join(b[:3]) + " | " + b[3] + " |" + " |" * (len(header) - 4))
    ratios = ratio_lines(rows)
    if ratios:
        out += ["", "llama_cx / peer (higher is better for llama_cx):", ""] + ratios
    if report.get("tokenizer"):
        out += ["", "Tokenizer (encode, one thread): " + tokenizer_line(report["tokenizer"])]
    if report.get("notes"):
        out += ["", "Notes:", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(out) + "\n"


def ratio_lines(rows) -> list:
    ours = {(r["model"], r["threads"]): r for r in rows if r["engine"] == "llama_cx" and "decode_tps" in r}
    lines = []
    for r in rows:
        base = ours.get((r["model"], r["threads"]))
        if r["engine"] == "llama_cx" or base is None or "decode_tps" not in r:
            continue
        parts = [f"decode {base['decode_tps'] / r['decode_tps']:.2f}x"]
        for n, v in r.get("prefill_tps", {}).items():
            if n in base.get("prefill_tps", {}):
                parts.append(f"prefill{n} {base['prefill_tps'][n] / v:.2f}x")
        if r.get("ttft_s") and base.get("ttft_s"):
            parts.append(f"TTFT {r['ttft_s'] / base['ttft_s']:.2f}x")
        lines.append(f"- {r['model']}, {r['threads']} thr, vs {r['engine']}: " + ", ".join(parts))
    return lines


def tokenizer_line(t: dict) -> str:
    if "ours_mb_s" not in t:
        return "; ".join(f"{k}: {v}" for k, v in t.items())
    line = (f"llama_cx {t['ours_mb_s']} MB/s vs tiktoken {t['tiktoken_mb_s']} MB/s = {t['ratio']}x on "
            f"{t['text_mb']} MB of prose + code (Llama 3 tokenizer, core {t.get('core')}, same ids: {t.get('same_ids')})")
    if "gguf_mb_s" in t:
        line += f"; SmolLM2 GGUF tokenizer {t['gguf_mb_s']} MB/s"
    return line


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
    ap.add_argument("--no-tokenizer", action="store_true", help="skip the tokenizer benchmark")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return _worker(args.worker)

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
    os.makedirs(args.out, exist_ok=True)
    t_begin = time.perf_counter()
    report = {"mode": "quick" if quick else "full", "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine_info(), "settings": dict(st, threads=threads, models=keys, engines=engines),
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
        for eng in engines:
            why = engine_absent(eng, prepared, spec, quick)
            for t in threads:
                row = {"engine": eng, "model": key, "threads": t}
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
                report["results"].append(row)
                _, body = table_rows([row])
                log(f"  {eng:>10} {t} thr: " + (body[0][3] if len(body[0]) == 4 else
                    f"load {_cell(row, 'load_s', '{:.2f}')} s, TTFT {_cell(row, 'ttft_s', '{:.0f}', 1e3)} ms, "
                    f"prefill {', '.join(f'{n}: {v:.1f}' for n, v in row['prefill_tps'].items())} tok/s, "
                    f"decode {row['decode_tps']:.2f} tok/s ({row['wall_s']:.0f} s, other load "
                    f"{_cell(row, 'other_cpu_cores', '{:.2f}')} cores)"))

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
