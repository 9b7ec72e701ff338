"""`llama-cx generate`, `chat` and `demo`: text streamed from a model, one-shot or as a conversation."""
from __future__ import annotations

import sys

from .. import defaults
from ..errors import LlamaCxError
from .common import Out, load_model, model_name, read_prompt, sampling_kwargs, say, say_error, stream


# ---- generate -----------------------------------------------------------------------------------------------
def one_shot_chat(model, system, prompt, max_tokens, n_ctx, kw):
    """A one-message chat; its context is just big enough (unless --ctx), as generate() does for text."""
    from ..generate import ChatSession

    if model.chat_format is None:
        model.require_tokenizer()
        raise LlamaCxError(f"{model.checkpoint.path}: the model has no chat format (drop --chat)")
    if n_ctx is None:
        msgs = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": prompt}]
        default = model.config.default_context
        n_ctx = max(1, min(default, len(model.chat_format.encode_dialog(msgs)) + max_tokens + 1))
    return ChatSession(model, system=system, n_ctx=n_ctx).send(prompt, max_tokens=max_tokens, **kw)


def cmd_generate(args) -> int:
    from ..generate import generate

    kw = sampling_kwargs(args)
    prompt = read_prompt(args.prompt)
    model = load_model(args, quiet=args.quiet)
    max_tokens = defaults.MAX_TOKENS if args.max_tokens is None else args.max_tokens
    if args.chat or args.system is not None:
        gen = one_shot_chat(model, args.system, prompt, max_tokens, args.ctx, kw)
    else:
        gen = generate(model, prompt, max_tokens=max_tokens, n_ctx=args.ctx, **kw)
    out = Out(args.emoji_names)
    stream(gen, out)
    if out.namer is not None:
        out._put(out.namer.flush())
    if sys.stdout.isatty():
        out.end()
    if not args.quiet:
        sys.stderr.write(gen.stats.summary() + "\n")
    return 130 if gen.stats.stop_reason == "interrupted" else 0


# ---- chat ---------------------------------------------------------------------------------------------------
_HELP = """commands:
  /reset         forget the conversation
  /system TEXT   set the system prompt and start over (/system alone clears it)
  /stats         speed of the last reply
  /exit          quit (or Ctrl-D)
multi-line input: end a line with \\ to continue it, or wrap the text in \"\"\" ... \"\"\"
Ctrl-C stops a reply"""


def read_message(read=input) -> str:
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


def repl(model, args, system) -> int:
    from ..generate import ChatSession

    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    session = ChatSession(model, system=system, n_ctx=args.ctx)
    kw = sampling_kwargs(args)
    out = Out(args.emoji_names)
    say(f"chat with {model_name(model)} (context {session.ctx.n_ctx} tokens); /help for commands, Ctrl-D to quit")
    while True:
        try:
            text = read_message()
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
                say("conversation cleared")
            elif cmd == "/system":
                session.reset(system=rest.strip() or None)
                say("system prompt " + ("set" if rest.strip() else "cleared") + "; conversation cleared")
            elif cmd == "/stats":
                say(session.last.stats.summary() if session.last is not None else "no reply yet")
            elif cmd == "/help":
                sys.stderr.write(_HELP + "\n")
            else:
                say_error(f"unknown command {cmd} (try /help)")
            continue
        try:
            gen = session.send(text, max_tokens=args.max_tokens, **kw)
        except LlamaCxError as e:
            say_error(str(e))
            continue
        stream(gen, out)
        out.end()
        reason = gen.stats.stop_reason
        if reason == "interrupted":
            say("[reply interrupted]")
        elif reason == "context_full":
            say("[context full: /reset to start over]")


def cmd_chat(args) -> int:
    sampling_kwargs(args)
    model = load_model(args)
    return repl(model, args, args.system)


# ---- demo ---------------------------------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from ..demo import demo_model_path
    from ..model import load

    sampling_kwargs(args)
    path = demo_model_path(progress=sys.stderr)
    if args.prompt is None:
        model = load(path, huge_pages=args.huge_pages)
        return repl(model, args, args.system)
    args.model, args.chat, args.system = path, True, args.system
    return cmd_generate(args)
