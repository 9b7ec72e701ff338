"""`llama-cx perplexity`: llama.cpp's perplexity (tools/perplexity/perplexity.cpp, `perplexity()`), so numbers
can be set side by side with the ones people quote for llama.cpp.

The method: tokenize the whole text (BOS first when the tokenizer adds one), cut it into chunks of n_ctx tokens
(the tail that does not fill a chunk is dropped), run each chunk from an empty cache with its first token
replaced by BOS, and score only the second half of each chunk: the logits at positions n_ctx/2 .. n_ctx-2
predict the tokens after them, so every scored token has at least n_ctx/2 tokens of context.
PPL = exp(mean negative log-likelihood); its standard error is llama.cpp's: sqrt(var(nll) / (count - 1)) * PPL.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from .errors import InvalidArgumentError


@dataclass
class PerplexityResult:
    ppl: float
    stderr: float  # standard error of ppl (llama.cpp's "+/-")
    n_tokens: int  # tokens the text tokenized to
    n_chunks: int
    n_ctx: int
    n_scored: int  # predictions averaged: n_chunks * (n_ctx - n_ctx // 2 - 1)
    chunk_ppl: List[float] = field(default_factory=list)  # running PPL after each chunk (llama.cpp's [i]x.xxxx)

    def __str__(self) -> str:
        return f"PPL = {self.ppl:.4f} +/- {self.stderr:.5f}"


def perplexity(model, text: str, n_ctx: int = 512,
               progress: Optional[Callable[[int, int, float], None]] = None,
               n_batch: Optional[int] = None) -> PerplexityResult:
    """Perplexity of `model` (a llama_cx.Model or a path to load) on `text` with chunks of n_ctx tokens.
    progress(done, total, running ppl) is called after each chunk (and once with done=0 before the first).
    n_batch: tokens per compiled forward call within a chunk (default llama_cx.model.PREFILL_BLOCK); the result
    does not depend on it beyond float rounding."""
    from . import _kernels
    from .model import PREFILL_BLOCK, Context, Model, load

    if not isinstance(model, Model):
        model = load(model)
    if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 4:
        raise InvalidArgumentError(f"n_ctx must be an integer of at least 4, got {n_ctx!r}")
    tok = model.require_tokenizer()
    add_bos = bool(getattr(tok, "add_bos", True)) and tok.bos_id is not None
    tokens = tok.encode(text, bos=add_bos)
    if len(tokens) < 2 * n_ctx:
        raise InvalidArgumentError(
            f"the text tokenizes to {len(tokens)} tokens; perplexity with a context of {n_ctx} needs at least "
            f"{2 * n_ctx} (use a longer text or a smaller --ctx)")
    n_chunk = len(tokens) // n_ctx
    first = n_ctx // 2
    vocab = model.config.vocab_size
    if n_batch is not None and (isinstance(n_batch, bool) or not isinstance(n_batch, int) or n_batch < 1):
        raise InvalidArgumentError(f"n_batch must be a positive integer, got {n_batch!r}")
    ctx = Context(model, n_ctx, prefill_block=n_batch or PREFILL_BLOCK)
    nll = nll2 = 0.0
    count = 0
    running: List[float] = []
    if progress is not None:
        progress(0, n_chunk, float("nan"))
    for i in range(n_chunk):
        chunk = tokens[i * n_ctx:(i + 1) * n_ctx]
        if add_bos:
            chunk[0] = tok.bos_id
        ctx.reset()
        logits = ctx.forward(chunk, all_logits=True)  # (n_ctx, vocab)
        scored = logits.cast("B")[first * vocab * 4:(n_ctx - 1) * vocab * 4]
        # targets are the text's own tokens (not the BOS that replaced a chunk's first)
        targets = tokens[i * n_ctx + first + 1:(i + 1) * n_ctx]
        for v in _kernels.nll_rows(scored, n_ctx - 1 - first, vocab, targets):
            nll += v
            nll2 += v * v
        count += n_ctx - 1 - first
        running.append(math.exp(nll / count))
        if progress is not None:
            progress(i + 1, n_chunk, running[-1])
    mean = nll / count
    ppl = math.exp(mean)
    var = nll2 / count - mean * mean
    err = math.sqrt(var / (count - 1)) * ppl if var > 0 and count > 1 else 0.0
    return PerplexityResult(ppl, err, len(tokens), n_chunk, n_ctx, count, running)


def progress_bar(stream=None) -> Callable[[int, int, float], None]:
    """A progress(done, total, ppl) callback drawing `[#####.....] 3/10 chunks  PPL 12.3456` on stream (stderr)."""
    stream = stream or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()

    def show(done: int, total: int, ppl: float) -> None:
        width = 30
        fill = width * done // max(total, 1)
        shown = f"  PPL {ppl:.4f}" if done else ""
        line = f"[{'#' * fill}{'.' * (width - fill)}] {done}/{total} chunks{shown}"
        if tty:
            stream.write("\r" + line)
            if done == total:
                stream.write("\n")
        elif done == total:
            stream.write(line + "\n")
        stream.flush()

    return show
