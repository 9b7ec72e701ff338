"""Byte-level BPE ("gpt2") vocabularies stored in GGUF metadata (tokenizer.ggml.* keys), with llama.cpp's and
Hugging Face's semantics: the rank of a merge is its index in tokenizer.ggml.merges; a piece that is a whole token is
taken as is only for the Llama 3 pre-tokenizer (tokenizers' `ignore_merges`, llama.cpp does the same)."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from ..errors import brief, fail

# tokenizer.ggml.pre -> (our pattern, ignore_merges), after llama.cpp's llama-vocab.cpp (LLAMA_VOCAB_PRE_TYPE_*)
_GGUF_PRE = {
    "gpt2": ("gpt2", False),
    "gpt-2": ("gpt2", False),  # the name convert_hf_to_gguf writes for GPT-2's ByteLevel pre-tokenizer
    "smollm": ("smollm", False),  # llama.cpp: "\p{N}" then the GPT-2 regex; HF SmolLM2: Digits(individual) + ByteLevel
    "llama-bpe": ("llama3", True),
    "llama3": ("llama3", True),
    "llama-v3": ("llama3", True),
}
# GGUF token types (llama.cpp LLAMA_TOKEN_TYPE_*): merging produces only NORMAL and BYTE tokens; the others
# (UNKNOWN, CONTROL, USER_DEFINED, UNUSED) are special: matched in text only when allowed.
_NORMAL, _BYTE = 1, 6
# Special tokens that end a generation when present (llama.cpp's end-of-generation list, the ones Llama 3 and
# ChatML models use).
_END_OF_GENERATION = ("<|end_of_text|>", "<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|endoftext|>", "<|end|>",
                      "<end_of_turn>")

def _byte_level_alphabet() -> Dict[str, int]:
    """GPT-2's bytes_to_unicode, inverted: the printable character that stands for each byte -> the byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = {b: b for b in printable}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + n
            n += 1
    return {chr(c): b for b, c in chars.items()}


_BYTE_OF_CHAR = _byte_level_alphabet()



def gguf_vocab(meta: dict, source: str) -> dict:
    """Tokenizer arguments (see Tokenizer.__init__) for the byte-level BPE vocabulary in GGUF metadata `meta`
    (already decoded) of the file `source`."""
    source = str(source)

    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
        fail(source, f"tokenizer.ggml.model is {brief(model)}; only byte-level BPE ('gpt2') and SentencePiece ('llama') "
                     f"vocabularies are supported")
    pre = meta.get("tokenizer.ggml.pre", "gpt2")  # absent: plain GPT-2, as Hugging Face's GGUF loader does
    if not isinstance(pre, str) or pre not in _GGUF_PRE:
        fail(source, f"pre-tokenizer tokenizer.ggml.pre = {brief(pre)} is not supported "
                     f"(supported: {', '.join(sorted(_GGUF_PRE))})")
    pattern, ignore_merges = _GGUF_PRE[pre]

    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        fail(source, "tokenizer.ggml.tokens is missing or not a list of strings")
    n = len(tokens)
    types = meta.get("tokenizer.ggml.token_type", [_NORMAL] * n)
    if not isinstance(types, list) or len(types) != n or not all(isinstance(t, int) for t in types):
        fail(source, f"tokenizer.ggml.token_type must be {n} integers, one per token")

    token_bytes: List[Optional[bytes]] = []
    special: Dict[str, int] = {}
    for i, (text, ttype) in enumerate(zip(tokens, types)):
        if ttype in (_NORMAL, _BYTE):
            token_bytes.append(_gguf_token_bytes(text))
        else:
            token_bytes.append(None)
            special.setdefault(text, i)

    raw_merges = meta.get("tokenizer.ggml.merges")
    if not isinstance(raw_merges, list) or not all(isinstance(m, str) for m in raw_merges):
        fail(source, "tokenizer.ggml.merges is missing or not a list of strings")
    index: Dict[str, int] = {}
    for i, t in enumerate(tokens):
        if token_bytes[i] is not None:
            index.setdefault(t, i)
    by_bytes: Dict[bytes, int] = {}
    for i, b in enumerate(token_bytes):
        if b is not None:
            by_bytes.setdefault(b, i)
    merges: List[Tuple[int, int]] = []
    for k, m in enumerate(raw_merges):
        parts = m.split(" ")
        if len(parts) != 2 or parts[0] not in index or parts[1] not in index:
            fail(source, f"tokenizer.ggml.merges[{k}] = {brief(m)} is not two tokens of the vocabulary")
        a, b = index[parts[0]], index[parts[1]]
        if token_bytes[a] + token_bytes[b] not in by_bytes:
            fail(source, f"tokenizer.ggml.merges[{k}] = {brief(m)} joins to a string that is not a token")
        merges.append((a, b))

    def token_id(key):
        v = meta.get(key)
        if v is None:
            return None
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < n:
            fail(source, f"{key} = {brief(v)} is not a token id (vocabulary of {n})")
        return v

    bos, eos, pad = (token_id(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "padding"))
    stop = ([eos] if eos is not None else []) + [special[t] for t in _END_OF_GENERATION if t in special]
    template = meta.get("tokenizer.chat_template")
    add_bos = meta.get("tokenizer.ggml.add_bos_token", False)
    if not isinstance(add_bos, bool):
        fail(source, f"tokenizer.ggml.add_bos_token = {brief(add_bos)} is not a bool")
    return dict(
        token_bytes=token_bytes, special_tokens=special, merges=merges, pattern=pattern,
        ignore_merges=ignore_merges, meta_slicing=False, bos_id=bos, eos_id=eos, stop_ids=stop, pad_id=pad,
        source=source, add_bos=add_bos,
        chat_template=template if isinstance(template, str) else None,
    )


def _gguf_token_bytes(text: str) -> bytes:
    """Bytes of a GGUF byte-level token: GPT-2's printable stand-ins mapped back to bytes; a token written in other
    characters is taken as its own UTF-8 (Hugging Face's GGUF loader does the same)."""
    try:
        return bytes([_BYTE_OF_CHAR[c] for c in text])
    except KeyError:
        return text.encode("utf-8", "surrogateescape")
