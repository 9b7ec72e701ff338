"""The `llama-cx` console (also `python -m llama_cx`).

    llama-cx MODEL                       interactive menu of predefined prompts (as in Llama Nuts and Bolts)
    llama-cx generate MODEL -p PROMPT    stream a completion to stdout, stats to stderr
    llama-cx chat MODEL                  interactive chat (/reset, /system TEXT, /stats, /exit)
    llama-cx info MODEL [--tensors]      what the checkpoint holds
    llama-cx demo [-p PROMPT]            chat with the demo model (SmolLM2-135M-Instruct, fetched once)
    llama-cx trace MODEL -p TEXT         every stage of every layer (llama_cx/cli_trace.py); also trace-diff

MODEL is a Meta checkpoint directory, a .pth or a .gguf file; $LLAMA_CX_MODEL is the default, and
chat/generate/demo fall back to the demo model. A user mistake is one line on stderr,
`llama-cx: error: ...`, and a non-zero exit status: 1 for bad input, 2 for bad usage, 130 for Ctrl-C.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import unicodedata
from typing import List, Optional

from ._version import __version__
from .errors import LlamaCxError

COMMANDS = ("generate", "chat", "info", "demo", "trace", "trace-diff")
PROG = "llama-cx"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (no usage dump) and never exits from inside a library."""

    def error(self, message):
        raise _UsageError(message)


