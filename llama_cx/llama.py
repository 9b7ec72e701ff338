"""`Llama`: llama-cpp-python's high-level class for the common calls, over llama_cx.

    from llama_cx import Llama            # was: from llama_cpp import Llama
    llm = Llama("SmolLM2-135M-Instruct.Q4_1.gguf", n_ctx=2048, seed=1)
    out = llm("The capital of France is", max_tokens=16)
    out["choices"][0]["text"], out["usage"]["completion_tokens"]
    for chunk in llm.create_chat_completion([{"role": "user", "content": "Hi"}], stream=True): ...

Signatures and defaults mirror llama-cpp-python 0.3.x (create_completion: max_tokens=16, temperature=0.8,
top_p=0.95, top_k=40, min_p=0.05, repeat_penalty=1.0; create_chat_completion: temperature=0.2, max_tokens=None),
and the returned dicts have the same keys (llama_cx._openai). What differs, on purpose:
- sampling is llama_cx's (llama_cx.sampling): the same settings give other draws than llama.cpp's sampler chain,
  so only greedy output (temperature=0) is comparable between the two libraries, and then only up to the
  engines' floating-point differences;
- options llama_cx does not implement (logprobs, suffix, grammar, mirostat, typical_p, tfs_z, presence and
  frequency penalties, logit_bias, logits processors, tools/functions, response_format) raise
  InvalidArgumentError when given a non-default value, instead of being silently ignored;
- constructor options that only steer llama.cpp (n_gpu_layers, n_batch, use_mmap, flash_attn, ...) are accepted
  and ignored, as llama-cpp-python ignores its own **kwargs; an unknown keyword gets a warning (a typo should
  not pass unnoticed).
One context (KV cache) serves every call, and each call reuses the longest prefix it shares with the previous
one (llama-cpp-python does the same), so a growing chat prefills only its new turn. As in a ChatSession, that
prefix may include a previous reply, whose cache rows were written by one-token decode steps; their sums run in
another order than a prefill's, so such a call's logits can differ in the last bits from a fresh start's (the
server, which promises history-independent answers, reuses prefilled rows only).
"""
from __future__ import annotations

import random
import sys
import warnings
from typing import Dict, Iterator, List, Optional, Sequence, Union

from . import _openai
from .errors import ContextLengthError, InvalidArgumentError, LlamaCxError
from .generate import generate
from .model import load
from .tokenizers.chat_format import ChatFormat, ChatMLFormat
from .tokenizers.chat_llama2 import Llama2ChatFormat

LLAMA_DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp's "pick a random seed"

# llama-cpp-python constructor options that tune llama.cpp itself; meaningless here, accepted for portability.
_LLAMA_CPP_ONLY = frozenset("""
    n_gpu_layers split_mode main_gpu tensor_split vocab_only use_mmap use_mlock kv_overrides n_batch n_ubatch
    n_threads_batch rope_scaling_type pooling_type attention_type rope_freq_base rope_freq_scale yarn_ext_factor
    yarn_attn_factor yarn_beta_fast yarn_beta_slow yarn_orig_ctx logits_all embedding offload_kqv flash_attn
    op_offload swa_full no_perf last_n_tokens_size lora_base lora_scale lora_path numa chat_handler draft_model
    tokenizer spm_infill
""".split()) | {"type_k", "type_v"}

# llama-cpp-python's type_k / type_v (ggml type ids) for the KV cache element types llama_cx has
_GGML_KV_TYPES = {0: "f32", 1: "f16", 30: "bf16"}


