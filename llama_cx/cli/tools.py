"""The `quantize` and `perplexity` commands (cli/main.py adds them with add_parsers)."""
from __future__ import annotations

import os
import sys

from .common import PROG


def add_parsers(subs: dict, parser_cls, common) -> None:
    """Add the `quantize` and `perplexity` parsers to subs (name -> parser); common: the shared options parent."""
    from ..quantize import FILE_TYPES

    p = subs["quantize"] = parser_cls(
        prog=f"{PROG} quantize", parents=[common],
        description="Write a quantized llama GGUF (which llama.cpp runs) from an F32/F16/BF16 checkpoint: a Meta "
                    "directory or .pth, a Hugging Face directory, or a GGUF. Tensor types follow llama.cpp's recipe.")
    p.add_argument("input", metavar="IN", help="checkpoint directory, .pth, .safetensors or .gguf")
    p.add_argument("output", metavar="OUT", help="the .gguf to write")
    p.add_argument("--type", required=True, type=str.lower, choices=list(FILE_TYPES), metavar="TYPE",
                   help="one of " + ", ".join(FILE_TYPES))
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_quantize)

    p = subs["perplexity"] = parser_cls(
        prog=f"{PROG} perplexity", parents=[common],
        description="Perplexity of a model on a text file, by llama.cpp's method: chunks of --ctx tokens, each "
                    "starting with BOS, the second half of each chunk scored; prints PPL +/- its standard error.")
    p.add_argument("model", metavar="MODEL", help="checkpoint directory, .pth or .gguf")
    p.add_argument("file", metavar="FILE", help="UTF-8 text file ('-' reads stdin)")
    p.add_argument("--ctx", type=_ctx, default=512, metavar="N", help="tokens per chunk (default 512)")
    p.add_argument("--batch", type=_ctx, metavar="N", help="tokens per forward call within a chunk (default 128)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_perplexity)


def _ctx(s: str) -> int:
    import argparse

    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
    if v < 4:
        raise argparse.ArgumentTypeError(f"must be at least 4, got {v}")
    return v


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def cmd_quantize(args) -> int:
    from ..quantize import progress_line, quantize

    r = quantize(args.input, args.output, args.type, progress=None if args.quiet else progress_line(sys.stderr))
    types = ", ".join(f"{n} {t}" for t, n in sorted(r.type_counts().items(), key=lambda kv: -kv[1]))
    for note in r.notes:
        sys.stderr.write(f"{PROG}: note: {note}\n")
    print(f"{r.path}: {r.kind.upper()}, {len(r.types)} tensors ({types}), {_size(r.in_bytes)} -> {_size(r.out_bytes)} "
          f"in {r.seconds:.1f} s")
    return 0


def cmd_perplexity(args) -> int:
    from ..errors import InvalidArgumentError
    from ..model import load
    from ..perplexity import perplexity, progress_bar

    if args.file == "-":
        text = sys.stdin.read()
    else:
        if not os.path.isfile(args.file):
            raise InvalidArgumentError(f"{args.file}: no such file")
        with open(args.file, encoding="utf-8", errors="replace") as f:
            text = f.read()
    model = load(args.model, huge_pages=args.huge_pages, kv_dtype=args.kv_dtype)
    r = perplexity(model, text, n_ctx=args.ctx, progress=None if args.quiet else progress_bar(sys.stderr),
                   n_batch=args.batch)
    print(f"{r} ({r.n_chunks} chunks of {r.n_ctx} tokens, {r.n_scored} tokens scored, "
          f"{r.n_tokens} tokens in the text)")
    return 0
