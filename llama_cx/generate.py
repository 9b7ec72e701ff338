"""The generation loop: prompt -> prefill -> (sample, emit, decode one token)* -> stop; and chat sessions.

    for chunk in generate(model, "The capital of France is", max_tokens=32, temperature=0):
        print(chunk, end="", flush=True)

`generate` checks every argument before any work and returns a `Generation`: an iterator of text chunks
as they are produced (UTF-8 safe: the tokenizer's streaming decoder holds back the bytes of a
character split over tokens) that fills `.stats` as it goes. It ends on a stop token, a stop string
(never emitting text from the stop string on), max_tokens, a full context, or Ctrl-C.

The context (KV cache) is the model's `Context`; `ctx.tokens` is the truth about what the cache holds,
so a Ctrl-C that lands anywhere leaves it consistent: a token whose forward pass was cut short is
simply not in `ctx.tokens`, and the next prompt reuses the longest cached prefix it agrees with.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence, Union

from . import defaults
from .errors import ContextLengthError, InvalidArgumentError, LlamaCxError
from .sampling import Sampler, SamplingParams

STOP_REASONS = ("stop_token", "stop_string", "max_tokens", "context_full", "interrupted")


# ---- stats ---------------------------------------------------------------------------------------
@dataclass
class GenerationStats:
    prompt_tokens: int = 0          # tokens of the prompt, including those already in the cache
    prefilled_tokens: int = 0       # prompt tokens computed by this call (the rest came from the cache)
    generated_tokens: int = 0       # tokens sampled (a stop token included)
    time_to_first_token: float = 0.0  # s, from the start of work to the first sampled token
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0     # s, from the first sampled token to the last
    stop_reason: str = ""           # one of STOP_REASONS once finished
    seed: Optional[int] = None      # the sampler's seed (None when greedy: no randomness involved)
    weight_bytes_per_token: int = 0
    cpu_share: Optional[float] = None  # of the CPU time the decode's threads asked for, the part they got (Linux)
    decode_threads: int = 0         # kernel threads of the last decode step

    @property
    def prefill_tok_s(self) -> float:
        return self.prefilled_tokens / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tok_s(self) -> float:
        """Decode rate: tokens after the first one (each needed one forward pass) per second."""
        steps = self.generated_tokens - 1
        return steps / self.decode_seconds if steps > 0 and self.decode_seconds > 0 else 0.0

    @property
    def effective_gb_s(self) -> float:
        """Weight bytes streamed per second while decoding (weight_bytes_per_token x decode tok/s)."""
        return self.weight_bytes_per_token * self.decode_tok_s / 1e9

    def summary(self) -> str:
        """One line for stderr."""
        cached = self.prompt_tokens - self.prefilled_tokens
        prompt = f"prompt {self.prompt_tokens} tok" + (f" ({cached} cached)" if cached else "")
        return (
            f"{prompt}, prefill {self.prefill_tok_s:.1f} tok/s | generated {self.generated_tokens} tok, "
            f"decode {self.decode_tok_s:.2f} tok/s, {self.effective_gb_s:.2f} GB/s | "
            f"first token {self.time_to_first_token:.2f} s | stop: {self.stop_reason or 'running'}"
            + (f" | seed {self.seed}" if self.seed is not None else "")
            + (f" | starved: {self.cpu_share:.0%} CPU share" if self.starved else "")
        )

    @property
    def starved(self) -> bool:
        """Other processes kept the decode from the CPUs it asked for (see llama_cx/_threads.py)."""
        from ._threads import STARVED_SHARE

        return self.cpu_share is not None and self.cpu_share < STARVED_SHARE


# ---- argument checks -------------------------------------------------------------------------------
def _check_int(name, v, lo=None):
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidArgumentError(f"{name} must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise InvalidArgumentError(f"{name} must be >= {lo}, got {v}")
    return v


def _check_stop(stop) -> List[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    try:
        stop = list(stop)
    except TypeError:
        raise InvalidArgumentError(f"stop must be a string or a list of strings, got {stop!r}") from None
    for s in stop:
        if not isinstance(s, str) or not s:
            raise InvalidArgumentError(f"stop strings must be non-empty strings, got {s!r}")
    return stop


def _check_n_ctx(model, n_ctx):
    return None if n_ctx is None else model.config.check_context(n_ctx)


def _prompt_ids(model, prompt, add_bos) -> List[int]:
    """Token ids of `prompt` (text gets BOS when the tokenizer asks for it), each checked against the vocab."""
    if isinstance(prompt, str):
        tok = model.require_tokenizer()
        if add_bos is None:
            add_bos = tok.add_bos
        ids = tok.encode(prompt, bos=bool(add_bos))
    else:
        if isinstance(prompt, (bytes, bytearray)):
            raise InvalidArgumentError("prompt must be a string or a list of token ids, got bytes")
        try:
            ids = list(prompt)
        except TypeError:
            raise InvalidArgumentError(f"prompt must be a string or a list of token ids, got {type(prompt).__name__}") from None
        vocab = model.config.vocab_size
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < vocab:
                raise InvalidArgumentError(f"prompt token ids must be integers in [0, {vocab}), got {i!r}")
    if not ids:
        raise InvalidArgumentError("prompt is empty (no tokens)")
    return ids


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _held_back(text: str, stops: List[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


# ---- the loop ------------------------------------------------------------------------------------------
class Generation:
    """One generation in progress: iterate for text chunks (or token ids when made by generate_tokens).

    .stats     GenerationStats, complete once iteration has ended
    .tokens    ids sampled so far (a final stop token included)
    .text      text emitted so far
    .close()   stop early (stop reason 'interrupted' unless already finished)
    """

    def __init__(self, model, prompt_ids: List[int], params: SamplingParams, max_tokens: Optional[int],
                 stop: List[str], stop_ids, ctx, as_text: bool,
                 on_finish: Optional[Callable[["Generation"], None]] = None, continues: bool = False):
        self.model = model
        self.prompt_ids = prompt_ids
        self.params = params
        self.max_tokens = max_tokens
        self.stop = stop
        self.stop_ids = frozenset(stop_ids)
        self.ctx = ctx
        self.as_text = as_text
        # the reply continues the prompt's text (a completion: SentencePiece keeps its first leading space),
        # or stands alone (a chat reply, decoded as Meta's generation.py decodes it)
        self.continues = continues
        self.tokens: List[int] = []
        self.text = ""
        self.finished = False
        self._on_finish = on_finish
        self._sampler = Sampler(params, model.config.vocab_size)
        self.stats = GenerationStats(prompt_tokens=len(prompt_ids),
                                     seed=None if params.greedy else self._sampler.seed,
                                     weight_bytes_per_token=getattr(model, "weight_bytes_per_token", 0))
        self._cpu = None  # CpuShare from the first sampled token on
        self._steps = self._run()

    def __iter__(self):
        return self

    def __next__(self):
        if self.finished:
            raise StopIteration
        try:
            return next(self._steps)
        except KeyboardInterrupt:
            self._finish("interrupted")
            raise StopIteration from None
        except StopIteration:
            self._finish(self.stats.stop_reason or "max_tokens")
            raise
        except BaseException:
            self._finish("error")
            raise

    def close(self) -> None:
        """Stop now; the context keeps what it holds (consistently), stats say 'interrupted'."""
        if not self.finished:
            self._steps.close()
            self._finish("interrupted")

    def read(self) -> str:
        """Run to the end; the whole text emitted (text generations only)."""
        for _ in self:
            pass
        return self.text

    def _finish(self, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        if self._cpu is not None:
            from .runtime import adaptive_threads, get_num_threads

            # a few milliseconds say nothing about a share of the CPUs
            long_enough = self.stats.decode_seconds >= 0.2 and self.stats.generated_tokens >= 8
            self.stats.cpu_share = self._cpu.share() if long_enough else None
            tuner = getattr(self.model, "decode_threads", None)
            self.stats.decode_threads = tuner.current if tuner is not None and adaptive_threads() else get_num_threads()
        if not self.stats.stop_reason or reason == "interrupted":
            self.stats.stop_reason = reason
        if self._on_finish is not None:
            self._on_finish(self)

    def _run(self):
        """The loop proper, as a Python generator; yields text chunks (or ids), sets stats.stop_reason."""
        ctx, st, ids = self.ctx, self.stats, self.prompt_ids
        sampler = self._sampler
        t_start = time.perf_counter()
        if self.max_tokens == 0:
            st.stop_reason = "max_tokens"
            return

        # Prefill: reuse the longest prefix the cache already holds; at least two tokens are computed (one for
        # its logits, and a one-token call would take the decode path, whose products round differently, e.g.
        # quantized activations for block-quantized weights: a replayed prompt would not replay its logits).
        keep = _common_prefix(ctx.tokens, ids)
        keep = min(keep, max(len(ids) - 2, 0))
        if keep < ctx.pos:
            ctx.rewind(keep)
        st.prefilled_tokens = len(ids) - keep
        logits = ctx.forward(ids[keep:])
        st.prefill_seconds = time.perf_counter() - t_start

        decoder = None
        if self.as_text:
            tok = self.model.tokenizer
            decoder = tok.stream_decoder(continues=self.continues and any(i != tok.bos_id for i in ids))
        # what the repeat penalty looks at; never the stop tokens: a chat prompt holds the end-of-turn token
        # after every message, and penalising it makes replies run on
        history = [i for i in ids if i not in self.stop_ids]
        pending = ""         # decoded text held back: it could be the start of a stop string
        t_first = None
        while True:
            tok = sampler.sample(logits, history)
            self.tokens.append(tok)
            history.append(tok)
            st.generated_tokens += 1
            now = time.perf_counter()
            if t_first is None:
                t_first = now
                st.time_to_first_token = now - t_start
                from ._threads import CpuShare

                self._cpu = CpuShare()
            st.decode_seconds = now - t_first

            if tok in self.stop_ids:
                st.stop_reason = "stop_token"
                break
            if self.as_text:
                text = pending + decoder.feed(tok)
                if self.stop:
                    cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
                    if cut >= 0:
                        if cut:
                            self.text += text[:cut]
                            yield text[:cut]
                        st.stop_reason = "stop_string"
                        return
                    hold = _held_back(text, self.stop)
                    text, pending = text[: len(text) - hold], text[len(text) - hold:]
                if text:
                    self.text += text
                    yield text
            else:
                yield tok

            if self.max_tokens is not None and st.generated_tokens >= self.max_tokens:
                st.stop_reason = "max_tokens"
                break
            if ctx.pos >= ctx.n_ctx:
                st.stop_reason = "context_full"
                break
            logits = ctx.forward([tok])

        if self.as_text:
            rest = pending + decoder.flush()  # an incomplete UTF-8 tail becomes U+FFFD
            if rest:
                self.text += rest
                yield rest


def _stop_ids(model, stop_ids):
    if stop_ids is not None:
        return set(stop_ids)
    tok = getattr(model, "tokenizer", None)
    return set(tok.stop_ids) if tok is not None else set()


def _prepare(model, prompt, *, max_tokens=defaults.MAX_TOKENS, temperature=defaults.TEMPERATURE, top_k=defaults.TOP_K,
             top_p=defaults.TOP_P, min_p=defaults.MIN_P, repeat_penalty=defaults.REPEAT_PENALTY,
             repeat_last_n=defaults.REPEAT_LAST_N, seed=None, stop=None, stop_ids=None, add_bos=None,
             n_ctx=None, ctx=None, as_text=True, on_finish=None, continues=False) -> Generation:
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                            repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n, seed=seed)
    if max_tokens is not None:
        _check_int("max_tokens", max_tokens, 0)
    stop = _check_stop(stop)
    if as_text or stop:
        model.require_tokenizer()
    n_ctx = _check_n_ctx(model, n_ctx)
    ids = _prompt_ids(model, prompt, add_bos)
    if ctx is not None:
        if n_ctx is not None and n_ctx != ctx.n_ctx:
            raise InvalidArgumentError(f"n_ctx {n_ctx} disagrees with the given context's {ctx.n_ctx}")
        n_ctx = ctx.n_ctx
    if n_ctx is None:
        # A context just big enough (a KV cache for the model's full window can be gigabytes).
        default = model.config.default_context
        n_ctx = default if max_tokens is None else max(1, min(default, len(ids) + max_tokens))
        if len(ids) > default:
            raise ContextLengthError(f"prompt has {len(ids)} tokens but the context holds {default}")
    if len(ids) > n_ctx:
        raise ContextLengthError(f"prompt has {len(ids)} tokens but the context holds {n_ctx}")
    if ctx is None:
        ctx = model.new_context(n_ctx)
    return Generation(model, ids, params, max_tokens, stop, _stop_ids(model, stop_ids), ctx, as_text, on_finish,
                      continues)


def generate(model, prompt: Union[str, Sequence[int]], *, max_tokens: Optional[int] = defaults.MAX_TOKENS,
             temperature: float = defaults.TEMPERATURE, top_k: int = defaults.TOP_K, top_p: float = defaults.TOP_P,
             min_p: float = defaults.MIN_P, repeat_penalty: float = defaults.REPEAT_PENALTY,
             repeat_last_n: int = defaults.REPEAT_LAST_N, seed: Optional[int] = None,
             stop: Union[None, str, Iterable[str]] = None, stop_ids: Optional[Iterable[int]] = None,
             add_bos: Optional[bool] = None, n_ctx: Optional[int] = None, ctx=None) -> Generation:
    """Stream text generated after `prompt` (a string, or a list of token ids): the text that continues it
    (with a SentencePiece tokenizer, a first word keeps its space: prompt + text reads right).

    max_tokens=None runs until a stop or a full context. temperature 0 = greedy. stop_ids defaults to the
    tokenizer's stop tokens. add_bos defaults to what the tokenizer says (Llama 3: <|begin_of_text|>).
    ctx: a Context to run in (its cached prefix is reused); default a fresh one of n_ctx positions
    (default: just enough for prompt + max_tokens, at most model.config.default_context).
    Every argument is checked here, before any work: InvalidArgumentError / ContextLengthError.
    """
    return _prepare(model, prompt, max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                    min_p=min_p, repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n, seed=seed, stop=stop,
                    stop_ids=stop_ids, add_bos=add_bos, n_ctx=n_ctx, ctx=ctx, as_text=True, continues=True)


def generate_tokens(model, prompt: Union[str, Sequence[int]], **kwargs) -> Generation:
    """Like `generate`, but the iterator yields token ids (works for models without a tokenizer)."""
    if kwargs.get("stop"):
        raise InvalidArgumentError("stop strings need text: use generate()")
    return _prepare(model, prompt, as_text=False, **kwargs)


# ---- chat --------------------------------------------------------------------------------------------
class ChatSession:
    """A conversation with its own context. Each turn prefills only the tokens the cache lacks.

        chat = ChatSession(model, system="Answer briefly.")
        for chunk in chat.send("Hi!"):
            print(chunk, end="")
        chat.messages      # [{"role": "user", ...}, {"role": "assistant", ...}]

    The conversation as tokens (`tokens()`) is built the way the chat format feeds a cache turn by turn:
    encode_dialog(system + first user message), the reply as the ids that were sampled, the format's
    end-of-turn id, encode_turn(next user message), ... The end-of-turn id is fed to the cache as soon as a
    reply ends, so between turns the cache holds the whole conversation, and a turn prefills only its own
    message and the assistant header. Whatever happens (Ctrl-C, an error), the next turn reuses the longest
    prefix the cache agrees with and recomputes the rest: the cache is never silently wrong.
    When a turn would not fit the context: ContextLengthError, or with drop_oldest=True the oldest exchanges
    are dropped (the system prompt is kept; `dropped` says how many, for the turn just sent) so that the
    message and room for a reply (max_tokens, at most half the context) fit, and the rest is re-prefilled.
    """

    def __init__(self, model, system: Optional[str] = None, n_ctx: Optional[int] = None, drop_oldest: bool = False,
                 **sampling):
        if getattr(model, "chat_format", None) is None:
            model.require_tokenizer()
            raise LlamaCxError(f"{model.checkpoint.path}: the model has no chat format")
        _check_system(system)
        n_ctx = _check_n_ctx(model, n_ctx)
        _sampling_params(sampling)  # check the defaults now, not at the first turn
        self.sampling = dict(sampling)
        self.model = model
        self.format = model.chat_format
        self.system = system
        self.drop_oldest = bool(drop_oldest)
        self.ctx = model.new_context(n_ctx)
        self._exchanges: List[list] = []  # [user text, reply ids or None while streaming, reply text]
        self.dropped = 0  # exchanges dropped to make room for the latest message (drop_oldest)
        self.last: Optional[Generation] = None  # the latest reply (its .stats)

    @property
    def messages(self) -> List[dict]:
        """The conversation: system (if any), then user / assistant messages."""
        out = [{"role": "system", "content": self.system}] if self.system is not None else []
        for user, ids, text in self._exchanges:
            out.append({"role": "user", "content": user})
            if ids is not None:
                out.append({"role": "assistant", "content": text})
        return out

    def tokens(self, exchanges=None, next_user: Optional[str] = None) -> List[int]:
        """The conversation in chat format, as the cache should hold it; with next_user, the prompt of that turn."""
        fmt = self.format
        system = [{"role": "system", "content": self.system}] if self.system is not None else []
        turns = [(u, ids) for u, ids, _ in (self._exchanges if exchanges is None else exchanges)]
        if next_user is not None:
            turns.append((next_user, None))
        if not turns:
            return fmt.encode_dialog(system, add_generation_prompt=False)
        out: List[int] = []
        for i, (user, ids) in enumerate(turns):
            msg = {"role": "user", "content": user}
            out += fmt.encode_dialog(system + [msg]) if i == 0 else fmt.encode_turn([msg])
            if ids is not None:
                out += ids + [fmt.end_of_turn_id]
        return out

    def send(self, text: str, *, max_tokens: Optional[int] = None, stop=None, **sampling) -> Generation:
        """Add the user's message and stream the assistant's reply (recorded when the stream ends)."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f"message must be a string, got {type(text).__name__}")
        self._finish_previous()
        kwargs = dict(self.sampling, **sampling)
        _sampling_params(kwargs)
        if max_tokens is not None:
            _check_int("max_tokens", max_tokens, 0)
        stop = _check_stop(stop)
        prompt = self.tokens(next_user=text)
        n_ctx = self.ctx.n_ctx
        # one position at least must be left for the reply; when dropping turns, room for a whole reply
        room = max(1, min(max_tokens or n_ctx, n_ctx // 2)) if self.drop_oldest else 1
        dropped = 0
        while len(prompt) + room > n_ctx:
            if self.drop_oldest and dropped < len(self._exchanges):
                dropped += 1
                prompt = self.tokens(self._exchanges[dropped:], next_user=text)
                continue
            if len(prompt) < n_ctx:
                break  # nothing left to drop: a reply shorter than `room` still fits
            what = "the message alone" if dropped == len(self._exchanges) else "the conversation"
            raise ContextLengthError(
                f"{what} needs {len(prompt) + 1} of {n_ctx} context tokens"
                + ("" if what == "the message alone" else
                   "; reset it, use a larger context, or let the oldest turns go (ChatSession(drop_oldest=True), "
                   "the CLI's default)"))
        del self._exchanges[:dropped]
        self.dropped = dropped
        self._exchanges.append([text, None, ""])
        self.last = _prepare(self.model, prompt, max_tokens=max_tokens, stop=stop,
                             stop_ids=set(self.format.stop_ids), ctx=self.ctx, on_finish=self._record_reply,
                             **kwargs)
        return self.last

    def ask(self, text: str, **kwargs) -> str:
        """send() and return the whole reply."""
        return "".join(self.send(text, **kwargs))

    def reset(self, system: Union[str, None, type(...)] = ...) -> None:
        """Forget the conversation, optionally with a new system prompt (the cached system prefix is kept)."""
        if system is not ...:
            _check_system(system)
        self._finish_previous()
        if system is not ...:
            self.system = system
        self._exchanges.clear()
        self.ctx.rewind(_common_prefix(self.ctx.tokens, self.tokens()))

    def _finish_previous(self):
        if self.last is not None and not self.last.finished:
            self.last.close()

    def _record_reply(self, gen: Generation):
        ids = list(gen.tokens)
        if ids and ids[-1] in gen.stop_ids:
            ids.pop()  # the format's end-of-turn id closes the reply, whichever stop token ended it
        if gen.stats.stop_reason == "stop_string":
            # the reply ends where the stop string begins: that text, re-encoded, is what the model said
            ids = self.model.tokenizer.encode(gen.text)
        self._exchanges[-1][1:] = [ids, gen.text]
        # Close the turn in the cache now. If it does not fit, or Ctrl-C lands here, the next turn's prefill
        # does it (the cache holds a prefix of the conversation either way).
        want = self.tokens()
        keep = _common_prefix(self.ctx.tokens, want)
        try:
            if keep < self.ctx.pos:
                self.ctx.rewind(keep)
            if keep < len(want) <= self.ctx.n_ctx:
                self.ctx.forward(want[keep:])
        except KeyboardInterrupt:
            pass


def _check_system(system):
    if system is not None and not isinstance(system, str):
        raise InvalidArgumentError(f"system prompt must be a string, got {type(system).__name__}")


_SAMPLING_KEYS = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "seed")


def _sampling_params(kwargs: dict) -> SamplingParams:
    unknown = set(kwargs) - set(_SAMPLING_KEYS)
    if unknown:
        raise InvalidArgumentError(f"unknown sampling setting(s): {', '.join(sorted(unknown))}")
    return SamplingParams(**kwargs)
