"""One measurement, in its own process: `python -m benchmarks.worker JOB.json` loads one engine on one model
with the thread count the parent pinned (OMP_NUM_THREADS, torch.set_num_threads) and writes its numbers to
the job's result_path.

Every engine offers reset() (empty KV cache) and forward(ids) -> greedy next id, so all are timed by the
same loop below, argmax included.
"""
from __future__ import annotations

import json
import random
import resource
import statistics
import sys
import time

from . import models as M

N_CTX = 1024
TTFT_PROMPT = 16
PREFILL_MAX_RUNS = 5
PREFILL_BUDGET_S = 1.5
PROMPT_SEED = 1234


def prompt_ids(n: int, vocab: int, salt: int = 0) -> list:
    rng = random.Random(PROMPT_SEED * 1000 + salt)
    return [rng.randrange(vocab) for _ in range(n)]


class LlamaCxEngine:
    def __init__(self, meta_dir: str, n_threads: int, n_ctx: int, bf16_prefill: bool = False,
                 bf16_decode: bool = False, huge_pages: bool = False, kv_dtype: str = "f32"):
        llama_cx = M.import_llama_cx()
        from llama_cx._kernels import argmax

        self._argmax = argmax
        llama_cx.set_bf16_prefill(bf16_prefill)
        llama_cx.set_bf16_decode(bf16_decode)
        self.model = llama_cx.load(meta_dir, n_threads=n_threads, huge_pages=huge_pages)
        self.ctx = self.model.new_context(n_ctx=n_ctx, **({"kv_dtype": kv_dtype} if kv_dtype != "f32" else {}))
        self.weight_bytes_per_token = self.model.weight_bytes_per_token
        info = getattr(llama_cx, "cpu_info", None)
        self.info = info() if callable(info) else None

    def reset(self):
        self.ctx.reset()

    def forward(self, ids) -> int:
        return int(self._argmax(self.ctx.forward(ids)))


def import_engine(job) -> None:
    """Import what the engine runs on (timed apart from loading the model: an import is paid once per
    process, and for the peers it is most of their start-up)."""
    engine = job["engine"]
    if engine.startswith("llama_cx"):
        M.import_llama_cx()
    elif engine.startswith("torch-"):
        import torch  # noqa: F401
    elif engine == "llama.cpp":
        import llama_cpp  # noqa: F401


def make_engine(job):
    engine, t = job["engine"], job["threads"]
    if engine in ("llama_cx", "llama_cx-bf16pf", "llama_cx-bf16", "llama_cx-hp"):
        # -bf16pf: prompts with bf16 activations (decode unchanged); -bf16: prompts and decode with bf16
        # activations; -hp: weights read into huge pages
        return LlamaCxEngine(job["meta_dir"], t, N_CTX, bf16_prefill=engine.endswith(("-bf16pf", "-bf16")),
                             bf16_decode=engine.endswith("-bf16"), huge_pages=engine.endswith("-hp"))
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


def measure(job) -> dict:
    res = {"notes": []}
    vocab, reps = job["vocab"], job["reps"]
    t0 = time.perf_counter()
    import_engine(job)
    res["import_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    eng = make_engine(job)
    res["load_s"] = time.perf_counter() - t0  # model files to a ready context, imports already done
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
        # best of `reps` runs, and of up to PREFILL_MAX_RUNS while they take under PREFILL_BUDGET_S together:
        # a short prompt finishes in ~0.1 s, and one burst of the host's other tenants would decide it
        ids, times = prompt_ids(n, vocab, salt=n), []
        while len(times) < reps or (len(times) < PREFILL_MAX_RUNS and sum(times) < PREFILL_BUDGET_S):
            eng.reset()
            t0 = time.perf_counter()
            eng.forward(ids)
            times.append(time.perf_counter() - t0)
        res["prefill_tps"][str(n)] = n / min(times)
        res.setdefault("prefill_runs", {})[str(n)] = len(times)

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


def main(job_path: str) -> int:
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
            res = measure(job)
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
