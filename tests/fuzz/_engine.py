"""The fuzzing engine: mutations of seed files as hypothesis strategies, the outcome check, the run loop.

An input is a seed plus a short list of mutation operations (hypothesis draws and shrinks the list, so a
finding is reported as the fewest, smallest edits of a real file that still fail):
    ("flip", pos, bit)            flip one bit
    ("byte", pos, value)          set one byte
    ("int", pos, width, value)    write a little-endian integer of 2, 4 or 8 bytes
    ("hot", k, value)             write a boundary value into integer field k of the seed (a count, length,
                                  offset, dim, ...: the seed's `hotspots`), at that field's width
    ("truncate", pos)             cut the input at pos
    ("delete", pos, n) / ("insert", pos, raw) / ("dup", pos, n)
    ("splice", pos, j, src, n)    overwrite with n bytes of seed j from offset src
Positions are taken modulo the current length, so every drawn program applies to every seed.

Two drivers share that language: hypothesis (`mutations`, plus each target's structured strategies;
deterministic with derandomize, shrinks findings) for the test suite, and for long runs a plain seeded
PRNG (`random_ops`, ~100x less overhead per input) alternating with hypothesis batches, its findings
reduced by `minimize`.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import random
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from llama_cx.errors import LlamaCxError

# Integer values that break size arithmetic: zero, one, the signed/unsigned edges of 16/32/64 bits.
BOUNDARY = (0, 1, 2, 3, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x10000, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
            2**32 + 1, 2**48, 2**62, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1)
DEFAULT_TIMEOUT = 10.0  # seconds; generous because CI machines are small and shared


@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes
    hotspots: Tuple[Tuple[int, int], ...] = ()  # (byte offset, width in bytes) of integer fields
    weight: int = 1  # how often it is picked relative to the other seeds


@dataclass(frozen=True)
class Input:
    data: bytes
    how: str  # the seed and the edits, for the report

    def __repr__(self) -> str:
        return f"Input({self.how}; {len(self.data)} bytes)"


class Hang(Exception):
    """One execution took longer than the target's TIMEOUT."""


class BadMessage(Exception):
    """A LlamaCxError whose message is empty or spans several lines."""


# ---- mutations ---------------------------------------------------------------------------------------------
def _mask(value: int, width: int) -> int:
    return value & ((1 << (8 * width)) - 1)


def apply(seeds: Sequence[Seed], index: int, ops) -> bytes:
    seed = seeds[index]
    data = bytearray(seed.data)
    for op in ops:
        kind = op[0]
        n = len(data)
        if kind == "flip":
            if n:
                data[op[1] % n] ^= 1 << op[2]
        elif kind == "byte":
            if n:
                data[op[1] % n] = op[2]
        elif kind == "int":
            _, pos, width, value = op
            if n >= width:
                pos %= n - width + 1
                data[pos : pos + width] = _mask(value, width).to_bytes(width, "little")
        elif kind == "hot":
            _, k, value = op
            if seed.hotspots:
                pos, width = seed.hotspots[k % len(seed.hotspots)]
                if pos + width <= n:
                    if isinstance(value, tuple):  # ("orig", delta) / ("size", delta)
                        base = int.from_bytes(data[pos : pos + width], "little") if value[0] == "orig" else n
                        value = base + value[1]
                    data[pos : pos + width] = _mask(value, width).to_bytes(width, "little")
        elif kind == "truncate":
            del data[op[1] % (n + 1) :]
        elif kind == "delete":
            pos = op[1] % (n + 1)
            del data[pos : pos + op[2]]
        elif kind == "insert":
            pos = op[1] % (n + 1)
            data[pos:pos] = op[2]
        elif kind == "dup":
            pos = op[1] % (n + 1)
            data[pos:pos] = data[pos : pos + op[2]]
        elif kind == "splice":
            _, pos, j, src, length = op
            other = seeds[j % len(seeds)].data
            if other:
                src %= len(other)
                chunk = other[src : src + length]
                pos %= n + 1
                data[pos : pos + len(chunk)] = chunk
        else:
            raise ValueError(f"unknown mutation {op!r}")
    return bytes(data)


_POS = st.integers(0, 2**32 - 1)
_VALUE = st.one_of(
    st.sampled_from(BOUNDARY),
    st.tuples(st.sampled_from(("orig", "size")), st.integers(-4, 4)),
)


