"""Byte-level BPE tokenizers: Meta's Llama 3 `tokenizer.model` (tiktoken format) and GGUF "gpt2" vocabularies.

One class, two constructors:

    tok = Tokenizer.from_file("Meta-Llama-3-8B/tokenizer.model")   # Meta's semantics (llama3/tokenizer.py)
    tok = Tokenizer.from_gguf_metadata(gguf_metadata, "model.gguf")  # llama.cpp / Hugging Face semantics
    ids = tok.encode("Hello", bos=True)
    tok.decode(ids)

The steps are those of tiktoken and of tokenizers' BPE: cut the text into pieces with the vocabulary's
pre-tokenizer regex (`_pretokenize`), then merge each piece's bytes pair by pair, lowest rank first (`_bpe`).

Special tokens (Llama 3's `<|eot_id|>`, GGUF control tokens such as `<|im_start|>`) are never produced from text by
default: `encode` follows Meta's defaults, allowed_special=set() and disallowed_special=(), so the text "<|eot_id|>"
in user input is encoded as the plain characters it is made of. Pass allowed_special={"<|eot_id|>"} (or "all")
to turn such text into the special id; chat formats put special ids in directly, never through text. (Hugging Face
tokenizers match special tokens in text by default; we do not.)

Differences between the two constructors, each following its reference:
- from_file: Meta encodes text longer than 25,000 characters in slices (`_pretokenize.meta_slices`), which can
  change the ids at the slice edges; we slice the same way. GGUF vocabularies are not sliced (llama.cpp and
  Hugging Face do not slice).
- from_gguf_metadata: the rank of a merge is its index in `tokenizer.ggml.merges`; a piece that is a whole token
  is taken as is only for the Llama 3 pre-tokenizer (tokenizers' `ignore_merges`, llama.cpp does the same).
"""
from __future__ import annotations

import base64
import binascii
import codecs
import operator
import os
import re
from typing import Collection, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import _pretokenize
from ._limits import MAX_TOKENIZER_FILE, read_regular
from .errors import FormatError, TokenizerError

try:
    from . import _bpe as _core_module
except ImportError:  # the extension is not built: the pure-Python twin gives the same ids, slower
    _core_module = None
if os.environ.get("LLAMA_CX_TOKENIZER_CORE", "").strip().lower() == "python":
    _core_module = None

