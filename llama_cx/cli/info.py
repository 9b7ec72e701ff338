"""`llama-cx info` (what a checkpoint holds, as its format record tells) and the interactive menu (no command)."""
from __future__ import annotations

import sys
from typing import List

from .. import defaults
from .._text import show
from ..errors import LlamaCxError
from .common import (Out, check_ctx, human_size, load_model, max_tokens, model_name, model_path, prompted_input,
                     sampling_kwargs, say, say_error, stats_lines, stream)
from .generate import one_shot_chat


# ---- info ---------------------------------------------------------------------------------------------------
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
    """The `info` report; every line goes through show() (names from the file may hold any bytes)."""
    return [show(r) for r in _info_rows(model, tensors)]


def _info_rows(model, tensors=False) -> List[str]:
    ck, c = model.checkpoint, model.config
    md = ck.metadata
    rows = []

    def row(k, v):
        rows.append(f"  {k:<18} {v}")

    rows.append(f"Model: {model_name(model)}")
    row("path", ck.path)
    row("format", f"{ck.format} ({ck.format_description})" if ck.format_description else ck.format)
    row("file size", human_size(ck.file_size))
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
        split = f" ({', '.join(f'{k} {human_size(v)}' for k, v in parts.items())})" if len(parts) > 1 else ""
        row("weights/token", f"{human_size(wb)} streamed per decoded token{split}")
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
    for note in model.notes:
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


class ModelInfo:
    """A checkpoint opened for its description only (open_checkpoint(weights=False): nothing dequantized, joined
    or copied, no compiled model built), with the attributes of a Model that _info_lines reads. `info` on the
    98 MB demo GGUF peaks far below the ~400 MB a full load takes (its Q4_1 weights become bf16)."""

    def __init__(self, path: str):
        from ..formats import open_checkpoint
        from ..model import tokenizer_and_chat_format, weight_bytes_by_type

        self.checkpoint = open_checkpoint(path, weights=False)
        self.config = self.checkpoint.config
        self.tokenizer, self.chat_format, notes = tokenizer_and_chat_format(self.checkpoint)
        self.notes = list(self.checkpoint.notes) + notes
        self.weight_bytes_by_type = weight_bytes_by_type(self.checkpoint.tensors)
        self.weight_bytes_per_token = sum(self.weight_bytes_by_type.values())


def cmd_info(args) -> int:
    model = ModelInfo(model_path(args, demo_fallback=False))  # header and metadata only
    sys.stdout.write("\n".join(_info_lines(model, args.tensors)) + "\n")
    return 0


# ---- menu ---------------------------------------------------------------------------------------------------
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
    from ..generate import generate

    kw = sampling_kwargs(args, model)
    n = max_tokens(args)
    if mode == "chat":
        gen = one_shot_chat(model, system, prompt, n, args.ctx, kw, stop=args.stop)
    else:
        gen = generate(model, prompt, max_tokens=n, n_ctx=args.ctx, stop=args.stop, **kw)
    out = Out(args.emoji_names)
    if mode == "text":
        out._put(prompt)  # a completion reads on from its prompt
    stream(gen, out)
    out.end()
    sys.stderr.write("\n".join(stats_lines(gen.stats)) + "\n")


def cmd_menu(args) -> int:
    sampling_kwargs(args)
    model = load_model(args, demo_fallback=False)
    check_ctx(args, model)
    has_chat = model.chat_format is not None
    c = model.config
    say(f"{model_name(model)}: {c.n_layers} layers, dim {c.dim}, vocab {c.vocab_size}, "
        f"{model.checkpoint.format}, {human_size(model.checkpoint.file_size)}")
    n = len(MENU)
    while True:
        sys.stdout.write(_menu_text(has_chat))
        try:
            choice = prompted_input(f"Select 0-{n + 2} (q to quit): ").strip().lower()
        except EOFError:
            sys.stdout.write("\n")
            return 0
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            continue
        if choice in ("q", "quit", "exit"):
            return 0
        if not choice.isdigit() or not 0 <= int(choice) <= n + 2:
            say_error(f"no menu item {choice!r}")
            continue
        k = int(choice)
        try:
            if k == 0:
                sys.stdout.write("\n".join(_info_lines(model)) + "\n")
                continue
            if k <= n:
                mode, system, prompt = MENU[k - 1]
            elif k == n + 1:
                mode, system, prompt = "text", None, prompted_input("Prompt: ")
            else:
                mode = "chat"
                if has_chat:
                    system = prompted_input("System prompt (empty for none): ").strip() or None
                    prompt = prompted_input("Message: ")
            if mode == "chat" and not has_chat:
                say_error("this model has no chat format; choose a text completion")
                continue
            _run_menu_item(model, args, mode, system, prompt)
        except EOFError:
            sys.stdout.write("\n")
            continue
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            continue
        except LlamaCxError as e:
            say_error(str(e))
