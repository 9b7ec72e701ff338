"""`python -m benchmarks.serve`: the HTTP server under 1, 2, 4 and 8 concurrent streaming clients.

    python -m benchmarks.serve                         # SmolLM2-135M, 2 threads, 64 tokens per request
    python -m benchmarks.serve --clients 1,8 --max-tokens 32 --rounds 3 --threads 2
    python -m benchmarks.serve --model some.gguf --peer   # also llama-cpp-python's server, when installed

For each client count N the server (`llama-cx serve --parallel N_max`, a subprocess) gets N streaming
/v1/completions requests at once (distinct prompts, greedy), `--rounds` times. Reported per N:
  aggregate tok/s   completion tokens of all requests / wall time from the first request to the last byte
  TTFT p50 / p99    request sent -> first text chunk received, over all requests of all rounds
                    (with few requests p99 is the slowest one)
Tokens are the server's own usage counts (stream_options.include_usage), so a request that ends early on
an end-of-text token is counted as what it produced.

The peer is llama-cpp-python's server (`python -m llama_cpp.server`, needs `pip install
"llama-cpp-python[server]"`), on the same GGUF, thread count and client load; it serves one request at a time
(started with --interrupt_requests False, so that a new request waits instead of cutting the running one short).
Needs only the standard library on the client side (http.client).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

PROMPTS = [
    "Count from one to one hundred in words: one, two, three,",
    "Write a long story about a dragon who learns to bake bread.",
    "List the countries of Europe and their capitals:",
    "Explain, step by step, how a bicycle works.",
    "def quicksort(xs):\n    \"\"\"Sort a list of numbers.\"\"\"\n",
    "The history of the printing press begins",
    "Here is a recipe for pancakes. Ingredients:",
    "A conversation between two robots about the weather:",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proc, path: str, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the server did not come up")


def _stream_one(port: int, prompt: str, max_tokens: int, out: dict, extra: dict) -> None:
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}, **extra})
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:200]!r}")
    first, tokens, chunks = None, None, 0
    for raw in r:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        ev = json.loads(line[6:])
        if ev.get("choices") and ev["choices"][0].get("text"):
            chunks += 1
            if first is None:
                first = time.perf_counter()
        if ev.get("usage"):
            tokens = ev["usage"]["completion_tokens"]
    out.update(t0=t0, t_first=first, t_end=time.perf_counter(), tokens=tokens if tokens is not None else chunks)


def measure(port: int, n_clients: int, max_tokens: int, rounds: int, extra: dict):
    """Every request runs to max_tokens (`extra` says so in the server's terms): a request that ended early on
    an end-of-text token would leave the others running in smaller batches and make N clients look like
    fewer (the first version of this benchmark had 2 clients slower than 1 for that reason)."""
    ttfts, rates = [], []
    for _ in range(rounds):
        results = [dict() for _ in range(n_clients)]
        threads = [threading.Thread(target=_stream_one, args=(port, PROMPTS[i % len(PROMPTS)], max_tokens, results[i], extra))
                   for i in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if any("t_end" not in r for r in results):
            raise RuntimeError("a client failed (see above)")
        wall = max(r["t_end"] for r in results) - min(r["t0"] for r in results)
        rates.append(sum(r["tokens"] for r in results) / wall)
        ttfts += [r["t_first"] - r["t0"] for r in results if r["t_first"] is not None]
    ttfts.sort()
    p99 = ttfts[min(len(ttfts) - 1, int(round(0.99 * (len(ttfts) - 1))))]
    return statistics.median(rates), statistics.median(ttfts), p99


def _llama_cx_server(model, port, args, parallel):
    cmd = [sys.executable, "-m", "llama_cx", "--threads", str(args.threads), "serve", model, "--port", str(port),
           "--parallel", str(parallel), "--ctx", str(args.ctx)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# llama-cpp-python's server, started with llama.cpp's "extra buffer types" (weight repacking for AMX) off unless
# --peer-extra-bufts: its AMX kernel for Q4_1 segfaults on the machine these benchmarks were written on
# (ggml_backend_amx_mul_mat, llama-cpp-python 0.3.36), and the ordinary kernels are what most CPUs run anyway.
_PEER_BOOT = """
import sys
import llama_cpp.llama_cpp as low
if not EXTRA_BUFTS:
    default_params = low.llama_model_default_params
    def params():
        p = default_params()
        p.use_extra_bufts = False
        return p
    low.llama_model_default_params = params
from llama_cpp.server.__main__ import main
sys.argv[0] = "llama_cpp.server"
main()
"""


def _llama_cpp_server(model, port, args, parallel):
    try:
        import llama_cpp.server.app  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"llama-cpp-python's server is not installed ({e}); pip install 'llama-cpp-python[server]'")
    boot = _PEER_BOOT.replace("EXTRA_BUFTS", str(bool(args.peer_extra_bufts)))
    cmd = [sys.executable, "-c", boot, "--model", model, "--port", str(port), "--host", "127.0.0.1",
           "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads), "--n_ctx", str(args.ctx),
           # its default (True) makes a new request cut the running one short; queueing them is the fair comparison
           "--interrupt_requests", "False"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_engine(name, start, model, args, clients, ready_path, extra):
    port = _free_port()
    proc = start(model, port, args, max(clients))
    rows = []
    try:
        _wait_healthy(port, proc, ready_path)
        measure(port, 1, 4, 1, extra)  # warm-up: page the weights in, first-call costs
        for n in clients:
            rate, p50, p99 = measure(port, n, args.max_tokens, args.rounds, extra)
            rows.append((name, n, rate, p50, p99))
            print(f"{name:<18} {n:>7} {rate:>14.1f} {p50:>10.3f} {p99:>10.3f}", flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="a GGUF (default: SmolLM2-135M-Instruct Q4_1, fetched once)")
    ap.add_argument("--clients", default="1,2,4,8", help="concurrent client counts (default 1,2,4,8)")
    ap.add_argument("--max-tokens", type=int, default=64, help="tokens per request (default 64)")
    ap.add_argument("--rounds", type=int, default=2, help="repetitions per client count (default 2)")
    ap.add_argument("--threads", type=int, default=2, help="server threads (default 2)")
    ap.add_argument("--ctx", type=int, default=512, help="context per slot (default 512)")
    ap.add_argument("--peer", action="store_true", help="also llama-cpp-python's server, when installed")
    ap.add_argument("--peer-extra-bufts", action="store_true",
                    help="let llama.cpp repack weights for AMX etc. (off by default: see _PEER_BOOT)")
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]
    model = args.model
    if model is None:
        from .models import smollm2_gguf

        model = smollm2_gguf()
    print(f"model {os.path.basename(model)}, {args.threads} threads, {args.max_tokens} tokens per request, "
          f"{args.rounds} rounds, load average {os.getloadavg()[0]:.1f}")
    print(f"{'server':<18} {'clients':>7} {'aggregate tok/s':>14} {'TTFT p50':>10} {'TTFT p99':>10}")
    # llama.cpp's ignore_eos for ours; an end-of-text bias of -100 for llama-cpp-python's (it has logit_bias)
    rows = run_engine("llama-cx serve", _llama_cx_server, model, args, clients, "/health", {"ignore_eos": True})
    if args.peer:
        try:
            import llama_cx

            tok = llama_cx.load(model).require_tokenizer()
            bias = {"logit_bias": {str(i): -100 for i in tok.stop_ids}}
            rows += run_engine("llama_cpp.server", _llama_cpp_server, model, args, clients, "/v1/models", bias)
        except RuntimeError as e:
            print(f"llama_cpp.server: absent: {e}")
    base = {n: r for name, n, r, _, _ in rows if name == "llama-cx serve"}
    if 1 in base:
        print("llama-cx scaling vs 1 client: " + ", ".join(f"{n}: {r / base[1]:.2f}x" for n, r in base.items()))
    if args.out:
        with open(args.out, "w") as f:
            json.dump([dict(zip(("server", "clients", "tok_s", "ttft_p50", "ttft_p99"), r)) for r in rows], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
