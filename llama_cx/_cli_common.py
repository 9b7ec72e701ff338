"""What the console's command modules share: the program name, the usage error, finding and loading MODEL.

cli.py (the parsers and most commands) and cli_trace.py (trace, trace-diff) both import this; neither imports
the other's commands, so the console has no import circle. (Main's issue-15 stage 3 grows this into
llama_cx/cli/common.py.)
"""
from __future__ import annotations

import os
import sys

PROG = "llama-cx"


class _UsageError(Exception):
    pass


def _model_path(args, demo_fallback: bool) -> str:
    path = args.model or os.environ.get("LLAMA_CX_MODEL")
    if path:
        return path
    if demo_fallback:
        from .demo import demo_model_path

        return demo_model_path(progress=sys.stderr)
    raise _UsageError("no model given: pass MODEL or set LLAMA_CX_MODEL (or try `llama-cx demo`, or --help)")


def _load(args, demo_fallback=True, quiet=False):
    from .model import load

    path = _model_path(args, demo_fallback)
    if not quiet and sys.stderr.isatty():
        _info(f"loading {path}")
    return load(path, huge_pages=args.huge_pages)


def _info(msg: str) -> None:
    sys.stderr.write(f"{PROG}: {msg}\n")
    sys.stderr.flush()


def _read_prompt(p: str) -> str:
    if p == "-":
        return sys.stdin.read()
    return p
