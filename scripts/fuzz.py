#!/usr/bin/env python
"""Fuzz llama_cx's parsers for a time budget and print executions and findings per target.

    python scripts/fuzz.py                        # every target, 60 s each
    python scripts/fuzz.py --target gguf --seconds 600
    python scripts/fuzz.py --seconds 30 --jobs 2 --findings /tmp/findings
    python scripts/fuzz.py --check bounds         # time and peak memory of each hostile-file class, per size
    python scripts/fuzz.py --check text --check threads --seconds 120

Each target runs in its own process (so a segfault or an endless C loop is caught and reported, with the
input that caused it saved), with an address-space limit (--memory-gb) so that a huge allocation shows up
as a MemoryError instead of the OOM killer. Targets and harnesses: tests/fuzz/. A finding is any outcome
other than success or a one-line LlamaCxError; each is shrunk by hypothesis to a minimal input and saved
under --findings as <target>-<n>.bin with a .txt description. Exit status 1 when anything was found.

--check runs what byte mutation cannot reach (tests/fuzz/_checks.py): `bounds` (each hostile-file class of
tests/fuzz/_hostile.py at growing sizes, a fresh process per run: CPU seconds and peak RSS, with a finding past
20 s, 1 GB, or faster-than-linear growth), `text` (bytes that are not UTF-8 at every text boundary of the CLI,
under UTF-8 and C locales) and `threads` (threads sharing a tokenizer, a model, a context, against serial runs).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")


def _import_engine():
    # tests/ holds the `fuzz` package, _ckpt.py, _gguf_files.py and conftest.py (the real-data fixtures);
    # this script's own directory must not shadow the package name.
    sys.path[:] = [ROOT, TESTS] + [p for p in sys.path[1:] if os.path.abspath(p or ".") != os.path.dirname(__file__)]
    from fuzz import TARGETS, _engine

    return TARGETS, _engine


def child(args) -> int:
    if args.memory_gb > 0:
        limit = int(args.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _, engine = _import_engine()

    def progress(stats):
        print(f"  {stats.target}: {stats.executions} executions in {stats.seconds:.0f} s, "
              f"{len(stats.findings)} finding(s)", file=sys.stderr, flush=True)

    stats = engine.run(args.child, seconds=args.seconds, max_examples=args.batch, seed=args.seed,
                       current_file=args.current, progress=progress if args.verbose else None)
    findings = [dict(kind=f.kind, message=f.message, where=f.where, how=f.input.how, data=f.input.data.hex())
                for f in stats.findings]
    with open(args.report, "w") as f:
        json.dump(dict(target=stats.target, executions=stats.executions, accepted=stats.accepted,
                       refused=stats.refused, seconds=stats.seconds, findings=findings), f)
    return 0


def run_target(name, args, work) -> dict:
    report = os.path.join(work, f"{name}.json")
    current = os.path.join(work, f"{name}.current")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--seconds", str(args.seconds),
           "--seed", str(args.seed), "--batch", str(args.batch), "--memory-gb", str(args.memory_gb),
           "--report", report, "--current", current] + (["--verbose"] if args.verbose else [])
    t0 = time.monotonic()
    # budget + seed generation + shrinking a finding (hypothesis stops shrinking after a few minutes)
    wall = args.seconds + 120 + 600
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    try:
        rc = proc.wait(timeout=wall)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        rc = "hang"
    elapsed = time.monotonic() - t0
    if rc == 0 and os.path.exists(report):
        with open(report) as f:
            return json.load(f)
    # the process died (signal, abort, OOM) or hung: the input it was running is the finding
    data = open(current, "rb").read() if os.path.exists(current) else b""
    what = "hang (killed after %d s)" % wall if rc == "hang" else (
        f"killed by signal {signal.Signals(-rc).name}" if isinstance(rc, int) and rc < 0 else f"exit status {rc}")
    return dict(target=name, executions=-1, accepted=-1, refused=-1, seconds=elapsed,
                findings=[dict(kind="crash", message=what, where="?", how="the input running when it died",
                               data=data.hex())])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="all", help="a target name or 'all'")
    p.add_argument("--seconds", type=float, default=60.0, help="budget per target (default 60)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="targets run in parallel")
    p.add_argument("--batch", type=int, default=200, help="hypothesis examples per batch")
    p.add_argument("--memory-gb", type=float, default=8.0, help="address-space limit per target (0: none)")
    p.add_argument("--findings", default=None, help="directory to save findings in (default: a temp dir)")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--check", action="append", choices=("bounds", "text", "threads"),
                   help="run a check instead of the targets (repeatable); --seconds is the budget of text/threads")
    p.add_argument("--case", action="append", help="bounds: only these cases (default: all)")
    # internal: run one target in this process
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--bound-child", help=argparse.SUPPRESS)
    p.add_argument("--arg", help=argparse.SUPPRESS)
    p.add_argument("--report", help=argparse.SUPPRESS)
    p.add_argument("--current", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    if args.bound_child:
        if args.memory_gb > 0:
            limit = int(args.memory_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        _import_engine()
        from fuzz import _checks

        return _checks.bound_child(args.bound_child, args.arg)
    if args.check:
        _import_engine()
        from fuzz import _checks

        findings = []
        for name in args.check:
            if name == "bounds":
                findings += _checks.check_bounds(args.case, memory_gb=args.memory_gb)
            elif name == "text":
                findings += _checks.check_text(args.seconds, seed=args.seed)
            else:
                findings += _checks.check_threads(args.seconds, seed=args.seed)
        for f in findings:
            print("FINDING:", f)
        print(f"\n{len(findings)} finding(s)" if findings else "\nno findings")
        return 1 if findings else 0

    targets, _ = _import_engine()
    names = list(targets) if args.target == "all" else [args.target]
    for n in names:
        if n not in targets:
            p.error(f"unknown target {n!r}; choose from {', '.join(targets)} or all")
    work = tempfile.mkdtemp(prefix="lcx-fuzz-run-")
    findings_dir = args.findings or os.path.join(work, "findings")
    os.makedirs(findings_dir, exist_ok=True)

    results = {}
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:  # threads only wait on the processes
        futures = {n: pool.submit(run_target, n, args, work) for n in names}
        for n in names:
            results[n] = r = futures[n].result()
            print(f"{n}: {r['executions']} executions, {len(r['findings'])} finding(s) in {r['seconds']:.0f} s",
                  flush=True)

    print(f"\n{'target':<12} {'executions':>10} {'accepted':>9} {'refused':>9} {'exec/s':>8} {'findings':>8}")
    total_exec, total_findings = 0, 0
    for n in names:
        r = results[n]
        rate = r["executions"] / r["seconds"] if r["seconds"] > 0 and r["executions"] > 0 else 0
        print(f"{n:<12} {r['executions']:>10} {r['accepted']:>9} {r['refused']:>9} {rate:>8.0f} {len(r['findings']):>8}")
        total_exec += max(r["executions"], 0)
        for i, f in enumerate(r["findings"]):
            total_findings += 1
            base = os.path.join(findings_dir, f"{n}-{i}")
            with open(base + ".bin", "wb") as out:
                out.write(bytes.fromhex(f["data"]))
            with open(base + ".txt", "w") as out:
                out.write(f"{f['kind']} at {f['where']}: {f['message']}\n{f['how']}\n")
    print(f"{'total':<12} {total_exec:>10}")
    if total_findings:
        print(f"\n{total_findings} finding(s), inputs saved in {findings_dir}:")
        for n in names:
            for i, f in enumerate(results[n]["findings"]):
                print(f"  {n}-{i}: {f['kind']} at {f['where']}: {f['message'][:200]}")
                print(f"      {f['how'][:300]}")
    else:
        print("\nno findings")
        if not args.findings:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if total_findings else 0


if __name__ == "__main__":
    sys.exit(main())