# ---- argument types: a bad value is a one-line usage error -----------------------------------------------
def _positive_int(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _nonneg_int(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {s!r}")
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
    common.add_argument("--threads", type=_positive_int, metavar="N", help="kernel threads (default: all CPUs)")
    common.add_argument("--huge-pages", action="store_true",
                        help="read the weights into huge-page memory: slower load, more RAM, faster decode")
    common.add_argument("--bf16-prefill", action="store_true",
                        help="prompts with bf16 activations (AVX512-BF16): faster, less exact logits")
    common.add_argument("--bf16-decode", action="store_true",
                        help="generated tokens with bf16 activations (AVX512-BF16), as llama.cpp computes: less exact logits")

    sampling = _Parser(add_help=False)
    g = sampling.add_argument_group("sampling")
    g.add_argument("-n", "--max-tokens", type=_nonneg_int, metavar="N", help="tokens to generate at most")
    g.add_argument("--temperature", "--temp", type=_finite_float, default=0.6, metavar="T", help="0 = greedy (default 0.6)")
    g.add_argument("--top-k", type=_int, default=0, metavar="K", help="keep the K most likely tokens (0 = off)")
    g.add_argument("--top-p", type=_finite_float, default=0.9, metavar="P", help="nucleus sampling (default 0.9; 1 = off)")
    g.add_argument("--min-p", type=_finite_float, default=0.0, metavar="P", help="drop tokens below P x the best (0 = off)")
    g.add_argument("--repeat-penalty", type=_finite_float, default=1.0, metavar="R", help="penalise recent tokens (1 = off)")
    g.add_argument("--seed", type=_int, metavar="S", help="random seed (same seed + settings = same output)")
    g.add_argument("--ctx", type=_positive_int, metavar="N", help="context length (default min(model max, 4096))")
    g.add_argument("--emoji-names", action="store_true", help="follow each emoji in the output by its Unicode name")

    def model_arg(p, demo_fallback=True):
        p.add_argument("model", nargs="?", metavar="MODEL",
                       help="checkpoint directory, .pth or .gguf (default: $LLAMA_CX_MODEL"
                       + (", else the demo model)" if demo_fallback else ")"))

    top = _Parser(prog=PROG, parents=[common, sampling],
                  description="CPU inference for Meta Llama models. Without a command: an interactive menu.",
                  epilog="commands: generate, chat, info, demo, trace, trace-diff  (llama-cx COMMAND --help)")
    top.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    model_arg(top, demo_fallback=False)
    top.set_defaults(func=cmd_menu, command=None)

    subs = {}
    p = subs["generate"] = _Parser(prog=f"{PROG} generate", parents=[common, sampling],
                                   description="Stream the text generated after a prompt to stdout; stats to stderr.")
    model_arg(p)
    p.add_argument("-p", "--prompt", required=True, help="the prompt ('-' reads stdin)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat format")
    p.add_argument("--system", metavar="S", help="system prompt (implies --chat)")
    p.add_argument("-q", "--quiet", action="store_true", help="no stats on stderr")
    p.set_defaults(func=cmd_generate)

    p = subs["chat"] = _Parser(prog=f"{PROG} chat", parents=[common, sampling],
                               description="Interactive chat. Commands: /reset, /system TEXT, /stats, /exit; "
                                           "end a line with \\ or use \"\"\" blocks for multi-line input.")
    model_arg(p)
    p.add_argument("--system", metavar="S", help="system prompt")
    p.set_defaults(func=cmd_chat)

    p = subs["info"] = _Parser(prog=f"{PROG} info", parents=[common], description="Show what a checkpoint holds.")
    model_arg(p, demo_fallback=False)
    p.add_argument("--tensors", action="store_true", help="also list every tensor")
    p.set_defaults(func=cmd_info)

    p = subs["demo"] = _Parser(prog=f"{PROG} demo", parents=[common, sampling],
                               description="Chat with the demo model (SmolLM2-135M-Instruct; fetched on first use).")
    p.add_argument("-p", "--prompt", help="answer this one prompt and exit")
    p.add_argument("--system", metavar="S", help="system prompt")
    p.add_argument("-q", "--quiet", action="store_true", help="no stats on stderr (with -p)")
    p.set_defaults(func=cmd_demo, model=None)
    from .cli_trace import add_parsers as _add_trace_parsers  # trace, trace-diff (llama_cx/cli_trace.py)
    _add_trace_parsers(subs, _Parser, common)
    for name, p in subs.items():
        p.set_defaults(command=name)
    return top, subs


def _parse(argv: List[str]):
    top, subs = _build_parsers()
    # The command is the first word that is neither an option nor an option's value.
    takes_value = {o for a in top._actions if a.nargs != 0 for o in a.option_strings}
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] not in ("-", "--"):
        i += 2 if argv[i] in takes_value else 1
    if i < len(argv) and argv[i] in COMMANDS:
        sub = subs[argv[i]]
        try:
            return sub.parse_args(argv[:i] + argv[i + 1:])
        except _UsageError as e:
            raise _UsageError(f"{e} (see {sub.prog} --help)") from None
    try:
        return top.parse_args(argv)
    except _UsageError as e:
        raise _UsageError(f"{e} (see {PROG} --help)") from None


# ---- main ------------------------------------------------------------------------------------------------
def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    for stream in (sys.stdout, sys.stderr):
        if (getattr(stream, "encoding", "") or "").lower().replace("-", "") != "utf8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")  # an emoji on a latin-1 terminal is '?', not a crash
    try:
        try:
            args = _parse(argv)
        except SystemExit as e:  # --help / --version printed their text
            return e.code if isinstance(e.code, int) else 0
        if args.threads is not None or args.bf16_prefill or args.bf16_decode:
            from . import runtime  # only now: --help and --version run without the compiled core

            if args.threads is not None:
                runtime.set_num_threads(args.threads)
            if args.bf16_prefill:
                runtime.set_bf16_prefill(True)
            if args.bf16_decode:
                runtime.set_bf16_decode(True)
        return args.func(args)
    except _UsageError as e:
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
    _say_error(msg)
    return code


def _say_error(msg: str) -> None:
    """One line on stderr: `llama-cx: error: ...`."""
    line = " ".join(str(msg).split("\n"))
    try:
        sys.stderr.write(f"{PROG}: error: {line}\n")
        sys.stderr.flush()
    except OSError:
        pass


def _broken_pipe() -> int:
    # stdout was closed by the reader (e.g. `| head`): stop quietly (Python's documented recipe)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 1


# ---- helpers shared by the commands ------------------------------------------------------------------------
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


def _sampling_kwargs(args) -> dict:
    """The sampling flags, checked (a bad value fails here, before the model is loaded)."""
    from .sampling import SamplingParams

    kw = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
              repeat_penalty=args.repeat_penalty, seed=args.seed)
    SamplingParams(**kw)
    return kw


class _Out:
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