def mutation_ops(n_seeds: int, with_hotspots: bool):
    ops = [
        st.tuples(st.just("flip"), _POS, st.integers(0, 7)),
        st.tuples(st.just("byte"), _POS, st.integers(0, 255)),
        st.tuples(st.just("int"), _POS, st.sampled_from((2, 4, 8)), st.sampled_from(BOUNDARY)),
        st.tuples(st.just("truncate"), _POS),
        st.tuples(st.just("delete"), _POS, st.integers(1, 64)),
        st.tuples(st.just("insert"), _POS, st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("dup"), _POS, st.integers(1, 256)),
        st.tuples(st.just("splice"), _POS, st.integers(0, n_seeds - 1), _POS, st.integers(1, 512)),
    ]
    if with_hotspots:  # the most productive edit for binary formats: listed twice to be drawn more often
        hot = st.tuples(st.just("hot"), st.integers(0, 2**16), _VALUE)
        ops = [hot, hot] + ops
    return st.one_of(ops)


def mutations(seeds: Sequence[Seed], max_ops: int = 6):
    """Strategy of Input: a seed (by weight) with 0..max_ops mutations."""
    picks = [i for i, s in enumerate(seeds) for _ in range(s.weight)]
    ops = mutation_ops(len(seeds), any(s.hotspots for s in seeds))

    @st.composite
    def draw_input(draw):
        i = draw(st.sampled_from(picks))
        edits = draw(st.lists(ops, min_size=1, max_size=max_ops))
        return Input(apply(seeds, i, edits), f"seed {seeds[i].name!r} with {edits!r}")

    return draw_input()


def random_ops(rng: random.Random, seeds: Sequence[Seed], max_ops: int = 6) -> list:
    """The same mutation language drawn with a plain PRNG: ~100x cheaper per input than a hypothesis draw,
    for long runs (scripts/fuzz.py); findings are then minimized by `minimize`."""
    hot = any(s.hotspots for s in seeds)
    kinds = (["hot", "hot"] if hot else []) + ["flip", "byte", "int", "truncate", "delete", "insert", "dup", "splice"]
    pos = lambda: rng.getrandbits(32)  # noqa: E731
    ops = []
    for _ in range(rng.randint(1, max_ops)):
        k = rng.choice(kinds)
        if k == "hot":
            v = rng.choice(BOUNDARY) if rng.random() < 0.6 else (rng.choice(("orig", "size")), rng.randint(-4, 4))
            ops.append(("hot", rng.getrandbits(16), v))
        elif k == "flip":
            ops.append(("flip", pos(), rng.randrange(8)))
        elif k == "byte":
            ops.append(("byte", pos(), rng.randrange(256)))
        elif k == "int":
            ops.append(("int", pos(), rng.choice((2, 4, 8)), rng.choice(BOUNDARY)))
        elif k == "truncate":
            ops.append(("truncate", pos()))
        elif k == "delete":
            ops.append(("delete", pos(), rng.randint(1, 64)))
        elif k == "insert":
            ops.append(("insert", pos(), rng.randbytes(rng.randint(1, 16))))
        elif k == "dup":
            ops.append(("dup", pos(), rng.randint(1, 256)))
        else:
            ops.append(("splice", pos(), rng.randrange(len(seeds)), pos(), rng.randint(1, 512)))
    return ops


