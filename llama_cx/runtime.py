"""What the compiled core runs on: instruction set, OpenMP, thread count; chosen once at import.

Environment:
  LLAMA_CX_ISA       force a kernel path: generic, avx2 or avx512 (an unsupported one is an error)
  LLAMA_CX_BF16_PREFILL=1  prompt blocks with bf16 activations + AVX512-BF16 dot products (faster,
                     less exact; off by default; also set_bf16_prefill() and the CLI's --bf16-prefill)
  LLAMA_CX_BF16_DECODE=1   the same for one-token steps (set_bf16_decode(), --bf16-decode)
  OMP_NUM_THREADS    kernel threads (default: the CPUs this process may use, capped by a cgroup quota)
"""
from __future__ import annotations

import os
import platform

from . import _kernels
from ._limits import MAX_THREADS
from .errors import InvalidArgumentError, LlamaCxError


def _cgroup_cpu_limit():
    """CPUs allowed by a cgroup v2 (cpu.max) or v1 (cfs quota) limit, or None."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return max(1, int(quota) // int(period))
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        if quota > 0 and period > 0:
            return max(1, quota // period)
    except (OSError, ValueError):
        pass
    return None


def available_cpus() -> int:
    """CPUs this process may run on: affinity mask, capped by the cgroup quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    return max(1, min(n, limit) if limit else n)


def default_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env:
        try:
            n = int(env)
            if 1 <= n <= MAX_THREADS:  # a larger value would overflow C's int at import
                return n
        except ValueError:
            pass
    return available_cpus()


def set_num_threads(n: int) -> None:
    """Threads used by the kernels from now on."""
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_THREADS:
        raise InvalidArgumentError(f"thread count must be an integer from 1 to {MAX_THREADS}, got {n!r}")
    _kernels.set_num_threads(n)


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


def _init():
    isa = os.environ.get("LLAMA_CX_ISA", "").strip().lower()
    if isa:
        try:
            _kernels.set_isa(isa)
        except ValueError as e:
            raise LlamaCxError(f"LLAMA_CX_ISA={isa}: {e}") from None
    for var, setter in (("LLAMA_CX_BF16_PREFILL", _kernels.set_bf16_prefill),
                        ("LLAMA_CX_BF16_DECODE", _kernels.set_bf16_decode)):
        if os.environ.get(var, "").strip() not in ("", "0"):
            _switch(setter, True, f"{var}=1: ")
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
        "available_cpus": available_cpus(),
        "machine": platform.machine(),
    }


_init()