def _stream(gen, out: _Out) -> None:
    """Print a Generation; Ctrl-C stops it (the generation records 'interrupted')."""
    try:
        for chunk in gen:
            out.write(chunk)
    except KeyboardInterrupt:
        gen.close()


# ---- emoji names ---------------------------------------------------------------------------------------------
_ZWJ, _VS16, _VS15 = "\u200d", "\ufe0f", "\ufe0e"


def _is_emoji(ch: str) -> bool:
    cp = ord(ch)
    in_blocks = 0x1F000 <= cp <= 0x1FAFF or 0x2600 <= cp <= 0x27BF or 0x2300 <= cp <= 0x23FF or 0x2B00 <= cp <= 0x2BFF
    return in_blocks and unicodedata.category(ch) in ("So", "Sk")


def _is_regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _is_extender(ch: str) -> bool:
    """Characters that extend the emoji before them: variation selectors, skin tones, tag characters."""
    cp = ord(ch)
    return ch in (_VS16, _VS15) or 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F


def _emoji_name(ch: str) -> str:
    return unicodedata.name(ch, f"U+{ord(ch):04X}")


class EmojiNamer:
    """Streaming filter: each emoji (a whole ZWJ / skin-tone / flag sequence) is followed by its name(s),
    e.g. "🚀" -> "🚀 (ROCKET)", "👍🏽" -> "👍🏽 (THUMBS UP SIGN + EMOJI MODIFIER FITZPATRICK TYPE-4)".
    A sequence at the end of a chunk is held back until the next chunk shows whether it goes on."""

    def __init__(self):
        self.pending = ""

    def _cluster_end(self, text: str, i: int):
        """End of the emoji sequence starting at i, and whether it may continue past the text's end."""
        j = i + 1
        if _is_regional(text[i]):
            if j == len(text):
                return j, True
            if _is_regional(text[j]):
                j += 1
        while j < len(text):
            c = text[j]
            if _is_extender(c):
                j += 1
            elif c == _ZWJ:
                if j + 1 == len(text):
                    return j + 1, True
                if not _is_emoji(text[j + 1]):
                    break
                j += 2
            else:
                return j, False
        return j, True

    def feed(self, chunk: str) -> str:
        text, self.pending = self.pending + chunk, ""
        out, i = [], 0
        while i < len(text):
            ch = text[i]
            if not _is_emoji(ch):
                out.append(ch)
                i += 1
                continue
            end, open_ = self._cluster_end(text, i)
            if open_:
                self.pending = text[i:]
                break
            out.append(self._named(text[i:end]))
            i = end
        return "".join(out)

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        if not text:
            return ""
        return self._named(text) if _is_emoji(text[0]) else text

    @staticmethod
    def _named(cluster: str) -> str:
        names = [_emoji_name(c) for c in cluster if _is_emoji(c)]
        return f"{cluster} ({' + '.join(names)})"


# ---- generate ---------------------------------------------------------------------------------------------------
def _one_shot_chat(model, system, prompt, max_tokens, n_ctx, kw):
    """A one-message chat; its context is just big enough (unless --ctx), as generate() does for text."""
    from .generate import ChatSession

    if model.chat_format is None:
        model.require_tokenizer()
        raise LlamaCxError(f"{model.checkpoint.path}: the model has no chat format (drop --chat)")
    if n_ctx is None:
        msgs = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": prompt}]
        default = min(model.config.max_seq_len, 4096)
        n_ctx = max(1, min(default, len(model.chat_format.encode_dialog(msgs)) + max_tokens + 1))
    return ChatSession(model, system=system, n_ctx=n_ctx).send(prompt, max_tokens=max_tokens, **kw)


def _read_prompt(p: str) -> str:
    if p == "-":
        return sys.stdin.read()
    return p


def cmd_generate(args) -> int:
    from .generate import generate

    kw = _sampling_kwargs(args)
    prompt = _read_prompt(args.prompt)
    model = _load(args, quiet=args.quiet)
    max_tokens = 256 if args.max_tokens is None else args.max_tokens
    if args.chat or args.system is not None:
        gen = _one_shot_chat(model, args.system, prompt, max_tokens, args.ctx, kw)
    else:
        gen = generate(model, prompt, max_tokens=max_tokens, n_ctx=args.ctx, **kw)
    out = _Out(args.emoji_names)
    _stream(gen, out)
    if out.namer is not None:
        out._put(out.namer.flush())
    if sys.stdout.isatty():
        out.end()
    if not args.quiet:
        sys.stderr.write(gen.stats.summary() + "\n")
    return 130 if gen.stats.stop_reason == "interrupted" else 0


