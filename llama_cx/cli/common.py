"""What the command modules share: the one-line messages, the model a command runs on, streamed output."""
from __future__ import annotations

import os
import sys

from .._text import from_user, show
from ..emoji_names import EmojiNamer

PROG = "llama-cx"


class UsageError(Exception):
    """A mistake in the command line: one line on stderr, exit status 2."""


def say_error(msg: str) -> None:
    """One line on stderr: `llama-cx: error: ...`."""
    line = show(" ".join(str(msg).split("\n")))
    try:
        sys.stderr.write(f"{PROG}: error: {line}\n")
        sys.stderr.flush()
    except OSError:
        pass


def model_path(args, demo_fallback: bool) -> str:
    path = args.model or os.environ.get("LLAMA_CX_MODEL")
    if path:
        return path
    if demo_fallback:
        from ..demo import demo_model_path

        return demo_model_path(progress=sys.stderr)
    raise UsageError("no model given: pass MODEL or set LLAMA_CX_MODEL (or try `llama-cx demo`, or --help)")


def read_prompt(p: str) -> str:
    """A prompt argument: the text itself, or '-' for standard input."""
    if p == "-":
        return from_user(sys.stdin.read())  # (from_user: for a stdin that setup_streams could not reconfigure)
    return from_user(p)


def load_model(args, demo_fallback=True, quiet=False):
    from ..model import load

    path = model_path(args, demo_fallback)
    if not quiet and sys.stderr.isatty():
        say(f"loading {path}")
    return load(path, huge_pages=args.huge_pages)


def say(msg: str) -> None:
    """A status line on stderr: `llama-cx: ...`."""
    sys.stderr.write(f"{PROG}: {show(msg)}\n")
    sys.stderr.flush()


def sampling_kwargs(args) -> dict:
    """The sampling flags, checked (a bad value fails here, before the model is loaded)."""
    from ..sampling import SamplingParams

    kw = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
              repeat_penalty=args.repeat_penalty, seed=args.seed)
    SamplingParams(**kw)
    return kw


class Out:
    """Streams chunks to stdout, flushed per chunk, optionally naming emojis; remembers the line state."""

    def __init__(self, emoji_names: bool, stream=None):
        self.stream = stream or sys.stdout
        self.namer = EmojiNamer() if emoji_names else None
        self.at_line_start = True

    def write(self, chunk: str) -> None:
        if self.namer is not None:
            chunk = self.namer.feed(chunk)
        self._put(chunk)

    def _put(self, s: str) -> None:
        if s:
            self.stream.write(s)
            self.stream.flush()
            self.at_line_start = s.endswith("\n")

    def end(self) -> None:
        """Flush what the emoji namer holds, and end the line."""
        if self.namer is not None:
            self._put(self.namer.flush())
        if not self.at_line_start:
            self._put("\n")


def stream(gen, out: Out) -> None:
    """Print a Generation; Ctrl-C stops it (the generation records 'interrupted')."""
    try:
        for chunk in gen:
            out.write(chunk)
    except KeyboardInterrupt:
        gen.close()


def model_name(model) -> str:
    """The model's short name: its name in the file (GGUF general.name), else the checkpoint's file or directory."""
    return model.checkpoint.name


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
