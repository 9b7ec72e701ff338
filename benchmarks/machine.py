"""Facts about the machine a benchmark runs on: CPU and memory, the read-bandwidth probe (stream.c),
how busy other processes keep it, and a state digest of the llama_cx checkout being measured."""
from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import time

from . import models as M

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def all_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


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
    files = sorted(glob.glob(os.path.join(REPO, "csrc", "**", "*.[ch]"), recursive=True)) + sorted(
        glob.glob(os.path.join(REPO, "llama_cx", "_kernels*.so")))
    files += [os.path.join(REPO, "llama_cx", n) for n in ("_kernels.pyx", "model.py", "runtime.py", "dtypes.py")]
    files += sorted(glob.glob(os.path.join(REPO, "llama_cx", "formats", "*.py")))
    h, n = hashlib.sha256(), 0
    for path in files:
        if os.path.isfile(path):
            with open(path, "rb") as f:
                h.update(os.path.relpath(path, REPO).encode() + b"\0" + f.read())
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


def compile_stream(log):
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
    exe, note = compile_stream(log)
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