# ---- chat REPL ------------------------------------------------------------------------------------------------------
_HELP = """commands:
  /reset         forget the conversation
  /system TEXT   set the system prompt and start over (/system alone clears it)
  /stats         speed of the last reply
  /exit          quit (or Ctrl-D)
multi-line input: end a line with \\ to continue it, or wrap the text in \"\"\" ... \"\"\"
Ctrl-C stops a reply"""


def _read_message(read=input) -> str:
    """One user message: a line, lines joined by a trailing backslash, or a \"\"\" block. EOFError at Ctrl-D."""
    line = read(">>> ")
    if line.lstrip().startswith('"""'):
        body = line.lstrip()[3:]
        if body.rstrip().endswith('"""'):
            return body.rstrip()[:-3]
        lines = [body] if body else []
        while True:
            line = read("... ")
            if line.rstrip().endswith('"""'):
                last = line.rstrip()[:-3]
                return "\n".join(lines + [last] if last else lines)
            lines.append(line)
    lines = []
    while line.endswith("\\"):
        lines.append(line[:-1])
        line = read("... ")
    lines.append(line)
    return "\n".join(lines)


def _repl(model, args, system) -> int:
    from .generate import ChatSession

    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    session = ChatSession(model, system=system, n_ctx=args.ctx)
    kw = _sampling_kwargs(args)
    out = _Out(args.emoji_names)
    _info(f"chat with {_model_name(model)} (context {session.ctx.n_ctx} tokens); /help for commands, Ctrl-D to quit")
    while True:
        try:
            text = _read_message()
        except EOFError:
            sys.stdout.write("\n")
            return 0
        except KeyboardInterrupt:
            sys.stdout.write("\n(Ctrl-D or /exit to quit)\n")
            continue
        stripped = text.strip()
        if not stripped:
            continue
        if stripped.startswith("/"):
            cmd, _, rest = stripped.partition(" ")
            if cmd in ("/exit", "/quit"):
                return 0
            if cmd == "/reset":
                session.reset()
                _info("conversation cleared")
            elif cmd == "/system":
                session.reset(system=rest.strip() or None)
                _info("system prompt " + ("set" if rest.strip() else "cleared") + "; conversation cleared")
            elif cmd == "/stats":
                _info(session.last.stats.summary() if session.last is not None else "no reply yet")
            elif cmd == "/help":
                sys.stderr.write(_HELP + "\n")
            else:
                _say_error(f"unknown command {cmd} (try /help)")
            continue
        try:
            gen = session.send(text, max_tokens=args.max_tokens, **kw)
        except LlamaCxError as e:
            _say_error(str(e))
            continue
        _stream(gen, out)
        out.end()
        reason = gen.stats.stop_reason
        if reason == "interrupted":
            _info("[reply interrupted]")
        elif reason == "context_full":
            _info("[context full: /reset to start over]")


def cmd_chat(args) -> int:
    _sampling_kwargs(args)
    model = _load(args)
    return _repl(model, args, args.system)


def cmd_demo(args) -> int:
    from .demo import demo_model_path
    from .model import load

    _sampling_kwargs(args)
    path = demo_model_path(progress=sys.stderr)
    if args.prompt is None:
        model = load(path, huge_pages=args.huge_pages)
        return _repl(model, args, args.system)
    args.model, args.chat, args.system = path, True, args.system
    return cmd_generate(args)


# ---- info -----------------------------------------------------------------------------------------------------------
def _model_name(model) -> str:
    md = model.checkpoint.metadata
    name = md.get("general.name") if isinstance(md.get("general.name"), str) else None
    return name or model.checkpoint.name


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def _count(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} B"
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    return f"{n / 1e3:.1f} K" if n >= 1e3 else str(n)


