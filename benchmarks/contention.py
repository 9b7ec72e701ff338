"""`python -m benchmarks.contention`: decode speed of the demo model while other processes use the CPUs.

For 0 and 1 competing CPU-bound processes (`python -c "while True: pass"`, started before and stopped after
each measurement), runs `llama-cx generate MODEL --json` (a fresh process each time, as a user would) with
the default thread count, `--threads 1` and `--threads 2`, in an order that rotates every round, and prints
decode tok/s, time to first token and the CPU share the decode got, then per competitor count the median
of default / max(--threads 1, --threads 2) over the rounds. The target (issue 20): with one competing
process, default >= 0.8x the better fixed count; with none, default no slower than --threads 2.

Other load: the cores that processes other than the benchmark's kept busy during each run (from
/proc/stat minus the run's own and its competitors' CPU time), as in benchmarks/machine.py.

    python -m benchmarks.contention                       # the demo model (fetched once), 3 rounds
    python -m benchmarks.contention --model M.gguf --rounds 5 --tokens 128
    python -m benchmarks.contention --env GOMP_SPINCOUNT=300000   # e.g. libgomp's own default wait
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PROMPT = "Once upon a time, in a small village by the sea,"
CONFIGS = (("default", []), ("--threads 1", ["--threads", "1"]), ("--threads 2", ["--threads", "2"]))


def _busy_seconds() -> float:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    r = os.times()
    return r.children_user + r.children_system


def _find_model(path) -> str:
    if path:
        return path
    if os.environ.get("LLAMA_CX_MODEL"):
        return os.environ["LLAMA_CX_MODEL"]
    from llama_cx.demo import demo_model_path

    return demo_model_path()


def _run(model: str, flags: list, tokens: int, env: dict) -> dict:
    cmd = [sys.executable, "-m", "llama_cx", "generate", model, "-p", PROMPT, "-n", str(tokens), "--temp", "0",
           "--json", *flags]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"benchmark run failed: {' '.join(cmd)}\n{r.stderr}")
    return json.loads(r.stdout)


def _spin():
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.contention", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="GGUF or Meta checkpoint (default: the demo model)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128, help="tokens decoded per run")
    ap.add_argument("--competitors", default="0,1", help="competing processes, comma-separated (default 0,1)")
    ap.add_argument("--env", action="append", default=[], metavar="K=V", help="extra environment for the runs")
    ap.add_argument("--out", help="write every run as JSON here")
    args = ap.parse_args(argv)
    model = _find_model(args.model)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("OMP_NUM_THREADS", None)  # the default thread count is one of the things measured
    for kv in args.env:
        k, _, v = kv.partition("=")
        env[k] = v
    with open(model, "rb") as f:  # from the page cache in every run
        while f.read(1 << 24):
            pass
    comps = [int(c) for c in args.competitors.split(",")]
    print(f"model {model}; {os.cpu_count()} CPUs; {args.tokens} tokens per run; extra env {args.env or 'none'}")
    rows = []
    for rnd in range(args.rounds):
        for c in comps:
            order = CONFIGS[rnd % 3:] + CONFIGS[:rnd % 3]
            for name, flags in order:
                procs = [_spin() for _ in range(c)]
                time.sleep(0.3)  # let the competitors settle on their cores
                b0, c0, t0 = _busy_seconds(), _children_cpu(), time.perf_counter()
                try:
                    res = _run(model, flags, args.tokens, env)
                finally:
                    for p in procs:
                        p.kill()
                        p.wait()
                wall = time.perf_counter() - t0
                own = _children_cpu() - c0  # the run and its competitors
                other = max(0.0, (_busy_seconds() - b0 - own) / wall)
                st = res["stats"]
                row = dict(round=rnd, competitors=c, config=name, decode_tok_s=st["decode_tok_s"],
                           ttft_s=st["time_to_first_token"], cpu_share=st["cpu_share"],
                           threads=st["decode_threads"], generated=st["generated_tokens"], other_load=other)
                rows.append(row)
                share = "-" if row["cpu_share"] is None else f"{row['cpu_share']:.0%}"
                print(f"  round {rnd + 1} competitors {c} {name:<12} decode {row['decode_tok_s']:7.1f} tok/s  "
                      f"first token {row['ttft_s']:.3f} s  cpu share {share:>4}  threads at end {row['threads']}  "
                      f"other load {other:.2f} cores", flush=True)
    print()
    for c in comps:
        med = {name: statistics.median(r["decode_tok_s"] for r in rows if r["competitors"] == c and r["config"] == name)
               for name, _ in CONFIGS}
        ratios = []
        for rnd in range(args.rounds):
            got = {r["config"]: r["decode_tok_s"] for r in rows if r["competitors"] == c and r["round"] == rnd}
            ratios.append(got["default"] / max(got["--threads 1"], got["--threads 2"]))
        print(f"competitors {c}: median decode tok/s " + ", ".join(f"{k} {v:.1f}" for k, v in med.items())
              + f"; default / best fixed: median {statistics.median(ratios):.2f} "
              f"(rounds {', '.join(f'{x:.2f}' for x in ratios)})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"model": model, "tokens": args.tokens, "env": args.env, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
