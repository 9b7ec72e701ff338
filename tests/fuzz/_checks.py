"""Checks the byte-mutation targets miss (issue 21), run by `scripts/fuzz.py --check NAME`:

- bounds:  each hostile-file class of fuzz/_hostile.py at growing sizes, one fresh process per run; CPU
           seconds and peak RSS per size, and a finding when a run passes MAX_SECONDS or MAX_RSS_MB, or
           when its CPU time grows faster than its input (more than 4x per doubling, with a 0.2 s floor);
- text:    random bytes that are not UTF-8 at every boundary where text enters or leaves (stdin to generate,
           chat and the menu, a prompt in argv, a model path, a GGUF general.name) through
           the CLI, under a UTF-8 and a C locale; a finding is a traceback, a signal or an exit status other
           than 0 or 1 (1: a one-line error, as for a path that does not exist);
- threads: random texts encoded by 4 threads sharing a tokenizer, generations by 2 threads sharing a model,
           and 2 threads calling forward on one context, against the serial results.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_SECONDS = 20.0
MAX_RSS_MB = 1024
GROWTH_PER_DOUBLING = 4.0

# ---- bounds --------------------------------------------------------------------------------------------------
# name -> (sizes, unit, build(size, directory) -> argument, run(argument) -> outcome)


def _load_checkpoint(arg):
    from llama_cx.formats import open_checkpoint

    open_checkpoint(arg)


def _tokenizer(arg):
    from llama_cx.tokenizers import Tokenizer

    Tokenizer.from_file(arg)


def _gguf(arg):
    from llama_cx.formats.gguf import GGUFFile

    GGUFFile(arg).close()


def _chat_template(arg):
    from llama_cx.tokenizers.chat_format import chat_format_for
    from llama_cx.tokenizers import Tokenizer

    tokens = [chr(c) for c in range(0x21, 0x7F)] + ["<|im_start|>", "<|im_end|>"]
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": [],
            "tokenizer.ggml.token_type": [1] * (len(tokens) - 2) + [3, 3]}
    with open(arg) as f:
        chat_format_for(Tokenizer.from_gguf_metadata(meta, "t"), chat_template=f.read())


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def _bound_cases() -> Dict[str, Tuple[List[int], str, Callable, Callable]]:
    from fuzz import _hostile as h

    return {
        "pickle-dag-key": ([8, 16, 24, 32], "levels",
                           lambda n, d: h.meta_dir(os.path.join(d, "m"), h.dag_pickle(n)), _load_checkpoint),
        "pickle-dag-state-key": ([8, 16, 24, 32], "levels",
                                 lambda n, d: h.meta_dir(os.path.join(d, "m"), h.dag_pickle(n, True)), _load_checkpoint),
        "pickle-empty-list-flood": ([1 << 20, 4 << 20, 24 << 20], "bytes",
                                    lambda n, d: h.meta_dir(os.path.join(d, "m"), h.flood_pickle(n)), _load_checkpoint),
        "pickle-append-flood": ([1 << 20, 4 << 20, 24 << 20], "bytes",
                                lambda n, d: h.meta_dir(os.path.join(d, "m"), h.flood_pickle(n, b"]a")),
                                _load_checkpoint),
        "zip-sparse-data.pkl": ([1 << 30, 3 << 30], "bytes",
                                lambda n, d: h.meta_dir(os.path.join(d, "m"), members={"archive/data.pkl": n}),
                                _load_checkpoint),
        "zip-sparse-byteorder": ([1 << 30, 3 << 30], "bytes",
                                 lambda n, d: h.meta_dir(os.path.join(d, "m"), members={"archive/byteorder": n}),
                                 _load_checkpoint),
        "zip-sparse-directory": ([1 << 30, 3 << 30], "bytes",
                                 lambda n, d: _sparse_directory_dir(h, d, n), _load_checkpoint),
        "gguf-sparse-array": ([1 << 20, 1 << 26, 3 << 30], "elements",
                              lambda n, d: h.sparse_gguf_array(os.path.join(d, "a.gguf"), n), _gguf),
        "tokenizer-sparse": ([1 << 30, 3 << 30], "bytes",
                             lambda n, d: _sparse(os.path.join(d, "tokenizer.model"), n), _tokenizer),
        "vocab-one-bucket": ([10_000, 40_000, 160_000], "tokens",
                             lambda n, d: h.forged_tiktoken_file(os.path.join(d, "tokenizer.model"), n), _tokenizer),
        "chat-template-openings": ([57_000, 570_000, 5_700_000], "bytes",
                                   lambda n, d: _write(os.path.join(d, "t.jinja"), h.chatml_openings(n)),
                                   _chat_template),
    }


def _sparse_directory_dir(h, d, n):
    m = h.meta_dir(os.path.join(d, "m"))
    h.sparse_zip_directory(os.path.join(m, "consolidated.00.pth"), n)
    return m


def _sparse(path, n):
    with open(path, "wb") as f:
        f.truncate(n)
    return path


def bound_child(case: str, arg: str) -> int:
    """Run one case on a built input in this (fresh) process; print JSON (outcome, CPU seconds)."""
    sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
    from llama_cx.errors import LlamaCxError

    run = _bound_cases()[case][3]
    t0 = time.process_time()
    try:
        run(arg)
        outcome = "loaded"
    except LlamaCxError as e:
        outcome = "refused: " + str(e).split(": ")[-1][:100]
    except BaseException as e:  # noqa: BLE001 - a finding
        outcome = f"FINDING {type(e).__name__}: {str(e)[:100]}"
    cpu = time.process_time() - t0
    peak_mb = _peak_rss_mb()
    print(json.dumps(dict(outcome=outcome, cpu=cpu, peak_mb=peak_mb)))
    return 0


def check_bounds(names=None, memory_gb: float = 4.0, out=print) -> List[str]:
    """Run every bound case at each size in a fresh process; returns the findings (and prints the table)."""
    cases = _bound_cases()
    findings = []
    out(f"{'case':<26} {'size':>14} {'unit':<9} {'CPU s':>7} {'peak MB':>8}  outcome")
    for name, (sizes, unit, build, _run) in cases.items():
        if names and name not in names:
            continue
        prev = None
        for n in sizes:
            with tempfile.TemporaryDirectory(prefix="lcx-bounds-") as d:
                arg = build(n, d)
                cmd = [sys.executable, os.path.join(ROOT, "scripts", "fuzz.py"), "--bound-child", name, "--arg", arg,
                       "--memory-gb", str(memory_gb)]
                try:
                    proc = subprocess.run(cmd, capture_output=True, cwd=ROOT, timeout=MAX_SECONDS * 6)
                    stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
                except subprocess.TimeoutExpired:
                    stdout, stderr, rc = b"", b"hang", "timeout"
            try:
                r = json.loads(stdout.decode().strip().splitlines()[-1])
            except (ValueError, IndexError):
                r = dict(outcome=f"FINDING process died ({rc}): {stderr.decode()[-200:]}", cpu=float("nan"),
                         peak_mb=float("nan"))
            rss_mb = r["peak_mb"]
            out(f"{name:<26} {n:>14,} {unit:<9} {r['cpu']:>7.2f} {rss_mb:>8.0f}  {r['outcome']}")
            if r["outcome"].startswith("FINDING"):
                findings.append(f"{name} at {n} {unit}: {r['outcome']}")
            if not r["cpu"] <= MAX_SECONDS:
                findings.append(f"{name} at {n} {unit}: {r['cpu']:.1f} s CPU (bound {MAX_SECONDS} s)")
            if rss_mb > MAX_RSS_MB:
                findings.append(f"{name} at {n} {unit}: {rss_mb:.0f} MB peak RSS (bound {MAX_RSS_MB} MB)")
            if prev is not None and unit != "levels":
                (pn, pcpu), doublings = prev, max(1.0, _log2(n / prev[0]))
                if r["cpu"] > 0.2 and r["cpu"] > max(pcpu, 0.05) * GROWTH_PER_DOUBLING ** doublings:
                    findings.append(f"{name}: CPU {pcpu:.2f} s at {pn} -> {r['cpu']:.2f} s at {n} (superlinear)")
            prev = (n, r["cpu"])
    return findings


def _peak_rss_mb() -> float:
    """VmHWM of this process (not getrusage's ru_maxrss, which Linux carries over from the parent at fork)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _log2(x):
    import math

    return math.log2(x) if x > 0 else 0.0


# ---- text at every boundary ------------------------------------------------------------------------------------
def _random_bad_text(rng: random.Random) -> bytes:
    parts = [b"\xff", b"\xfe", b"\xc3", b"\xed\xa0\x80", b"\xf0\x9f", b"caf\xe9", b"\x00", b"\x1b[2J", "é🦊".encode(),
             b"\xe2\x82", b"ok ", b"\n", b"\\", b'"""', b"/sys", b"\x80\x80"]
    return b"".join(rng.choice(parts) for _ in range(rng.randrange(1, 12)))


def check_text(seconds: float, seed: int = 0, out=print) -> List[str]:
    sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
    from _ckpt import write_checkpoint
    from fuzz import _hostile as h

    rng = random.Random(seed)
    findings, runs = [], 0
    locales = [{}, {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}, {"PYTHONIOENCODING": "ascii"}]
    with tempfile.TemporaryDirectory(prefix="lcx-text-") as d:
        base = os.path.join(d, "model")
        tok = _llama3_tokenizer()
        write_checkpoint(base, seed=3, vocab_size=128256, max_seq_len=128, tokenizer=tok)
        gg = h.tiny_chatml_gguf(os.path.join(d, "g.gguf"), name="N" * 12)
        name_at = open(gg, "rb").read().index(b"N" * 12)

        def run(args, stdin=b"", env=None):
            nonlocal runs
            e = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
            e.pop("LLAMA_CX_MODEL", None)
            r = subprocess.run([sys.executable, "-m", "llama_cx", *args], input=stdin, capture_output=True, env=e,
                               timeout=120)
            runs += 1
            err = r.stderr.decode("utf-8", "replace")
            if "Traceback" in err or r.returncode not in (0, 1):
                findings.append(f"{[a if isinstance(a, str) else a for a in args]!r} stdin={stdin[:40]!r} env={env}: "
                                f"exit {r.returncode}: {err[-300:]}")

        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            bad, env = _random_bad_text(rng), rng.choice(locales)
            which = rng.randrange(6)
            if which == 0:
                run(["generate", base, "-p", "-", "-n", "2", "-q"], bad, env)
            elif which == 1:
                run(["chat", base, "-n", "2"], bad + b"\n/exit\n", env)
            elif which == 2:
                run([base, "-n", "2"], b"7\n" + bad.replace(b"\n", b" ") + b"\nq\n", env)
            elif which == 3:
                run([b"generate", base.encode(), b"-p", bad.replace(b"\x00", b"") or b"x", b"-n", b"2", b"-q"], b"", env)
            elif which == 4:
                link = os.fsencode(d) + b"/m-" + bad.replace(b"/", b"_").replace(b"\x00", b"_")[:60]
                if not os.path.lexists(link):
                    os.symlink(base, link)
                run([b"info", link], b"", env)
                run([b"info", link + b"-missing"], b"", env)
            else:
                raw = (bad.replace(b"\x00", b"?") + b"N" * 12)[:12]
                with open(gg, "r+b") as f:
                    f.seek(name_at)
                    f.write(raw)
                run(["info", gg], b"", env)
    out(f"text: {runs} CLI runs, {len(findings)} finding(s)")
    return findings


def _llama3_tokenizer() -> str:
    cache = os.environ.get("LLAMA_CX_TEST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "llama_cx",
                                                                 "test-data")
    path = os.path.join(cache, "llama-models-0.3.0", "llama_models", "llama3", "tokenizer.model")
    if not os.path.exists(path):
        raise SystemExit(f"the text and threads checks need Meta's tokenizer.model at {path} (run the tests once)")
    return path


# ---- concurrent callers ----------------------------------------------------------------------------------------
def check_threads(seconds: float, seed: int = 0, out=print) -> List[str]:
    sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
    import llama_cx
    from _ckpt import write_checkpoint
    from llama_cx.errors import LlamaCxError
    from llama_cx.tokenizers import Tokenizer

    rng = random.Random(seed)
    findings: List[str] = []
    tok = Tokenizer.from_file(_llama3_tokenizer())
    with tempfile.TemporaryDirectory(prefix="lcx-threads-") as d:
        write_checkpoint(d, seed=4, vocab_size=128256, max_seq_len=256, tokenizer=_llama3_tokenizer())
        model = llama_cx.load(d)
    rounds = {"tokenizer": 0, "generate": 0, "context": 0}
    refused = 0
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        texts = [_random_bad_text(rng).decode("utf-8", "replace") * rng.randrange(1, 200) for _ in range(16)]
        want = [tok.encode(t) for t in texts]
        got = _in_threads(4, lambda k: [tok.encode(t) for t in texts[k::4]])
        if [x for k in range(4) for x in got[k]] != [w for k in range(4) for w in want[k::4]]:
            findings.append(f"tokenizer: threads differ from the serial run (seed {seed})")
        rounds["tokenizer"] += 1

        prompts = [t[:60] for t in texts[:4]]

        def gen(i):
            g = model.generate(prompts[i], max_tokens=3, temperature=0.8, seed=i)
            g.read()
            return g.prompt_ids + g.tokens

        want = [gen(i) for i in range(4)]
        got = _in_threads(2, lambda k: [gen(i) for i in range(k, 4, 2)])
        if [got[0][0], got[1][0], got[0][1], got[1][1]] != want:
            findings.append("generate: threads sharing a model differ from the serial run")
        rounds["generate"] += 1

        ctx = model.new_context(256)
        ids = [[rng.randrange(128000) for _ in range(100)] for _ in range(2)]
        results = _in_threads(2, lambda k: _forward_or_refusal(ctx, ids[k], LlamaCxError))
        refusals = [r for r in results if isinstance(r, str)]
        refused += len(refusals)
        done = [k for k, r in enumerate(results) if not isinstance(r, str)]
        expect = [i for k in done for i in ids[k]] if len(done) == 1 else None
        if len(refusals) > 1 or (expect is not None and ctx.tokens != expect) or \
                (len(done) == 2 and sorted(map(tuple, (ctx.tokens[:100], ctx.tokens[100:]))) != sorted(map(tuple, ids))):
            findings.append(f"context: two callers left {len(ctx.tokens)} tokens, {refusals}")
        rounds["context"] += 1
    out(f"threads: {rounds} rounds, {refused} forward call(s) refused as 'in use', {len(findings)} finding(s)")
    return findings


def _forward_or_refusal(ctx, ids, error):
    try:
        return bytes(ctx.forward(ids))
    except error as e:
        return str(e)


def _in_threads(n, fn):
    results, errors = [None] * n, []
    barrier = threading.Barrier(n)

    def wrapped(k):
        try:
            barrier.wait()
            results[k] = fn(k)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=wrapped, args=(k,)) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return results