def _token_label(tok, i) -> str:
    if i is None:
        return "none"
    try:
        piece = tok.decode([i])
        if not piece and tok.is_special(i):  # SentencePiece decodes control tokens to nothing
            piece = next(name for name, j in tok.special_tokens.items() if j == i)
    except Exception:  # a label only; never fail `info` over it
        piece = "?"
    return f"{piece!r} ({i})" if piece else str(i)


def _info_lines(model, tensors=False) -> List[str]:
    ck, c = model.checkpoint, model.config
    md = ck.metadata
    rows = []

    def row(k, v):
        rows.append(f"  {k:<18} {v}")

    rows.append(f"Model: {_model_name(model)}")
    row("path", ck.path)
    row("format", f"{ck.format} ({ck.description})" if ck.description else ck.format)
    row("file size", _size(ck.file_size))
    row("architecture", md.get("general.architecture", "llama"))
    n_params = sum(t.numel for t in ck.tensors.values())
    tied = "output.weight" not in ck.tensors
    row("parameters", f"{_count(n_params)} ({n_params:,})")
    row("dtype", f"{md.get('dtype', '?')}" + (f"  (tensor types: {_types(md['tensor_types'])})" if md.get("tensor_types") else ""))
    row("dim", c.dim)
    row("layers", c.n_layers)
    row("heads", f"{c.n_heads} (kv heads {c.n_kv_heads}, n_rep {c.n_rep})")
    row("head_dim", c.head_dim)
    row("hidden (FFN)", c.hidden_dim)
    row("vocab", c.vocab_size)
    row("norm eps", f"{c.norm_eps:g}")
    row("tied embeddings", "yes" if tied else "no")
    rope = f"theta {c.rope_theta:g}, scaled " + (
        f"yes (factor {c.rope_scale_factor:g}, low/high freq {c.rope_low_freq_factor:g}/{c.rope_high_freq_factor:g}, "
        f"original context {c.rope_original_context})" if c.use_scaled_rope else "no")
    row("rope", rope)
    row("max_seq_len", c.max_seq_len)
    wb = getattr(model, "weight_bytes_per_token", 0)
    if wb:
        parts = getattr(model, "weight_bytes_by_type", {})
        split = f" ({', '.join(f'{k} {_size(v)}' for k, v in parts.items())})" if len(parts) > 1 else ""
        row("weights/token", f"{_size(wb)} streamed per decoded token{split}")
    tok = model.tokenizer
    if tok is None:
        row("tokenizer", "none (token ids only)")
    else:
        kind = ck.tokenizer.description
        pre = f", pre-tokenizer {tok.pattern}" if tok.pattern is not None else ""  # SentencePiece has none
        row("tokenizer", f"{kind}, {tok.vocab_size} tokens{pre}, {'adds' if tok.add_bos else 'no'} bos")
        row("bos", _token_label(tok, getattr(tok, "bos_id", None)))
        row("eos", _token_label(tok, getattr(tok, "eos_id", None)))
        stops = sorted(getattr(tok, "stop_ids", ()) or ())
        row("stop tokens", ", ".join(_token_label(tok, i) for i in stops) or "none")
    row("chat template", _chat_kind(model.chat_format))
    for note in model.notes if hasattr(model, "notes") else ck.notes:
        row("note", note)
    if tensors:
        rows.append("")
        rows.append(f"  {'tensor':<40} {'dtype':<6} {'shape':<18} {'bytes':>12}")
        for name, t in ck.tensors.items():
            rows.append(f"  {name:<40} {t.dtype:<6} {'x'.join(map(str, t.shape)):<18} {t.nbytes:>12,}")
    return rows


def _chat_kind(fmt) -> str:
    if fmt is None:
        return "none (text completion only)"
    name = type(fmt).__name__
    if name == "ChatFormat":
        return "Llama 3 (<|start_header_id|>role<|end_header_id|> ... <|eot_id|>)"
    if name == "Llama2ChatFormat":
        return "Llama 2 ([INST] <<SYS>> system <</SYS>> user [/INST] answer </s>)"
    if name == "ChatMLFormat":
        default = getattr(fmt, "default_system", None)
        return "ChatML (<|im_start|>role ... <|im_end|>)" + (f", default system prompt {default!r}" if default else "")
    return name


