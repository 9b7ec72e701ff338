"""Command line parsing and the entry point of `llama-cx`: each command's work is in generate.py or info.py."""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import List, Optional

from .. import defaults
from .._text import from_user, setup_streams, show
from .._version import __version__
from ..errors import LlamaCxError
from .common import PROG, UsageError, command_defaults, say, say_error
from .generate import cmd_chat, cmd_demo, cmd_generate
from .info import cmd_info, cmd_menu
from .tools import add_parsers as add_tool_parsers
from .trace import add_parsers as add_trace_parsers
from .serve import add_parser as add_serve_parser

COMMANDS = ("generate", "chat", "info", "demo", "trace", "trace-diff", "serve", "quantize", "perplexity")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (no usage dump) and never exits from inside a library."""

    def error(self, message):
        raise UsageError(message)


# ---- argument types: a bad value is a one-line usage error -----------------------------------------------
_INT_MAX = 2**31 - 1  # counts reach C as int or Py_ssize_t: refused here rather than as an OverflowError there


def _positive_int(s, hi=_INT_MAX):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {show(s)!r}") from None
    if not 0 < v <= hi:
        raise argparse.ArgumentTypeError(f"expected a positive integer{'' if v <= 0 else f' up to {hi}'}, "
                                         f"got {show(s)[:40]!r}")
    return v


def _thread_count(s):
    """Any positive integer: more than the CPUs can use is capped later, with a notice (see main)."""
    return _positive_int(s, math.inf)


def _nonneg_int(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {show(s)!r}") from None
    if not 0 <= v <= _INT_MAX:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0{'' if v < 0 else f' and at most {_INT_MAX}'}, "
                                         f"got {show(s)[:40]!r}")
    return v


def _finite_float(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {s!r}")
    return v


def _int(s):
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None


def _build_parsers():
    common = _Parser(add_help=False)
    common.add_argument("--threads", type=_thread_count, metavar="N",
                        help="kernel threads, fixed (default: all CPUs, and fewer for generated tokens while other "
                             "processes keep CPUs busy; at most 4x the CPUs)")
    common.add_argument("--huge-pages", action="store_true",
                        help="read the weights into huge-page memory: slower load, more RAM, faster decode")
    common.add_argument("--kv-dtype", choices=("f32", "bf16", "f16"), default="f32",
                        help="KV cache element type: bf16 / f16 halve its memory and the bytes a deep context reads "
                             "per token, at ~1e-3 (f16) / ~1e-2 (bf16) x std of logit error (default f32)")
    common.add_argument("--q8-prefill", action="store_true",
                        help="prompts over quantized GGUF weights with 8-bit activations and integer dots, as "
                             "llama.cpp computes them: faster for K-quants, less exact logits")
    common.add_argument("--bf16-prefill", action="store_true",
                        help="prompts with bf16 activations (AVX512-BF16): faster, less exact logits")
    common.add_argument("--bf16-decode", action="store_true",
                        help="generated tokens with bf16 activations (AVX512-BF16), as llama.cpp computes: less exact logits")

    def sampling_parser(chat: bool):
        # defaults are None: a flag wins over the model file's recommendation, which wins over the command's default
        d = command_defaults(chat)
        sampling = _Parser(add_help=False)
        g = sampling.add_argument_group(
            "sampling (defaults: the model file's general.sampling.* settings where it has them, else the ones shown)")
        g.add_argument("-n", "--max-tokens", type=_nonneg_int, metavar="N",
                       help=f"tokens to generate at most{' per reply' if chat else ''} (default {d['max_tokens']})")
        g.add_argument("--temperature", "--temp", type=_finite_float, metavar="T",
                       help=f"0 = greedy (default {d['temperature']})")
        g.add_argument("--top-k", type=_nonneg_int, metavar="K", help=f"keep the K most likely tokens (0 = off; default {d['top_k']})")
        g.add_argument("--top-p", type=_finite_float, metavar="P", help=f"nucleus sampling (1 = off; default {d['top_p']})")
        g.add_argument("--min-p", type=_finite_float, metavar="P",
                       help=f"drop tokens below P x the best (0 = off; default {d['min_p']})")
        g.add_argument("--repeat-penalty", type=_finite_float, metavar="R",
                       help=f"penalise tokens seen recently (1 = off; default {d['repeat_penalty']})")
        g.add_argument("--repeat-last-n", type=_nonneg_int, metavar="N",
                       help=f"how many recent tokens the penalty looks at (default {d['repeat_last_n']})")
        g.add_argument("--stop", action="append", metavar="STR", help="stop before the text STR (repeatable)")
        g.add_argument("--seed", type=_int, metavar="S", help="random seed (same seed + settings = same output)")
        g.add_argument("--ctx", type=_positive_int, metavar="N",
                       help=f"context length (default min(model max, {defaults.CONTEXT}))")
        g.add_argument("--emoji-names", action="store_true", help="follow each emoji in the output by its Unicode name")
        return sampling

    sampling, chat_sampling = sampling_parser(False), sampling_parser(True)

    def model_arg(p, demo_fallback=True):
        p.add_argument("model", nargs="?", metavar="MODEL",
                       help="checkpoint directory, .pth or .gguf (default: $LLAMA_CX_MODEL"
                       + (", else the demo model)" if demo_fallback else ")"))

    top = _Parser(prog=PROG, parents=[common, sampling],
                  description="CPU inference for Meta Llama models. Without a command: an interactive menu.",
                  epilog="commands: generate, chat, info, demo, trace, trace-diff, serve, quantize, perplexity  "
                         "(llama-cx COMMAND --help)")
    top.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    model_arg(top, demo_fallback=False)
    top.set_defaults(func=cmd_menu, command=None)

    subs = {}
    p = subs["generate"] = _Parser(prog=f"{PROG} generate", parents=[common, sampling],
                                   description="Stream the text generated after a prompt to stdout; stats to stderr.")
    model_arg(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-p", "--prompt", help="the prompt ('-' reads stdin)")
    src.add_argument("-f", "--file", metavar="FILE", help="read the prompt from FILE")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat format")
    p.add_argument("--system", metavar="S", help="system prompt (implies --chat)")
    p.add_argument("-q", "--quiet", action="store_true", help="no stats on stderr")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (text, tokens, stop reason, stats) instead of streaming the text")
    p.set_defaults(func=cmd_generate)

    p = subs["chat"] = _Parser(prog=f"{PROG} chat", parents=[common, chat_sampling],
                               description="Interactive chat. Commands: /reset, /system TEXT, /stats, /exit; "
                                           "end a line with \\ or use \"\"\" blocks for multi-line input.")
    model_arg(p)
    p.add_argument("--system", metavar="S", help="system prompt")
    _context_shift_flag(p)
    p.set_defaults(func=cmd_chat)

    p = subs["info"] = _Parser(prog=f"{PROG} info", parents=[common], description="Show what a checkpoint holds.")
    model_arg(p, demo_fallback=False)
    p.add_argument("--tensors", action="store_true", help="also list every tensor")
    p.set_defaults(func=cmd_info)

    p = subs["demo"] = _Parser(prog=f"{PROG} demo", parents=[common, chat_sampling],
                               description="Chat with the demo model (SmolLM2-135M-Instruct; fetched on first use).")
    p.add_argument("-p", "--prompt", help="answer this one prompt and exit")
    p.add_argument("--system", metavar="S", help="system prompt")
    p.add_argument("-q", "--quiet", action="store_true", help="no stats on stderr (with -p)")
    _context_shift_flag(p)
    p.set_defaults(func=cmd_demo, model=None, file=None, json=False)
    add_trace_parsers(subs, _Parser, common)
    add_serve_parser(subs, _Parser, [common])
    add_tool_parsers(subs, _Parser, common)
    for name, p in subs.items():
        p.set_defaults(command=name)
    return top, subs


def _context_shift_flag(p) -> None:
    p.add_argument("--no-context-shift", dest="context_shift", action="store_false",
                   help="when the conversation fills the context, stop (/reset) instead of dropping the oldest "
                        "turns (the system prompt is always kept)")


def _parse(argv: List[str]):
    top, subs = _build_parsers()
    # The command is the first word that is neither an option nor an option's value.
    takes_value = {o for a in top._actions if a.nargs != 0 for o in a.option_strings}
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] not in ("-", "--"):
        i += 2 if argv[i] in takes_value else 1
    if i < len(argv) and argv[i] not in COMMANDS and not os.path.exists(argv[i]):
        import difflib

        close = difflib.get_close_matches(argv[i], COMMANDS, n=1, cutoff=0.6)
        if close:  # `llama-cx generat`: a command mistyped, not a model path
            raise UsageError(f"unknown command {argv[i]!r} (did you mean {close[0]}?)")
    if i < len(argv) and argv[i] in COMMANDS:
        sub = subs[argv[i]]
        try:
            return sub.parse_args(argv[:i] + argv[i + 1:])
        except UsageError as e:
            raise UsageError(f"{e} (see {sub.prog} --help)") from None
    try:
        return top.parse_args(argv)
    except UsageError as e:
        raise UsageError(f"{e} (see {PROG} --help)") from None


# ---- main ------------------------------------------------------------------------------------------------
def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    setup_streams()  # bad UTF-8 on stdin is U+FFFD; nothing written to stdout/stderr raises (see _text)
    try:
        try:
            args = _parse(argv)
        except SystemExit as e:  # --help / --version printed their text
            return e.code if isinstance(e.code, int) else 0
        if getattr(args, "system", None) is not None:
            args.system = from_user(args.system)  # argv bytes that are not UTF-8 -> U+FFFD, as on stdin
        from .. import runtime  # only now: --help and --version run without the compiled core

        try:
            runtime.check_environment()  # a bad LLAMA_CX_ISA etc.: one line
        except LlamaCxError as e:
            raise UsageError(str(e)) from None
        if args.q8_prefill:
            runtime.set_q8_prefill(True)
        if args.threads is not None or args.bf16_prefill or args.bf16_decode:
            if args.threads is not None:
                used = runtime.set_num_threads(args.threads)
                if used < args.threads:
                    say(f"--threads {args.threads} is more than {runtime.MAX_THREADS_PER_CPU}x the "
                        f"{runtime.available_cpus()} CPUs available; using {used}")
            if args.bf16_prefill:
                runtime.set_bf16_prefill(True)
            if args.bf16_decode:
                runtime.set_bf16_decode(True)
        return args.func(args)
    except UsageError as e:
        return _error(str(e), 2)
    except LlamaCxError as e:
        return _error(str(e), 1)
    except OSError as e:
        if isinstance(e, BrokenPipeError):
            return _broken_pipe()
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        return _error(f"{where}{e.strerror or e}", 1)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130


def _error(msg: str, code: int) -> int:
    say_error(msg)
    return code


def _broken_pipe() -> int:
    # stdout was closed by the reader (e.g. `| head`): stop quietly (Python's documented recipe)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 1
