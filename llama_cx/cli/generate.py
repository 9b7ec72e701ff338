"""`llama-cx generate`, `chat` and `demo`: text streamed from a model, one-shot or as a conversation."""
from __future__ import annotations

import sys

from ..errors import LlamaCxError
from .common import (Out, check_ctx, load_model, max_tokens, model_name, prompted_input, read_prompt, sampling_kwargs,
                     say, say_error, stats_lines, stream)


# ---- generate -----------------------------------------------------------------------------------------------
def one_shot_chat(model, system, prompt, max_tokens, n_ctx, kw, stop=None):
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
    return ChatSession(model, system=system, n_ctx=n_ctx).send(prompt, max_tokens=max_tokens, stop=stop, **kw)


def _json_result(gen, model) -> str:
    import json
    from dataclasses import asdict

    st = gen.stats
    stats = dict(asdict(st), prefill_tok_s=st.prefill_tok_s, decode_tok_s=st.decode_tok_s,
                 effective_gb_s=st.effective_gb_s)
    return json.dumps({"model": model.checkpoint.path, "text": gen.text, "tokens": list(gen.tokens),
                       "stop_reason": st.stop_reason, "stats": stats}, ensure_ascii=False)


def cmd_generate(args) -> int:
    from ..generate import generate

    chat_defaults = getattr(args, "chat_defaults", False)  # the demo's one prompt: a chat reply
    sampling_kwargs(args, chat=chat_defaults)  # a bad flag fails before the model loads
    prompt = read_prompt(args)
    model = load_model(args, quiet=args.quiet or args.json)
    check_ctx(args, model)
    kw = sampling_kwargs(args, model, chat=chat_defaults)
    n = max_tokens(args, chat=chat_defaults)
    if args.chat or args.system is not None:
        gen = one_shot_chat(model, args.system, prompt, n, args.ctx, kw, stop=args.stop)
    else:
        gen = generate(model, prompt, max_tokens=n, n_ctx=args.ctx, stop=args.stop, **kw)
    if args.json:
        try:
            gen.read()
        except KeyboardInterrupt:
            gen.close()
        sys.stdout.write(_json_result(gen, model) + "\n")
    else:
        out = Out(args.emoji_names)
        stream(gen, out)
        out.end()  # piped output ends with a newline too
    if not args.quiet and not args.json:
        sys.stderr.write("\n".join(stats_lines(gen.stats)) + "\n")
    return 130 if gen.stats.stop_reason == "interrupted" else 0


# ---- chat ---------------------------------------------------------------------------------------------------
_HELP = """commands:
  /reset         forget the conversation
  /system TEXT   set the system prompt and start over (/system alone clears it)
  /stats         speed of the last reply
  /exit          quit (or Ctrl-D)
multi-line input: end a line with \\ to continue it, or wrap the text in \"\"\" ... \"\"\"
Ctrl-C stops a reply"""


def read_message(read=prompted_input) -> str:
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
    check_ctx(args, model)
    shift = getattr(args, "context_shift", True)
    session = ChatSession(model, system=system, n_ctx=args.ctx, drop_oldest=shift)
    kw = sampling_kwargs(args, model, chat=True)
    n = max_tokens(args, chat=True)
    out = Out(args.emoji_names)
    interactive = sys.stdin.isatty()
    if interactive:
        say(f"chat with {model_name(model)} (context {session.ctx.n_ctx} tokens, replies up to {n} tokens); "
            f"/help for commands, Ctrl-D to quit")
    while True:
        try:
            text = read_message()
        except EOFError:
            if interactive:
                sys.stderr.write("\n")
            return 0
        except KeyboardInterrupt:
            sys.stderr.write("\n(Ctrl-D or /exit to quit)\n")
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
            gen = session.send(text, max_tokens=n, stop=args.stop, **kw)
        except LlamaCxError as e:
            say_error(str(e))
            continue
        if session.dropped:
            say(f"[context full: dropped the oldest {session.dropped} exchange"
                f"{'s' if session.dropped != 1 else ''}; the system prompt is kept]")
        stream(gen, out)
        out.end()
        reason = gen.stats.stop_reason
        if reason == "interrupted":
            say("[reply interrupted]")
        elif reason == "context_full":
            say("[context full: the next message drops the oldest exchanges]" if shift else
                "[context full: /reset to start over]")
        elif reason == "max_tokens":
            say(f"[reply cut at {n} tokens (-n)]")
        starved = stats_lines(gen.stats)[1:]
        if starved:
            sys.stderr.write(starved[0] + "\n")


def cmd_chat(args) -> int:
    sampling_kwargs(args, chat=True)
    model = load_model(args)
    return repl(model, args, args.system)


# ---- demo ---------------------------------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from ..demo import demo_model_path
    from ..model import load

    sampling_kwargs(args, chat=True)
    path = demo_model_path(progress=sys.stderr)
    if args.prompt is None:
        model = load(path, huge_pages=args.huge_pages, kv_dtype=args.kv_dtype)
        return repl(model, args, args.system)
    args.model, args.chat, args.system, args.chat_defaults = path, True, args.system, True
    return cmd_generate(args)