def _types(counts: dict) -> str:
    return ", ".join(f"{k} x{v}" for k, v in counts.items())


def cmd_info(args) -> int:
    model = _load(args, demo_fallback=False, quiet=True)
    sys.stdout.write("\n".join(_info_lines(model, args.tensors)) + "\n")
    return 0


# ---- menu -------------------------------------------------------------------------------------------------------------
# (mode, system prompt, prompt): text completion prompts are continued; chat prompts go through the chat format.
MENU = [
    ("text", None, "The capital of France is"),
    ("text", None, "Once upon a time, in a small village by the sea,"),
    ("text", None, "Here is a Python function that returns the n-th Fibonacci number:\n\ndef fib(n):"),
    ("chat", "Always answer only with emojis.", "How do I get from Beijing to New York?"),
    ("chat", None, "Explain what a large language model is, in two sentences."),
    ("chat", "You are a friendly assistant who answers briefly.", "Write a haiku about a CPU doing math."),
]
_MODE_LABEL = {"text": "Text completion", "chat": "Chat mode"}


def _menu_text(has_chat: bool) -> str:
    lines = ["", "  0. Show model metadata"]
    for i, (mode, system, prompt) in enumerate(MENU, 1):
        shown = prompt.split("\n")[0] + (" ..." if "\n" in prompt else "")
        extra = f"  (system: {system})" if system else ""
        unavailable = "" if mode == "text" or has_chat else "  [no chat format]"
        lines.append(f"  {i}. [{_MODE_LABEL[mode]}] {shown}{extra}{unavailable}")
    n = len(MENU)
    lines.append(f"  {n + 1}. [Text completion] Other, manual input")
    lines.append(f"  {n + 2}. [Chat mode] Other, manual input" + ("" if has_chat else "  [no chat format]"))
    lines.append("  q. Quit")
    return "\n".join(lines) + "\n"


def _run_menu_item(model, args, mode, system, prompt) -> None:
    from .generate import generate

    kw = _sampling_kwargs(args)
    max_tokens = 256 if args.max_tokens is None else args.max_tokens
    if mode == "chat":
        gen = _one_shot_chat(model, system, prompt, max_tokens, args.ctx, kw)
    else:
        gen = generate(model, prompt, max_tokens=max_tokens, n_ctx=args.ctx, **kw)
    out = _Out(args.emoji_names)
    if mode == "text":
        out._put(prompt)  # a completion reads on from its prompt
    _stream(gen, out)
    out.end()
    sys.stderr.write(gen.stats.summary() + "\n")


def cmd_menu(args) -> int:
    _sampling_kwargs(args)
    model = _load(args, demo_fallback=False)
    has_chat = model.chat_format is not None
    c = model.config
    _info(f"{_model_name(model)}: {c.n_layers} layers, dim {c.dim}, vocab {c.vocab_size}, "
          f"{model.checkpoint.format}, {_size(model.checkpoint.file_size)}")
    n = len(MENU)
    while True:
        sys.stdout.write(_menu_text(has_chat))
        try:
            choice = input(f"Select 0-{n + 2} (q to quit): ").strip().lower()
        except EOFError:
            sys.stdout.write("\n")
            return 0
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            continue
        if choice in ("q", "quit", "exit"):
            return 0
        if not choice.isdigit() or not 0 <= int(choice) <= n + 2:
            _say_error(f"no menu item {choice!r}")
            continue
        k = int(choice)
        try:
            if k == 0:
                sys.stdout.write("\n".join(_info_lines(model)) + "\n")
                continue
            if k <= n:
                mode, system, prompt = MENU[k - 1]
            elif k == n + 1:
                mode, system, prompt = "text", None, input("Prompt: ")
            else:
                mode = "chat"
                if has_chat:
                    system = input("System prompt (empty for none): ").strip() or None
                    prompt = input("Message: ")
            if mode == "chat" and not has_chat:
                _say_error("this model has no chat format; choose a text completion")
                continue
            _run_menu_item(model, args, mode, system, prompt)
        except EOFError:
            sys.stdout.write("\n")
            continue
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            continue
        except LlamaCxError as e:
            _say_error(str(e))
