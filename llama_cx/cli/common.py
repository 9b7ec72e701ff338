"""What the command modules share: the one-line messages, the model a command runs on, streamed output."""
from __future__ import annotations

import math
import os
import sys
from typing import List

from .. import defaults
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


def read_prompt(args) -> str:
    """The prompt: -f FILE's text, or -p's argument (the text itself, or '-' for standard input)."""
    if getattr(args, "file", None) is not None:
        with open(args.file, encoding="utf-8", errors="replace") as f:
            return f.read()
    if args.prompt == "-":
        return from_user(sys.stdin.read())  # (from_user: for a stdin that setup_streams could not reconfigure)
    return from_user(args.prompt)


def prompted_input(prompt: str) -> str:
    """input() with the prompt on stderr (stdout carries only the replies); no prompt at all when stdin is not a
    terminal (a piped conversation), where the line comes straight from stdin."""
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return from_user(line[:-1] if line.endswith("\n") else line)
    sys.stderr.write(prompt)
    sys.stderr.flush()
    return from_user(input())


def load_model(args, demo_fallback=True, quiet=False):
    from ..model import load

    path = model_path(args, demo_fallback)
    if not quiet and sys.stderr.isatty():
        say(f"loading {path}")
    return load(path, huge_pages=args.huge_pages, kv_dtype=args.kv_dtype)


def say(msg: str) -> None:
    """A status line on stderr: `llama-cx: ...`."""
    sys.stderr.write(f"{PROG}: {show(msg)}\n")
    sys.stderr.flush()


def command_defaults(chat: bool) -> dict:
    """The sampling defaults of a command (chat and demo replies: capped, with a mild repeat penalty), before
    the model file's recommendations."""
    d = dict(max_tokens=defaults.MAX_TOKENS, temperature=defaults.TEMPERATURE, top_k=defaults.TOP_K,
             top_p=defaults.TOP_P, min_p=defaults.MIN_P, repeat_penalty=defaults.REPEAT_PENALTY,
             repeat_last_n=defaults.REPEAT_LAST_N)
    if chat:
        d.update(max_tokens=defaults.CHAT_MAX_TOKENS, repeat_penalty=defaults.CHAT_REPEAT_PENALTY,
                 repeat_last_n=defaults.CHAT_REPEAT_LAST_N)
    return d


_SAMPLING_FLAGS = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "seed")


def recommended_sampling(checkpoint) -> dict:
    """The sampling settings the model file recommends (Checkpoint.sampling), the valid ones only: a bad value in
    a file is ignored, never an error of the command."""
    from ..errors import InvalidArgumentError
    from ..sampling import SamplingParams

    out = {}
    for field, v in getattr(checkpoint, "sampling", {}).items():
        if field not in _SAMPLING_FLAGS or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        kind = type(getattr(SamplingParams(), field))
        if kind is int and v != int(v):
            continue
        try:
            SamplingParams(**{field: kind(v)})
        except InvalidArgumentError:
            continue
        out[field] = kind(v)
    return out


def sampling_kwargs(args, model=None, chat: bool = False) -> dict:
    """Sampling settings: the flags given, over the model file's recommendations (when `model` is given), over
    the command's defaults. The flags are checked on their own first: a bad value is a usage error (exit 2),
    before the model is loaded."""
    from ..errors import InvalidArgumentError
    from ..sampling import SamplingParams

    given = {k: getattr(args, k) for k in _SAMPLING_FLAGS if getattr(args, k, None) is not None}
    try:
        SamplingParams(**given)
    except InvalidArgumentError as e:
        flag = next((k for k in given if str(e).startswith(k)), None)
        raise UsageError((f"argument --{flag.replace('_', '-')}: " if flag else "") + str(e)) from None
    kw = {k: v for k, v in command_defaults(chat).items() if k in _SAMPLING_FLAGS}
    if model is not None:
        kw.update(recommended_sampling(model.checkpoint))
    kw.update(given)
    return kw


def max_tokens(args, chat: bool = False) -> int:
    return command_defaults(chat)["max_tokens"] if args.max_tokens is None else args.max_tokens


def check_ctx(args, model) -> None:
    """--ctx against the model's window: a usage error (exit 2), like every other bad flag value."""
    if args.ctx is not None and args.ctx > model.config.max_seq_len:
        raise UsageError(f"argument --ctx: {args.ctx} exceeds the model's maximum {model.config.max_seq_len}")


def stats_lines(stats) -> List[str]:
    """The stats line, and a notice when other processes kept this one from the CPUs it asked for."""
    lines = [stats.summary()]
    if stats.starved:
        lines.append(f"{PROG}: other processes are using the CPUs: the decode got {stats.cpu_share:.0%} of the CPU "
                     f"time it asked for (ran with {stats.decode_threads} thread"
                     f"{'s' if stats.decode_threads != 1 else ''})")
    return lines


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