def _kv_dtype(kv_dtype: Optional[str], type_k, type_v) -> str:
    """The KV cache element type from llama_cx's kv_dtype or llama-cpp-python's type_k / type_v."""
    if type_k is None and type_v is None:
        return kv_dtype or "f32"
    names = []
    for name, v in (("type_k", type_k), ("type_v", type_v)):
        if v is not None and (isinstance(v, bool) or v not in _GGML_KV_TYPES):
            raise InvalidArgumentError(f"{name}={v!r} is not a KV cache type llama_cx has (ggml type ids: "
                                       + ", ".join(f"{k} = {n}" for k, n in _GGML_KV_TYPES.items()) + ")")
        names.append(_GGML_KV_TYPES.get(v))
    k, v = names
    if k and v and k != v:
        raise InvalidArgumentError(f"type_k ({k}) and type_v ({v}) differ: llama_cx keeps K and V in one type")
    chosen = k or v
    if kv_dtype and kv_dtype != chosen:
        raise InvalidArgumentError(f"kv_dtype {kv_dtype!r} disagrees with type_k / type_v ({chosen})")
    return chosen

# (name, the value that means "off") for the per-call options llama_cx does not implement.
_UNSUPPORTED = (("suffix", None), ("logprobs", None), ("typical_p", 1.0), ("frequency_penalty", 0.0),
                ("presence_penalty", 0.0), ("tfs_z", 1.0), ("mirostat_mode", 0), ("stopping_criteria", None),
                ("logits_processor", None), ("grammar", None), ("logit_bias", None), ("functions", None),
                ("function_call", None), ("tools", None), ("tool_choice", None), ("response_format", None),
                ("top_logprobs", None))

# llama-cpp-python's chat_format names for the formats llama_cx has
_CHAT_FORMATS = {"chatml": ChatMLFormat, "llama-2": Llama2ChatFormat, "llama-3": ChatFormat}


def _refuse_unsupported(options: dict) -> None:
    for name, off in _UNSUPPORTED:
        if name in options and options[name] != off and not (off is None and options[name] is False):
            raise InvalidArgumentError(f"{name}={options[name]!r:.40} is not supported by llama_cx.Llama")