# ---- running one input ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def deadline(seconds: float):
    """Raise Hang in the main thread when the block runs longer than `seconds` (no-op in other threads)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise Hang(f"execution exceeded {seconds:g} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class Finding:
    kind: str  # exception type name
    message: str
    where: str  # innermost llama_cx frame, "file:line in function"
    input: Input

    @property
    def key(self) -> Tuple[str, str]:
        return self.kind, self.where

    def __str__(self) -> str:
        return f"{self.kind} at {self.where}: {self.message[:300]}\n    minimal input: {self.input!r}"


@dataclass
class Stats:
    target: str
    executions: int = 0
    accepted: int = 0
    refused: int = 0
    seconds: float = 0.0
    findings: List[Finding] = field(default_factory=list)
    last: Optional[Input] = None  # the input being (or last) executed
    current_file: Optional[str] = None  # if set, every input is written here first (crash forensics)

    def add_finding(self, exc: BaseException, inp: Input):
        f = Finding(type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "", _place(exc), inp)
        if all(g.key != f.key for g in self.findings):
            self.findings.append(f)
        return f


def _is_one_line(msg: str) -> bool:
    return bool(msg.strip()) and "\n" not in msg and "\r" not in msg


def execute_checked(target, inp: Input, stats: Stats):
    """Run one input; return normally on success or a clean refusal, raise on anything else."""
    stats.executions += 1
    stats.last = inp
    if stats.current_file:
        with open(stats.current_file, "wb") as f:
            f.write(inp.data)
    try:
        with deadline(getattr(target, "TIMEOUT", DEFAULT_TIMEOUT)):
            target.execute(inp.data)
    except LlamaCxError as e:
        if not _is_one_line(str(e)):
            raise BadMessage(f"{type(e).__name__} message is not one line: {str(e)[:500]!r}") from e
        stats.refused += 1
    else:
        stats.accepted += 1


def _place(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f"{os.sep}llama_cx{os.sep}" in f.filename]
    frames = frames or traceback.extract_tb(exc.__traceback__)
    return f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"


def minimize(target, seeds: Sequence[Seed], index: int, ops: list, stats: Stats) -> Tuple[list, BaseException]:
    """Greedy reduction of a failing mutation list: drop edits, then shrink sizes, while the same exception
    type is raised at the same place. Returns (ops, exception of the last failing run)."""

    def fails(candidate):
        inp = Input(apply(seeds, index, candidate), f"seed {seeds[index].name!r} with {candidate!r}")
        try:
            execute_checked(target, inp, stats)
        except Exception as e:  # noqa: BLE001
            return e
        return None

    first = fails(ops)
    if first is None:
        return ops, None  # not reproducible (depends on earlier state)
    key = (type(first), _place(first))
    last = first
    changed = True
    while changed:
        changed = False
        for i in range(len(ops)):
            cand = ops[:i] + ops[i + 1 :]
            e = fails(cand)
            if e is not None and (type(e), _place(e)) == key:
                ops, last, changed = cand, e, True
                break
    # smaller lengths for the edits that take one
    for i, op in enumerate(ops):
        if op[0] in ("delete", "dup", "splice") and op[-1] > 1:
            for smaller in (1, 4, 16, 64):
                if smaller >= op[-1]:
                    break
                cand = ops[:i] + [op[:-1] + (smaller,)] + ops[i + 1 :]
                e = fails(cand)
                if e is not None and (type(e), _place(e)) == key:
                    ops, last = cand, e
                    break
    return ops, last


def fast_batch(target, seeds: Sequence[Seed], stats: Stats, rng: random.Random, seconds: float):
    """Random mutations of the seeds for `seconds`; each finding is minimized and recorded."""
    if not seeds:
        return
    picks = [i for i, s in enumerate(seeds) for _ in range(s.weight)]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        i = rng.choice(picks)
        ops = random_ops(rng, seeds)
        inp = Input(apply(seeds, i, ops), f"seed {seeds[i].name!r} with {ops!r}")
        try:
            execute_checked(target, inp, stats)
        except Exception as e:  # noqa: BLE001
            if any(f.key == (type(e).__name__, _place(e)) for f in stats.findings):
                continue  # known already
            ops, last = minimize(target, seeds, i, ops, stats)
            exc = last if last is not None else e
            stats.add_finding(exc, Input(apply(seeds, i, ops), f"seed {seeds[i].name!r} with {ops!r}"))


def load_target(name: str):
    return importlib.import_module(f"{__package__}.{name}")


def run(name: str, *, seconds: Optional[float] = None, max_examples: int = 200, seed: int = 0,
        derandomize: bool = False, current_file: Optional[str] = None,
        progress: Optional[Callable[[Stats], None]] = None) -> Stats:
    """Fuzz target `name`: each seed as is, then generated inputs, either `max_examples` of them (one
    hypothesis run; derandomize=True makes it the same every time) or batches until `seconds` have passed.
    Findings are collected (deduplicated by exception type and place), not raised."""
    target = load_target(name)
    stats = Stats(name, current_file=current_file)
    t0 = time.monotonic()
    seeds = target.seeds()
    strategy = target.inputs(seeds) if hasattr(target, "inputs") else mutations(seeds)

    for s in seeds:
        inp = Input(s.data, f"seed {s.name!r} unmodified")
        try:
            execute_checked(target, inp, stats)
        except Exception as e:  # noqa: BLE001 - every non-LlamaCxError is what we look for
            stats.add_finding(e, inp)

    def batch(n: int, batch_seed: Optional[int]):
        @settings(max_examples=n, derandomize=derandomize, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck), phases=(Phase.generate, Phase.shrink),
                  report_multiple_bugs=False, print_blob=False, verbosity=Verbosity.quiet)
        @given(strategy)
        def prop(inp):
            execute_checked(target, inp, stats)

        if batch_seed is not None:
            prop = hypothesis_seed(batch_seed)(prop)
        try:
            prop()
        except Exception as e:  # noqa: BLE001 - hypothesis re-raises the minimal example's error last
            stats.add_finding(e, stats.last)

    if seconds is None:
        batch(max_examples, None if derandomize else seed)
    else:
        # alternate: a hypothesis batch (structured inputs, shrinking), then three times as long of cheap
        # random mutations (most of the executions)
        rng = random.Random(seed)
        k = 0
        while time.monotonic() - t0 < seconds:
            b0 = time.monotonic()
            batch(max_examples, seed * 1_000_003 + k)
            k += 1
            left = seconds - (time.monotonic() - t0)
            fast_batch(target, seeds, stats, rng, min(max(time.monotonic() - b0, 1.0) * 3, max(left, 0)))
            stats.seconds = time.monotonic() - t0
            if progress:
                progress(stats)
    stats.seconds = time.monotonic() - t0
    return stats
