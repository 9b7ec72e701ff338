"""How many kernel threads to run, and whether they get the CPUs they ask for.

The kernels meet at ~150 OpenMP barriers per decoded token (5 per layer). On a machine where another
process keeps a core busy, a thread waiting at a barrier for a partner that has no CPU used to spin for
libgomp's default 300000 rounds (milliseconds) before sleeping: SmolLM2 decode fell from ~100 tok/s to
1.6-14 tok/s with one competing process on 2 cores. Three things here keep the default robust:

1. prepare_environment(), run before any compiled part loads libgomp (it reads its environment once, when
   it is loaded): unless the user chose a wait policy, waits spin for SPIN_COUNT rounds and then sleep
   (GOMP_SPINCOUNT); an OMP_NUM_THREADS that libgomp would warn about (abc, 0) or one that asks for more
   than MAX_THREADS_PER_CPU x the CPUs is replaced, with a one-line notice. The process environment is
   restored right after the load, so child processes see what the user set.
2. DecodeThreads: when the thread count is the default (not set by the user), one-token steps time
   themselves and the count follows what is faster right now: the current count and its neighbours (half,
   double) are tried in short windows, more rarely while the current one stays best. Prompt blocks run with
   the count decode found.
3. CpuShare: how much of the CPU time our threads asked for they got (from /proc/self/task/*/schedstat:
   time on a CPU vs time runnable but waiting for one); the CLI says when a decode was starved.

Measured on the 2-core development machine: see benchmarks/contention.py and its section in
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import os
import time
from typing import Dict, List, Optional, Tuple

from ._limits import MAX_THREADS

# libgomp spin rounds before a waiting thread sleeps. Its default, 300000, spun ~12 ms here (a Xeon, ~40 ns a
# round), longer than a scheduler time slice. Measured with a 2-thread OpenMP program whose partner thread
# sleeps: 1000 rounds cost ~15-25 us of CPU per wait, 10000 ~280 us; a decode step's barriers are ~50 us apart
# and the threads usually arrive within a few us of each other, so 1000 still catches them spinning. 2-thread
# SmolLM2 decode on the loaded development machine (load average 11-13, one extra competitor), tok/s:
# 300000: 0.6-1.0, 30000: 2.4-2.9, 10000: 4.5, 3000: 5.6-7.2, 1000: 6.5-6.8, OMP_WAIT_POLICY=passive: 16-37
# (benchmarks/RESULTS.md, "Decode with competing processes", has the rest).
SPIN_COUNT = 1000
MAX_THREADS_PER_CPU = 4
STARVED_SHARE = 0.8  # below this CPU share a decode counts as starved


# ---- 1. the OpenMP environment, before libgomp loads ------------------------------------------------------
def _positive_int(s: str) -> Optional[int]:
    s = s.strip()
    return int(s) if s.isdigit() and int(s) > 0 else None


def available_cpus() -> int:
    """CPUs this process may run on: affinity mask, capped by the cgroup quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    return max(1, min(n, limit) if limit else n)


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


def max_threads() -> int:
    """The most kernel threads llama_cx runs: more only add barrier waits (and 100000 crashed libgomp)."""
    return min(MAX_THREADS_PER_CPU * available_cpus(), MAX_THREADS)


def check_omp_num_threads(value: str) -> Tuple[Optional[str], Optional[str]]:
    """(value to use or None to drop it, notice or None) for an OMP_NUM_THREADS setting."""
    first = value.split(",")[0]
    n = _positive_int(first)
    if n is None or any(_positive_int(p) is None for p in value.split(",")):
        return None, f"ignoring OMP_NUM_THREADS={value!r} (not a positive integer); using the default thread count"
    cap = max_threads()
    if n > cap:
        return str(cap), (f"OMP_NUM_THREADS={n} is more than {MAX_THREADS_PER_CPU}x the {available_cpus()} CPUs "
                          f"available; using {cap}")
    return value, None


class _Environment:
    """The OpenMP settings handed to libgomp at load, and what the user had set."""

    def __init__(self):
        self.saved: Dict[str, Optional[str]] = {}
        self.notices: List[str] = []
        self.spin_count: Optional[str] = None   # what we set, None when the user chose
        self.user_threads: Optional[int] = None  # a valid OMP_NUM_THREADS (capped)

    def _set(self, key: str, value: Optional[str]) -> None:
        self.saved.setdefault(key, os.environ.get(key))
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

    def prepare(self) -> None:
        omp = os.environ.get("OMP_NUM_THREADS")
        if omp is not None and omp.strip():
            value, notice = check_omp_num_threads(omp)
            if value != omp:
                self._set("OMP_NUM_THREADS", value)
            if notice:
                self.notices.append(notice)
            if value is not None:
                self.user_threads = int(value.split(",")[0])
        if not os.environ.get("OMP_WAIT_POLICY") and not os.environ.get("GOMP_SPINCOUNT"):
            self.spin_count = str(SPIN_COUNT)
            self._set("GOMP_SPINCOUNT", self.spin_count)

    def restore(self) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.saved.clear()