# Meta's llama_models/llama3/tokenizer.py (llama-models 0.3.0): 256 special tokens after the base vocabulary.
LLAMA3_NUM_RESERVED_SPECIAL_TOKENS = 256
LLAMA3_SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",  # end of message
    "<|eot_id|>",  # end of turn
    "<|python_tag|>",
    "<|image|>",
]
LLAMA3_SPECIAL_TOKENS += [
    f"<|reserved_special_token_{2 + i}|>" for i in range(LLAMA3_NUM_RESERVED_SPECIAL_TOKENS - len(LLAMA3_SPECIAL_TOKENS))
]
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# tokenizer.ggml.pre -> (our pattern, ignore_merges), after llama.cpp's llama-vocab.cpp (LLAMA_VOCAB_PRE_TYPE_*)
_GGUF_PRE = {
    "gpt2": ("gpt2", False),
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

SpecialSet = Union[str, Collection[str]]  # "all" or names


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


def _show(s, limit: int = 60) -> str:
    r = repr(s)
    return r if len(r) <= limit else r[: limit - 4] + "...'"


class Tokenizer:
    """Text <-> token ids for one vocabulary. Build with `from_file` or `from_gguf_metadata`.

    Threads: one Tokenizer may be shared by any number of threads (its tables are read-only; the compiled core
    lends each call its own scratch, see _bpe.pyx). A StreamDecoder belongs to one stream.
    """

    def __init__(self, *, token_bytes: Sequence[Optional[bytes]], special_tokens: Dict[str, int],
                 merges: Optional[Sequence[Tuple[int, int]]], pattern: str, ignore_merges: bool, meta_slicing: bool,
                 bos_id: Optional[int], eos_id: Optional[int], stop_ids: Sequence[int], source: str,
                 pad_id: Optional[int] = None, add_bos: bool = True, chat_template: Optional[str] = None):
        """token_bytes[i]: bytes merging may produce for id i (None for special ids, named in special_tokens)."""
        self.source = str(source)
        self.pattern = pattern
        self.special_tokens: Dict[str, int] = dict(special_tokens)
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.stop_ids: Tuple[int, ...] = tuple(dict.fromkeys(stop_ids))
        self.add_bos = add_bos  # whether prompts for this model start with bos (llama.cpp's add_bos_token)
        self.chat_template = chat_template
        self._meta_slicing = meta_slicing
        self._bytes: List[bytes] = [b if b is not None else b"" for b in token_bytes]
        for name, i in self.special_tokens.items():
            self._bytes[i] = name.encode("utf-8", "surrogateescape")
        self._special_ids = frozenset(self.special_tokens.values())
        self._special_res: Dict[frozenset, "re.Pattern"] = {}
        if _core_module is not None:
            self._core = _core_module.Core(token_bytes, merges, pattern, ignore_merges,
                                           _pretokenize.class_table(), _py_space_table())
            self.core_name = "compiled"
        else:
            from . import _bpe_py

            self._core = _bpe_py.Core(token_bytes, merges, pattern, ignore_merges)
            self.core_name = "python"

    # -- construction ----------------------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path) -> "Tokenizer":
        """Meta's Llama 3 tokenizer.model: one `base64(token bytes) rank` line per token, ranks 0..n-1; the 256
        special tokens of Meta's llama3/tokenizer.py follow the n base tokens."""
        path = os.fsdecode(path)
        base = _read_tiktoken_file(path)
        n = len(base)
        special = {name: n + i for i, name in enumerate(LLAMA3_SPECIAL_TOKENS)}
        return cls(
            token_bytes=base + [None] * len(special), special_tokens=special, merges=None, pattern="llama3",
            ignore_merges=True, meta_slicing=True, bos_id=special["<|begin_of_text|>"],
            eos_id=special["<|end_of_text|>"],
            stop_ids=[special["<|end_of_text|>"], special["<|eom_id|>"], special["<|eot_id|>"]],
            pad_id=special["<|finetune_right_pad_id|>"], source=path, add_bos=True,
        )

    @classmethod
    def from_gguf_metadata(cls, meta: dict, source: str) -> "Tokenizer":
        """A byte-level BPE ("gpt2") tokenizer from GGUF metadata (tokenizer.ggml.* keys, already decoded)."""
        source = str(source)

        def fail(msg):
            raise FormatError(f"{source}: {msg}")

        model = meta.get("tokenizer.ggml.model")
        if model != "gpt2":
            fail(f"tokenizer.ggml.model is {_show(model)}; only byte-level BPE ('gpt2') vocabularies are supported")
        pre = meta.get("tokenizer.ggml.pre", "gpt2")  # absent: plain GPT-2, as Hugging Face's GGUF loader does
        if not isinstance(pre, str) or pre not in _GGUF_PRE:
            fail(f"pre-tokenizer tokenizer.ggml.pre = {_show(pre)} is not supported "
                 f"(supported: {', '.join(sorted(_GGUF_PRE))})")
        pattern, ignore_merges = _GGUF_PRE[pre]

        tokens = meta.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
            fail("tokenizer.ggml.tokens is missing or not a list of strings")
        n = len(tokens)
        types = meta.get("tokenizer.ggml.token_type", [_NORMAL] * n)
        if not isinstance(types, list) or len(types) != n or not all(isinstance(t, int) for t in types):
            fail(f"tokenizer.ggml.token_type must be {n} integers, one per token")

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
            fail("tokenizer.ggml.merges is missing or not a list of strings")
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
                fail(f"tokenizer.ggml.merges[{k}] = {_show(m)} is not two tokens of the vocabulary")
            a, b = index[parts[0]], index[parts[1]]
            if token_bytes[a] + token_bytes[b] not in by_bytes:
                fail(f"tokenizer.ggml.merges[{k}] = {_show(m)} joins to a string that is not a token")
            merges.append((a, b))

        def token_id(key):
            v = meta.get(key)
            if v is None:
                return None
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < n:
                fail(f"{key} = {_show(v)} is not a token id (vocabulary of {n})")
            return v

        bos, eos, pad = (token_id(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "padding"))
        stop = ([eos] if eos is not None else []) + [special[t] for t in _END_OF_GENERATION if t in special]
        template = meta.get("tokenizer.chat_template")
        add_bos = meta.get("tokenizer.ggml.add_bos_token", False)
        if not isinstance(add_bos, bool):
            fail(f"tokenizer.ggml.add_bos_token = {_show(add_bos)} is not a bool")
        return cls(
            token_bytes=token_bytes, special_tokens=special, merges=merges, pattern=pattern,
            ignore_merges=ignore_merges, meta_slicing=False, bos_id=bos, eos_id=eos, stop_ids=stop, pad_id=pad,
            source=source, add_bos=add_bos,
            chat_template=template if isinstance(template, str) else None,
        )

    # -- encoding --------------------------------------------------------------------------------------------

    def encode(self, text: str, *, bos: bool = False, eos: bool = False,
               allowed_special: Optional[SpecialSet] = None, disallowed_special: SpecialSet = ()) -> List[int]:
        """The ids of text, with Meta's semantics (llama3/tokenizer.py, tiktoken):

        - allowed_special ("all" or names; default none): special-token text that becomes the special id;
        - disallowed_special ("all" or names; default none): special-token text that raises TokenizerError;
        - any other special-token text (the default for all of them) is encoded as ordinary text.
        bos/eos prepend/append the begin/end-of-text id. Lone surrogates are replaced by U+FFFD, as tiktoken does.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, not {type(text).__name__}")
        allowed = self._special_names(allowed_special, "allowed_special") if allowed_special else frozenset()
        if disallowed_special == "all":
            disallowed = frozenset(self.special_tokens) - allowed
        else:
            disallowed = self._special_names(disallowed_special, "disallowed_special") if disallowed_special else frozenset()
        if not allowed and not disallowed:
            ids = self._encode_ordinary(text, self._meta_slicing)
        else:
            ids = []
            slices = _pretokenize.meta_slices(text) if self._meta_slicing else (text,)
            for s in slices:  # Meta slices first and lets tiktoken find special tokens in each slice
                ids += self._encode_slice(s, allowed, disallowed)
        if bos:
            if self.bos_id is None:
                raise TokenizerError(f"{self.source}: this vocabulary has no begin-of-text token")
            ids.insert(0, self.bos_id)
        if eos:
            if self.eos_id is None:
                raise TokenizerError(f"{self.source}: this vocabulary has no end-of-text token")
            ids.append(self.eos_id)
        return ids

    def _special_names(self, names: SpecialSet, what: str) -> frozenset:
        if names == "all":
            return frozenset(self.special_tokens)
        if isinstance(names, str):
            raise TypeError(f"{what} must be 'all' or a set of special token names, not the string {names!r}")
        return frozenset(names) & frozenset(self.special_tokens)

    def _special_re(self, names: frozenset) -> "re.Pattern":
        r = self._special_res.get(names)
        if r is None:
            # longest first, so a name that is a prefix of another never hides it
            r = re.compile("|".join(re.escape(t) for t in sorted(names, key=lambda t: (-len(t), t))))
            if len(self._special_res) > 16:
                self._special_res.clear()
            self._special_res[names] = r
        return r

    def _encode_slice(self, text: str, allowed: frozenset, disallowed: frozenset) -> List[int]:
        if disallowed:
            m = self._special_re(disallowed).search(text)
            if m:
                raise TokenizerError(
                    f"the text contains the special token {m.group()!r} at character {m.start()}; pass it in "
                    f"allowed_special to encode it as that token, or disallowed_special=() to encode it as text")
        if not allowed:
            return self._encode_ordinary(text, False)
        ids: List[int] = []
        start = 0
        for m in self._special_re(allowed).finditer(text):
            ids += self._encode_ordinary(text[start:m.start()], False)
            ids.append(self.special_tokens[m.group()])
            start = m.end()
        ids += self._encode_ordinary(text[start:], False)
        return ids

    def _encode_ordinary(self, text: str, meta_slicing: bool) -> List[int]:
        try:
            return self._core.encode_ordinary(text, meta_slicing)
        except UnicodeEncodeError:
            # lone surrogates: tiktoken's fix (a valid surrogate pair becomes its character, a lone one U+FFFD)
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self._core.encode_ordinary(text, meta_slicing)

    # -- decoding --------------------------------------------------------------------------------------------

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ids; special ids give their name; bytes that are not UTF-8 give U+FFFD (errors='replace',
        as tiktoken and Meta's decode)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        ids = list(ids)
        try:
            if ids and (min(ids) < 0 or max(ids) >= len(self._bytes)):
                raise IndexError
            return b"".join([self._bytes[i] for i in ids])
        except (IndexError, TypeError):
            for i in ids:
                self._check_id(i)
            raise

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one id (a special id: its name in UTF-8)."""
        self._check_id(token_id)
        return self._bytes[token_id]

    def stream_decoder(self) -> "StreamDecoder":
        """A decoder that takes ids one at a time and gives text as soon as it is whole UTF-8."""
        return StreamDecoder(self)

    def _check_id(self, token_id) -> None:
        try:
            i = operator.index(token_id)
        except TypeError:
            raise TokenizerError(f"token ids must be integers, got {_show(token_id)}") from None
        if not 0 <= i < len(self._bytes):
            raise TokenizerError(
                f"token id {i} is outside the vocabulary of {self.source} (0..{len(self._bytes) - 1})")

    # -- special tokens --------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._bytes)

    def special_id(self, name: str) -> int:
        """The id of a special token by name, e.g. special_id("<|eot_id|>")."""
        try:
            return self.special_tokens[name]
        except (KeyError, TypeError):
            raise TokenizerError(f"{_show(name)} is not a special token of {self.source}") from None

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids

    def __repr__(self) -> str:
        return (f"Tokenizer({self.source!r}, vocab_size={self.vocab_size}, pattern={self.pattern!r}, "
                f"core={self.core_name!r})")


class StreamDecoder:
    """Incremental decode: `feed(id)` returns the text that id completes ('' while a UTF-8 character is still
    cut), `flush()` the rest. The concatenation of everything returned equals tokenizer.decode(all ids): bytes that
    can never become UTF-8 come out as U+FFFD exactly where decode() puts them."""

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        return self._decoder.decode(self._tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """The text still held back (an unfinished character becomes U+FFFD); the decoder is then empty."""
        return self._decoder.decode(b"", final=True)


# -- file formats ---------------------------------------------------------------------------------------------


def _read_tiktoken_file(path: str) -> List[bytes]:
    """Token bytes by rank from a tiktoken file; FormatError naming the file and line for anything malformed."""
    data = read_regular(path, "tokenizer file", MAX_TOKENIZER_FILE)
    by_rank: Dict[int, bytes] = {}
    line_of_rank: Dict[int, int] = {}
    line_of_token: Dict[bytes, int] = {}
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise FormatError(f"{path}:{lineno}: expected '<base64 token> <rank>', got {_show(raw.decode('latin-1'))}")
        b64, rank_text = parts
        try:
            token = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise FormatError(f"{path}:{lineno}: token {_show(b64.decode('latin-1'))} is not valid base64") from None
        if not token:
            raise FormatError(f"{path}:{lineno}: empty token")
        if not rank_text.isdigit():
            raise FormatError(f"{path}:{lineno}: rank {_show(rank_text.decode('latin-1'))} is not a non-negative integer")
        if len(rank_text) > 18:  # int() refuses > 4300 digits with a ValueError; no vocabulary has 10^18 tokens
            raise FormatError(f"{path}:{lineno}: rank {_show(rank_text.decode('latin-1'))} is too large")
        rank = int(rank_text)
        if rank in by_rank:
            raise FormatError(f"{path}:{lineno}: rank {rank} already given on line {line_of_rank[rank]}")
        if token in line_of_token:
            raise FormatError(f"{path}:{lineno}: token {_show(token)} already given on line {line_of_token[token]}")
        by_rank[rank] = token
        line_of_rank[rank] = lineno
        line_of_token[token] = lineno
    n = len(by_rank)
    if n == 0:
        raise FormatError(f"{path}: no tokens (empty tokenizer file)")
    if max(by_rank) != n - 1:
        rank = min(r for r in by_rank if r >= n)
        raise FormatError(f"{path}:{line_of_rank[rank]}: rank {rank} leaves a gap; the {n} ranks must be 0..{n - 1}")
    for b in range(256):
        if bytes([b]) not in line_of_token:
            raise FormatError(f"{path}: no token for the byte 0x{b:02x} (byte-level BPE needs all 256 single bytes)")
    return [by_rank[r] for r in range(n)]


def _gguf_token_bytes(text: str) -> bytes:
    """Bytes of a GGUF byte-level token: GPT-2's printable stand-ins mapped back to bytes; a token written in other
    characters is taken as its own UTF-8 (Hugging Face's GGUF loader does the same)."""
    try:
        return bytes([_BYTE_OF_CHAR[c] for c in text])
    except KeyError:
        return text.encode("utf-8", "surrogateescape")


_PY_SPACE_TABLE = None


def _py_space_table() -> bytes:
    global _PY_SPACE_TABLE
    if _PY_SPACE_TABLE is None:
        _PY_SPACE_TABLE = bytes(1 if chr(c) in _pretokenize.PY_SPACES else 0 for c in range(0x3001))
    return _PY_SPACE_TABLE