class Llama:
    """A model and one context, with llama-cpp-python's `Llama` methods for completions, chat and tokens."""

    def __init__(self, model_path: str, *, n_ctx: int = 512, n_threads: Optional[int] = None,
                 seed: int = LLAMA_DEFAULT_SEED, chat_format: Optional[str] = None, verbose: bool = True,
                 kv_dtype: Optional[str] = None, **kwargs):
        unknown = sorted(set(kwargs) - _LLAMA_CPP_ONLY)
        if unknown:
            warnings.warn(f"llama_cx.Llama ignores unknown argument(s): {', '.join(unknown)}", stacklevel=2)
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 0:
            raise ContextLengthError(f"n_ctx must be an integer >= 0 (0 = the model's own), got {n_ctx!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InvalidArgumentError(f"seed must be an integer, got {seed!r}")
        self.verbose = verbose
        self.model_path = model_path
        kv = _kv_dtype(kv_dtype, kwargs.get("type_k"), kwargs.get("type_v"))
        self._model = load(model_path, n_threads=n_threads, kv_dtype=kv)
        self._tok = self._model.require_tokenizer()
        self._special_text = {i: name.encode("utf-8") for name, i in self._tok.special_tokens.items()}
        self._ctx = self._model.new_context(n_ctx or self._model.config.max_seq_len)
        # Per-call seeds come from this generator: the same Llama seed replays the same sequence of calls.
        self._seed = seed
        self._rng = random.Random(None if seed in (None, -1, LLAMA_DEFAULT_SEED) else seed)
        self.chat_format = chat_format
        if chat_format is None:
            self._chat = self._model.chat_format
        elif chat_format in _CHAT_FORMATS:
            self._chat = _CHAT_FORMATS[chat_format](self._tok)
        else:
            raise InvalidArgumentError(f"chat_format {chat_format!r} is not one of: None (the model's own), "
                                       + ", ".join(_CHAT_FORMATS))
        if verbose:
            print(f"llama_cx: {self._model!r}, n_ctx {self._ctx.n_ctx}", file=sys.stderr)

    # ---- tokens -------------------------------------------------------------------------------------------
    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> List[int]:
        """Token ids of UTF-8 `text`. add_bos adds BOS where the model asks for one (llama.cpp's add_special);
        special=True turns special-token text such as "<|im_end|>" into its id."""
        if not isinstance(text, (bytes, bytearray)):
            raise InvalidArgumentError(f"tokenize takes bytes (text.encode('utf-8')), got {type(text).__name__}")
        return self._tok.encode(bytes(text).decode("utf-8", errors="replace"), bos=bool(add_bos and self._tok.add_bos),
                                allowed_special="all" if special else None)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Optional[Sequence[int]] = None,
                   special: bool = False) -> bytes:
        """The bytes of `tokens` as llama-cpp-python builds them: each token's piece (special tokens such as BOS
        or <|im_end|> are empty unless special=True), then one leading space dropped when the first token is BOS
        (SentencePiece's space prefix). So a SentencePiece reply decodes with its leading space, unlike
        sentencepiece's own decode. prev_tokens is accepted for compatibility (llama-cpp-python ignores it too)."""
        tok, ids = self._tok, list(tokens)
        out = b"".join((self._special_text.get(i, b"") if special else b"") if tok.is_special(i)
                       else tok.token_bytes(i) for i in ids)
        return out[1:] if ids and ids[0] == tok.bos_id and out[:1] == b" " else out

    def n_ctx(self) -> int:
        return self._ctx.n_ctx

    def n_vocab(self) -> int:
        return self._model.config.vocab_size

    def token_eos(self) -> int:
        return -1 if self._tok.eos_id is None else self._tok.eos_id

    def token_bos(self) -> int:
        return -1 if self._tok.bos_id is None else self._tok.bos_id

    def close(self) -> None:
        """Free the context (the weights go with the last reference to the model)."""
        self._ctx = None

    # ---- completions ----------------------------------------------------------------------------------------
    def __call__(self, prompt: Union[str, List[int]], *args, **kwargs):
        """create_completion (the same arguments, in llama-cpp-python's order)."""
        return self.create_completion(prompt, *args, **kwargs)

    def create_completion(self, prompt: Union[str, List[int]], suffix: Optional[str] = None,
                          max_tokens: Optional[int] = 16, temperature: float = 0.8, top_p: float = 0.95,
                          min_p: float = 0.05, typical_p: float = 1.0, logprobs: Optional[int] = None,
                          echo: bool = False, stop: Optional[Union[str, List[str]]] = None,
                          frequency_penalty: float = 0.0, presence_penalty: float = 0.0, repeat_penalty: float = 1.0,
                          top_k: int = 40, stream: bool = False, seed: Optional[int] = None, tfs_z: float = 1.0,
                          mirostat_mode: int = 0, mirostat_tau: float = 5.0, mirostat_eta: float = 0.1,
                          model: Optional[str] = None, stopping_criteria=None, logits_processor=None, grammar=None,
                          logit_bias: Optional[Dict[int, float]] = None):
        """Text after `prompt` (a string or token ids): a completion dict, or with stream=True an iterator of
        chunk dicts. max_tokens None or <= 0: up to the end of the context."""
        _refuse_unsupported(locals())
        if isinstance(prompt, str):
            # llama-cpp-python parses special-token text in completion prompts ("<|im_start|>user\n...")
            ids = self._tok.encode(prompt, bos=self._tok.add_bos, allowed_special="all") if prompt else \
                ([self._tok.bos_id] if self._tok.bos_id is not None else [])
            prompt_text = prompt
        else:
            ids = list(prompt)
            prompt_text = self.detokenize(ids).decode("utf-8", errors="replace")
        run = self._start(ids, max_tokens, temperature, top_p, top_k, min_p, repeat_penalty, stop, seed, None)
        cid, created, name = _openai.completion_id(), _openai.now(), model or self.model_path
        if stream:
            return self._stream_completion(run, ids, cid, created, name, prompt_text if echo else "")
        text = run.read()
        return _openai.completion(cid, created, name, (prompt_text if echo else "") + text,
                                  _openai.FINISH_REASON[run.stats.stop_reason], self._usage(run, ids))

    def _stream_completion(self, run, ids, cid, created, name, echo_text) -> Iterator[dict]:
        try:
            if echo_text:
                yield _openai.completion_chunk(cid, created, name, echo_text)
            for text in run:
                yield _openai.completion_chunk(cid, created, name, text)
            yield _openai.completion_chunk(cid, created, name, "", _openai.FINISH_REASON[run.stats.stop_reason])
        finally:
            run.close()  # the caller stopped reading: the context keeps a consistent prefix
            self._report(run)

    # ---- chat -------------------------------------------------------------------------------------------------
    def create_chat_completion(self, messages: List[dict], functions=None, function_call=None, tools=None,
                               tool_choice=None, temperature: float = 0.2, top_p: float = 0.95, top_k: int = 40,
                               min_p: float = 0.05, typical_p: float = 1.0, stream: bool = False,
                               stop: Optional[Union[str, List[str]]] = None, seed: Optional[int] = None,
                               response_format=None, max_tokens: Optional[int] = None, presence_penalty: float = 0.0,
                               frequency_penalty: float = 0.0, repeat_penalty: float = 1.0, tfs_z: float = 1.0,
                               mirostat_mode: int = 0, mirostat_tau: float = 5.0, mirostat_eta: float = 0.1,
                               model: Optional[str] = None, logits_processor=None, grammar=None, logit_bias=None,
                               logprobs: Optional[bool] = None, top_logprobs: Optional[int] = None):
        """The assistant's reply to `messages` in the model's chat format: a chat.completion dict, or with
        stream=True an iterator of chat.completion.chunk dicts."""
        _refuse_unsupported(locals())
        if self._chat is None:
            raise LlamaCxError(f"{self.model_path}: the model has no chat format; pass chat_format=")
        ids = self._chat.encode_dialog(_openai.chat_messages(messages))
        run = self._start(ids, max_tokens, temperature, top_p, top_k, min_p, repeat_penalty, stop, seed,
                          self._chat.stop_ids)
        cid, created, name = _openai.chat_id(), _openai.now(), model or self.model_path
        if stream:
            return self._stream_chat(run, cid, created, name)
        text = run.read()
        return _openai.chat_completion(cid, created, name, text, _openai.FINISH_REASON[run.stats.stop_reason],
                                       self._usage(run, ids))

    def _stream_chat(self, run, cid, created, name) -> Iterator[dict]:
        try:
            yield _openai.chat_chunk(cid, created, name, {"role": "assistant"})
            for text in run:
                yield _openai.chat_chunk(cid, created, name, {"content": text})
            yield _openai.chat_chunk(cid, created, name, {}, _openai.FINISH_REASON[run.stats.stop_reason])
        finally:
            run.close()
            self._report(run)

    # ---- shared -------------------------------------------------------------------------------------------
    def _start(self, ids, max_tokens, temperature, top_p, top_k, min_p, repeat_penalty, stop, seed, stop_ids):
        if self._ctx is None:
            raise LlamaCxError("this Llama was closed")
        n_ctx = self._ctx.n_ctx
        if not ids:
            raise InvalidArgumentError("prompt is empty (no tokens) and the model has no BOS token")
        if len(ids) >= n_ctx:  # llama-cpp-python's check and message: one position is left for the reply
            raise ContextLengthError(f"Requested tokens ({len(ids)}) exceed context window of {n_ctx}")
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)):
            raise InvalidArgumentError(f"max_tokens must be an integer or None, got {max_tokens!r}")
        room = n_ctx - len(ids)
        max_tokens = room if max_tokens is None or max_tokens <= 0 else min(max_tokens, room)
        if seed is None:
            seed = self._rng.randrange(2**32)
        return generate(self._model, ids, max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                        min_p=min_p, repeat_penalty=repeat_penalty, seed=seed, stop=_openai.stop_list(stop),
                        stop_ids=stop_ids, ctx=self._ctx)

    def _usage(self, run, ids) -> dict:
        self._report(run)
        return _openai.usage(len(ids), _openai.completion_tokens(run.tokens, run.stop_ids))

    def _report(self, run) -> None:
        if self.verbose:
            print(f"llama_cx: {run.stats.summary()}", file=sys.stderr)
