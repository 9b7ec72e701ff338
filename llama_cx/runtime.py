"""What the compiled core runs on: instruction set, OpenMP, thread count; chosen once at import.

Environment:
  LLAMA_CX_ISA       force a kernel path: generic, avx2 or avx512 (an unsupported one is an error)
  LLAMA_CX_BF16_PREFILL=1  prompt blocks with bf16 activations + AVX512-BF16 dot products (faster,
                     less exact; off by default; also set_bf16_prefill() and the CLI's --bf16-prefill)
  LLAMA_CX_BF16_DECODE=1   the same for one-token steps (set_bf16_decode(), --bf16-decode)
  OMP_NUM_THREADS    kernel threads (default: the CPUs this process may use, capped by a cgroup quota; one-token
                     steps then adapt the count to the CPUs other processes leave free, see _threads.py)
  LLAMA_CX_ADAPTIVE_THREADS=0  keep the default count fixed
A bad LLAMA_CX_* setting does not fail the import: check_environment() (called by load()) raises it.
"""
from __future__ import annotations

import os
import platform

from . import _kernels, _threads
from ._threads import MAX_THREADS_PER_CPU, available_cpus, max_threads  # noqa: F401  (re-exported for the CLI)
from .errors import InvalidArgumentError, LlamaCxError


def default_threads() -> int:
    """A valid OMP_NUM_THREADS (checked and capped by _threads before libgomp loaded), else every CPU available."""
    return _threads.ENV.user_threads or available_cpus()


_fixed_threads = _threads.ENV.user_threads is not None  # the user chose the count: no decode thread tuner


def set_num_threads(n: int) -> int:
    """Threads used by the kernels from now on (this fixes the count: decode no longer adapts it to the CPUs
    other processes leave free). More than 4x the CPUs available is capped (they only add waits at the
    barriers, and tens of thousands crash the OpenMP runtime); returns the count in use."""
    global _fixed_threads
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InvalidArgumentError(f"thread count must be a positive integer, got {n!r}")
    n = min(n, max_threads())
    _kernels.set_num_threads(n)
    _fixed_threads = True
    return n


def adaptive_threads() -> bool:
    """True when one-token steps pick their thread count by timing (the default count, and
    LLAMA_CX_ADAPTIVE_THREADS is not 0); see llama_cx/_threads.py."""
    return not _fixed_threads and os.environ.get("LLAMA_CX_ADAPTIVE_THREADS", "").strip() != "0"


def get_num_threads() -> int:
    return _kernels.get_num_threads()


def _switch(setter, on: bool, what: str = "") -> None:
    """Turn a compiled-core switch on or off; a CPU that cannot do it is a one-line LlamaCxError."""
    try:
        setter(bool(on))
    except ValueError as e:
        raise LlamaCxError(f"{what}{e}") from None


def set_bf16_prefill(on: bool) -> None:
    """Prompt blocks (more than one token per forward call) with activations rounded to bf16 and AVX512-BF16
    dot products: 1.5-1.8x faster prefill, logits within ~5e-2 x their std of the exact ones instead of
    ~1e-5. Off by default; one-token steps have their own switch, set_bf16_decode."""
    _switch(_kernels.set_bf16_prefill, on)


def get_bf16_prefill() -> bool:
    return _kernels.bf16_prefill() > 0


def set_bf16_decode(on: bool) -> None:
    """One-token steps (decode, and their logits) with activations rounded to bf16 and AVX512-BF16 dot
    products, as llama.cpp's BF16 path computes. Since the f32 decode kernels stream the weights at the
    read bandwidth it is no faster (0.88-1.08x, benchmarks/RESULTS.md); logits as inexact as
    with set_bf16_prefill. Off by default."""
    _switch(_kernels.set_bf16_decode, on)


def get_bf16_decode() -> bool:
    return _kernels.bf16_decode() > 0


def set_q8_prefill(on: bool) -> None:
    """Prompt blocks over GGUF block-quantized weights with their activations quantized to 8-bit blocks and
    integer dots, as one-token steps (and llama.cpp, for prompts too) compute them, instead of the exact f32
    panels: faster where the integer kernels beat the f32 tile (the K-quants: see benchmarks/RESULTS.md), and
    prompt logits as inexact as one-token steps' (~0.06 x std on SmolLM2 instead of 3e-6). Off by default."""
    _kernels.set_q8_prefill(bool(on))


def get_q8_prefill() -> bool:
    return _kernels.q8_prefill()


_env_errors = []  # bad LLAMA_CX_* settings: raised by check_environment() (load() calls it), not at import


def check_environment() -> None:
    """Raise the first bad LLAMA_CX_* setting found at import as a one-line LlamaCxError. Import itself does
    not fail on them, so that `llama-cx --version` works and the CLI can say it in one line."""
    if _env_errors:
        raise LlamaCxError(_env_errors[0])


def _init():
    isa = os.environ.get("LLAMA_CX_ISA", "").strip().lower()
    if isa:
        try:
            _kernels.set_isa(isa)
        except ValueError as e:
            _env_errors.append(f"LLAMA_CX_ISA={isa}: {e}")
    for var, setter in (("LLAMA_CX_BF16_PREFILL", _kernels.set_bf16_prefill),
                        ("LLAMA_CX_BF16_DECODE", _kernels.set_bf16_decode),
                        ("LLAMA_CX_Q8_PREFILL", _kernels.set_q8_prefill)):
        if os.environ.get(var, "").strip() not in ("", "0"):
            try:
                _switch(setter, True, f"{var}=1: ")
            except LlamaCxError as e:
                _env_errors.append(str(e))
    _kernels.set_num_threads(default_threads())


def cpu_info() -> dict:
    """The kernel path in use and why: ISA chosen, ISAs this CPU/OS supports, OpenMP, threads."""
    return {
        "isa": _kernels.get_isa(),
        "isa_best": _kernels.best_isa(),
        "isa_supported": [n for n in _kernels.ISA_NAMES if _kernels.isa_supported(n)],
        "isa_forced": os.environ.get("LLAMA_CX_ISA") or None,
        "avx512bf16": _kernels.avx512bf16_supported(),
        "bf16_prefill": _kernels.bf16_prefill(),
        "bf16_decode": _kernels.bf16_decode(),
        "openmp": _kernels.openmp_enabled(),
        "threads": _kernels.get_num_threads(),
        "adaptive_threads": adaptive_threads(),
        "gomp_spincount": _threads.ENV.spin_count or os.environ.get("GOMP_SPINCOUNT"),
        "environment_error": _env_errors[0] if _env_errors else None,
        "available_cpus": available_cpus(),
        "machine": platform.machine(),
    }


_init()
