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

import codecs
import operator
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import TokenizerError, brief
from ._specials import SpecialSet, SpecialTokens
from . import _pretokenize
from .gpt2_bpe import gguf_vocab
from .tiktoken_format import llama3_vocab

try:
    from . import _bpe as _core_module
except ImportError:  # the extension is not built: the pure-Python twin gives the same ids, slower
    _core_module = None
if os.environ.get("LLAMA_CX_TOKENIZER_CORE", "").strip().lower() == "python":
    _core_module = None



class Tokenizer(SpecialTokens):
    """Text <-> token ids for one vocabulary. Build with `from_file` or `from_gguf_metadata`.

    Threads: one Tokenizer may be shared by any number of threads, whichever file it came from (tokenizer.model,
    GGUF, tokenizer.json: the same core). Its tables are read-only; the compiled core lends each call its own
    scratch (see _bpe.pyx), the Python twin fills its piece cache under a lock. A StreamDecoder belongs to one
    stream.
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
        self._init_specials()
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
        """Meta's Llama 3 tokenizer.model (tiktoken format; Meta's semantics, llama3/tokenizer.py)."""
        return cls(**llama3_vocab(os.fsdecode(path)))

    @classmethod
    def from_gguf_metadata(cls, meta: dict, source: str) -> "Tokenizer":
        """A byte-level BPE ("gpt2") tokenizer from GGUF metadata (tokenizer.ggml.* keys, already decoded)."""
        return cls(**gguf_vocab(meta, str(source)))

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
        return self._with_bos_eos(ids, bos, eos)

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

    def stream_decoder(self, continues: bool = False) -> "StreamDecoder":
        """A decoder that takes ids one at a time and gives text as soon as it is whole UTF-8. (`continues`
        matters to SentencePiece's leading-space rule; byte-level BPE text has none.)"""
        return StreamDecoder(self)

    def _check_id(self, token_id) -> None:
        try:
            i = operator.index(token_id)
        except TypeError:
            raise TokenizerError(f"token ids must be integers, got {brief(token_id)}") from None
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
            raise TokenizerError(f"{brief(name)} is not a special token of {self.source}") from None

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


_PY_SPACE_TABLE = None


def _py_space_table() -> bytes:
    global _PY_SPACE_TABLE
    if _PY_SPACE_TABLE is None:
        _PY_SPACE_TABLE = bytes(1 if chr(c) in _pretokenize.PY_SPACES else 0 for c in range(0x3001))
    return _PY_SPACE_TABLE