ENV = _Environment()


def prepare_environment() -> None:
    """Call before the first compiled module is imported (libgomp reads its settings when it loads)."""
    ENV.prepare()


def restore_environment() -> None:
    """Call once the compiled modules are loaded."""
    ENV.restore()


def say_notices(stream=None) -> None:
    """Print the environment notices (once), `llama_cx: ...` lines on stderr."""
    import sys

    stream = stream or sys.stderr
    for n in ENV.notices:
        try:
            stream.write(f"llama_cx: {n}\n")
            stream.flush()
        except (OSError, ValueError):
            pass
    ENV.notices.clear()


# ---- 2. the decode thread count --------------------------------------------------------------------------------
class DecodeThreads:
    """Picks the thread count of one-token steps by timing them (see the module notes).

    before(n_max) -> threads for the next step; after(seconds) records how long it took. Windows of WINDOW_S
    seconds (at least one step, at most WINDOW_STEPS) are compared as steps per second; a neighbour of the
    current count is tried for one window every `interval` seconds (PROBE_MIN_S doubling to PROBE_MAX_S while
    the current count stays best, back to PROBE_MIN_S after a switch or a sudden slowdown)."""

    WINDOW_S = 0.03
    WINDOW_STEPS = 16
    PROBE_MIN_S = 0.25
    PROBE_MAX_S = 4.0
    SWITCH_GAIN = 1.08  # a neighbour must be this much faster to take over (noise)

    def __init__(self, clock=time.perf_counter):
        self._clock = clock
        self.n_max = 0
        self.current = 0  # the count in use
        self.trial = 0    # the count of the window being measured (current, or a neighbour on probation)
        self.rates: Dict[int, float] = {}
        self._next_probe = 0.0
        self._interval = self.PROBE_MIN_S
        self._probe_down = True
        self._steps = 0
        self._seconds = 0.0

    def _reset(self, n_max: int) -> None:
        self.n_max = self.current = self.trial = n_max
        self.rates.clear()
        self._next_probe = 0.0  # probe right after the first window
        self._interval = self.PROBE_MIN_S
        self._steps, self._seconds = 0, 0.0

    def before(self, n_max: int) -> int:
        if n_max != self.n_max:
            self._reset(n_max)
        return self.trial

    def after(self, seconds: float) -> None:
        self._steps += 1
        self._seconds += seconds
        if self._seconds >= self.WINDOW_S or self._steps >= self.WINDOW_STEPS:
            self._end_window(self._steps / max(self._seconds, 1e-9))
            self._steps, self._seconds = 0, 0.0

    def _neighbour(self) -> int:
        down = self.current // 2 if self.current > 1 else 0
        up = min(self.n_max, self.current * 2) if self.current < self.n_max else 0
        if down and up:
            self._probe_down = not self._probe_down
            return down if self._probe_down else up
        return down or up

    def _end_window(self, rate: float) -> None:
        now = self._clock()
        if self.trial == self.current:
            old = self.rates.get(self.current)
            self.rates[self.current] = rate if old is None else 0.5 * (old + rate)
            if old is not None and rate < 0.6 * old:  # something changed (a process started): look around now
                self._next_probe, self._interval = now, self.PROBE_MIN_S
            if now >= self._next_probe:
                self.trial = self._neighbour() or self.current
                if self.trial == self.current:
                    self._next_probe = now + self.PROBE_MAX_S
            return
        self.rates[self.trial] = rate
        if rate > self.SWITCH_GAIN * self.rates.get(self.current, 0.0):
            self.current, self._interval = self.trial, self.PROBE_MIN_S
        else:
            self._interval = min(2 * self._interval, self.PROBE_MAX_S)
        self.trial = self.current
        self._next_probe = now + self._interval


# ---- 3. CPU share ----------------------------------------------------------------------------------------------
def _schedstat() -> Optional[Tuple[int, int]]:
    """(ns on a CPU, ns runnable but waiting for a CPU) summed over this process's threads, or None."""
    on = wait = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for t in tasks:
        try:
            with open(f"/proc/self/task/{t}/schedstat") as f:
                a, b = f.read().split()[:2]
            on += int(a)
            wait += int(b)
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
    return on, wait


class CpuShare:
    """Over an interval: the fraction of the CPU time this process's threads asked for that they got
    (time on a CPU / (time on a CPU + time waiting for one)); None where Linux schedstat is unavailable."""

    def __init__(self):
        self._start = _schedstat()

    def share(self) -> Optional[float]:
        end = _schedstat()
        if self._start is None or end is None:
            return None
        on, wait = end[0] - self._start[0], end[1] - self._start[1]
        return on / (on + wait) if on + wait > 0 else None
