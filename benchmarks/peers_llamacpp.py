"""llama.cpp peer, on a BF16 GGUF of the same weights (benchmarks/models.py writes it).

Two ways in, tried in this order:
- llama-cpp-python (`import llama_cpp`), driven through its low-level C API so that we time exactly what
  the other engines do: one llama_decode of the whole prompt, then one llama_decode per token with a
  greedy argmax over the last logits. The high-level `Llama` class is avoided on purpose: it insists on a
  real vocabulary (our random models carry llama.cpp's "none" tokenizer) and adds sampling work.
- a `llama-bench` binary on PATH, when the Python binding is absent: it reports prefill and decode
  throughput only (no load time, time to first token or RSS).
"""
from __future__ import annotations

import ctypes
import json
import shutil
import subprocess


def binding_status():
    """(module or None, reason it is absent)."""
    try:
        import llama_cpp
    except Exception as e:  # ImportError, or OSError when the shared library fails to load
        return None, f"llama-cpp-python not importable ({type(e).__name__}: {e})"
    return llama_cpp, None


def llama_bench_path():
    return shutil.which("llama-bench")


class LlamaCpp:
    """Engine interface shared by the benchmark workers: reset(), forward(ids) -> greedy next id."""

    def __init__(self, gguf_path: str, n_threads: int, n_ctx: int = 1024, n_batch: int = 512):
        import numpy as np

        L, why = binding_status()
        if L is None:
            raise RuntimeError(why)
        self._L, self._np = L, np
        self._quiet = L.llama_log_callback(lambda level, text, user: None)  # keep a reference: C holds it
        L.llama_log_set(self._quiet, ctypes.c_void_p())
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 0
        self.model = L.llama_model_load_from_file(gguf_path.encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp refused {gguf_path} (llama_model_load_from_file returned NULL)")
        cp = L.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, n_batch, n_batch
        cp.n_threads = cp.n_threads_batch = n_threads
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context (llama_init_from_model returned NULL)")
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.n_batch = n_batch
        self.system_info = L.llama_print_system_info().decode(errors="replace")

    def reset(self) -> None:
        self._L.llama_memory_clear(self._L.llama_get_memory(self.ctx), True)

    def forward(self, ids) -> int:
        L = self._L
        for lo in range(0, len(ids), self.n_batch):  # prompts longer than n_batch go in n_batch chunks
            chunk = ids[lo:lo + self.n_batch]
            arr = (L.llama_token * len(chunk))(*chunk)
            rc = L.llama_decode(self.ctx, L.llama_batch_get_one(arr, len(chunk)))
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
        logits = L.llama_get_logits_ith(self.ctx, -1)  # (n_vocab,) float32 owned by the context
        return int(self._np.ctypeslib.as_array(logits, shape=(self.n_vocab,)).argmax())

    def close(self) -> None:
        self._L.llama_free(self.ctx)
        self._L.llama_model_free(self.model)


def run_llama_bench(gguf_path: str, n_threads: int, prompts=(128, 512), n_gen: int = 128, reps: int = 2,
                    timeout: float = 3600) -> dict:
    """Prefill and decode tok/s from `llama-bench -o json` (mean over `reps` runs, as llama-bench reports)."""
    exe = llama_bench_path()
    cmd = [exe, "-m", gguf_path, "-t", str(n_threads), "-r", str(reps), "-o", "json",
           "-p", ",".join(map(str, prompts)), "-n", str(n_gen)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"llama-bench failed ({r.returncode}): {tail}")
    out = {"prefill_tps": {}, "decode_tps": None, "source": "llama-bench " + " ".join(cmd[1:])}
    for row in json.loads(r.stdout):
        if row.get("n_gen", 0) == 0:
            out["prefill_tps"][str(row["n_prompt"])] = row["avg_ts"]
        elif row.get("n_prompt", 0) == 0:
            out["decode_tps"] = row["avg_ts"]
    return out
