"""Encode throughput of llama_cx's tokenizer against tiktoken, same vocabulary, same text, same run, one thread.

    python benchmarks/bench_tokenizer.py [--tokenizer PATH] [--repeat N] [--gguf PATH]

The text is English documentation prose (pydoc's topics) and Python source (the standard library), split into
documents as they come; both tokenizers encode every document, best of N timed passes each. tiktoken is built
from the same tokenizer.model with Meta's pattern and calls `encode_ordinary` (its fastest single-thread path);
ours goes through the public `Tokenizer.encode`. `run()` returns the numbers as a dict for the benchmark suite.
"""
import argparse
import glob
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

DEFAULT_TOKENIZER = os.path.join(
    os.environ.get("LLAMA_CX_TEST_CACHE") or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "test-data"),
    "llama-models-0.3.0", "llama_models", "llama3", "tokenizer.model")


def documents(max_bytes: int = 4_000_000):
    """English prose and Python code, about max_bytes of UTF-8 in all, deterministic for a Python version."""
    from pydoc_data.topics import topics

    prose = [topics[k] for k in sorted(topics)]
    code = []
    for path in sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            code.append(f.read())
    out, total = [], 0
    for i in range(2 * min(len(prose), len(code))):  # alternate prose and code until the budget is spent
        d = prose[i // 2] if i % 2 == 0 else code[i // 2]
        out.append(d)
        total += len(d.encode("utf-8"))
        if total >= max_bytes:
            break
    return out


def _best(fn, docs, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for d in docs:
            fn(d)
        best = min(best, time.perf_counter() - t)
    return best


def run(tokenizer_path: str = DEFAULT_TOKENIZER, repeat: int = 5, max_bytes: int = 4_000_000, gguf_path=None) -> dict:
    """{'text_mb', 'ours_mb_s', 'tiktoken_mb_s', 'ratio', 'same_ids', 'core', ...}; ratio = ours / tiktoken."""
    import tiktoken
    import tiktoken.load

    from llama_cx.tokenizers import Tokenizer
    from llama_cx.tokenizers.tiktoken_format import LLAMA3_PATTERN

    ours = Tokenizer.from_file(tokenizer_path)
    ranks = tiktoken.load.load_tiktoken_bpe(tokenizer_path)
    ref = tiktoken.Encoding(name="llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks,
                            special_tokens=dict(ours.special_tokens))
    docs = documents(max_bytes)
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    same = all(ours.encode(d) == ref.encode_ordinary(d) for d in docs if len(d) <= 25_000)
    t_ours = _best(ours.encode, docs, repeat)
    t_ref = _best(ref.encode_ordinary, docs, repeat)
    result = {
        "text_mb": round(mb, 3), "documents": len(docs), "core": ours.core_name,
        "ours_mb_s": round(mb / t_ours, 2), "tiktoken_mb_s": round(mb / t_ref, 2),
        "ratio": round(t_ref / t_ours, 3), "same_ids": same, "tiktoken_version": tiktoken.__version__,
    }
    if gguf_path:
        from llama_cx.formats.gguf import GGUFFile

        g = GGUFFile(gguf_path)
        try:
            gtok = Tokenizer.from_gguf_metadata(g.metadata, gguf_path)
        finally:
            g.close()
        result["gguf_pattern"] = gtok.pattern
        result["gguf_mb_s"] = round(mb / _best(gtok.encode, docs, repeat), 2)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="Meta's Llama 3 tokenizer.model")
    p.add_argument("--repeat", type=int, default=5, help="timed passes (best is kept)")
    p.add_argument("--mb", type=float, default=4.0, help="megabytes of text")
    p.add_argument("--gguf", default=None, help="also time the tokenizer of this GGUF file")
    a = p.parse_args(argv)
    if not os.path.exists(a.tokenizer):
        sys.exit(f"no tokenizer at {a.tokenizer}: pass --tokenizer PATH (Meta's Llama 3 tokenizer.model)")
    r = run(a.tokenizer, a.repeat, int(a.mb * 1e6), a.gguf)
    print(f"text: {r['text_mb']} MB in {r['documents']} documents (prose + code); core: {r['core']}")
    print(f"llama_cx : {r['ours_mb_s']:8.2f} MB/s")
    print(f"tiktoken : {r['tiktoken_mb_s']:8.2f} MB/s  (tiktoken {r['tiktoken_version']}, encode_ordinary)")
    print(f"ratio    : {r['ratio']:.2f}x tiktoken   same ids: {r['same_ids']}")
    if "gguf_mb_s" in r:
        print(f"gguf ({r['gguf_pattern']}): {r['gguf_mb_s']:8.2f} MB/s")
    return r


if __name__ == "__main__":
    main()
