"""SentencePiece BPE tokenizer: Llama 2's `tokenizer.model` and GGUF "llama" vocabularies, without `sentencepiece`.

    tok = SentencePieceTokenizer.from_file("llama-2-7b/tokenizer.model")      # SentencePiece ModelProto
    tok = SentencePieceTokenizer.from_gguf_metadata(gguf_metadata, "x.gguf")  # tokens + scores + token_type
    ids = tok.encode("Hello world", bos=True)   # [1, 15043, 3186]
    tok.decode(ids)                             # 'Hello world'

Encoding is sentencepiece's, step by step (src/normalizer.cc, bpe_model.cc, sentencepiece_processor.cc):
1. Normalize: user-defined symbols are copied as they are; with remove_extra_whitespaces, leading, trailing and
   repeated spaces go; every space becomes "▁" (escape_whitespaces); a "▁" goes in front (add_dummy_prefix), or at
   the end with treat_whitespace_as_suffix. Llama 2: identity normalization, dummy prefix, spaces escaped.
2. BPE by piece scores, not merge ranks: start from characters (a user-defined symbol is one frozen symbol), then
   repeatedly join the adjacent pair whose concatenation is a piece with the highest score, the leftmost on a tie.
   There is no pre-tokenizer: the whole text is one sequence. A heap of candidate pairs over a linked list of
   symbols, stale entries skipped: O(n log n) (a 100 KB word: ~0.8 s here, sentencepiece ~0.05 s). When no piece
   holds "▁" after another character (Llama 2's), no merge can cross such a point, so the text is cut there into
   words, each segmented alone and cached (the same ids; ~0.3 MB/s on text of unseen words, more on prose).
3. A piece marked UNUSED is split back into the two symbols it was made of. A symbol that is no piece is unknown:
   with byte_fallback its UTF-8 bytes become <0xNN> pieces, otherwise a run of unknowns is one unk id.
Decoding: "▁" becomes a space and the first piece loses its leading one (the dummy prefix), control pieces are
empty, unknown gives " ⁇ " (unk_surface), and each run of byte pieces is read as UTF-8 with every byte that starts no
valid character giving U+FFFD (sentencepiece's rule; Python's "replace" would give one U+FFFD per bad sequence).

Special tokens (CONTROL and UNKNOWN pieces, e.g. <s> </s> <unk>) are never made from text by default, as in
sentencepiece; `allowed_special` / `disallowed_special` work as in llama_cx.Tokenizer. The text between special
tokens is encoded piece by piece, each with its own dummy prefix (as llama.cpp and Hugging Face's legacy Llama
tokenizer do). USER_DEFINED pieces are always matched in text, as sentencepiece does.
"""
from __future__ import annotations

import codecs
import heapq
import operator
import os
import re
import threading
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .._limits import MAX_TOKENIZER_FILE, open_regular, read_regular
from ..errors import FormatError, TokenizerError, brief
from . import _protobuf as pb
from ._specials import SpecialSet, SpecialTokens

# ModelProto.SentencePiece.Type (sentencepiece_model.proto); GGUF's token_type uses the same numbers
# (llama.cpp LLAMA_TOKEN_TYPE_*).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_TYPE_NAMES = {NORMAL: "NORMAL", UNKNOWN: "UNKNOWN", CONTROL: "CONTROL", USER_DEFINED: "USER_DEFINED",
               UNUSED: "UNUSED", BYTE: "BYTE"}
_MODEL_TYPES = {1: "unigram", 2: "BPE", 3: "word", 4: "char"}
_BPE = 2
SPACE = "\u2581"  # ▁, what a space becomes
_DEFAULT_UNK_SURFACE = " \u2047 "  # sentencepiece's kDefaultUnknownSymbol " ⁇ "
_MAX_PIECE_BYTES = 8000  # sentencepiece refuses longer pieces (model_interface.cc kMaxPieceSize)
_BYTE_PIECE = re.compile(r"<0x([0-9A-F]{2})>")
# Special tokens that end a generation when present as control tokens, besides eos (as in llama_cx.tokenizer)
_END_OF_GENERATION = ("<|end_of_text|>", "<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|endoftext|>", "<|end|>",
                      "<end_of_turn>")


# -- the ModelProto schema (sentencepiece_model.proto), the fields we read --------------------------------------
# trainer_spec's unk_id/bos_id/eos_id/pad_id are read but not used: sentencepiece itself finds bos/eos/pad by
# piece name (bos_piece, default "<s>", ...) and unk as the piece of type UNKNOWN, and so do we.
_F = pb.Field
_PIECE = {1: _F("piece", "string"), 2: _F("score", "float"), 3: _F("type", "enum")}
_TRAINER = {
    3: _F("model_type", "enum"), 4: _F("vocab_size", "int32"), 24: _F("treat_whitespace_as_suffix", "bool"),
    35: _F("byte_fallback", "bool"), 40: _F("unk_id", "int32"), 41: _F("bos_id", "int32"),
    42: _F("eos_id", "int32"), 43: _F("pad_id", "int32"), 44: _F("unk_surface", "string"),
    45: _F("unk_piece", "string"), 46: _F("bos_piece", "string"), 47: _F("eos_piece", "string"),
    48: _F("pad_piece", "string"),
}
_NORMALIZER = {1: _F("name", "string"), 2: _F("precompiled_charsmap", "bytes"), 3: _F("add_dummy_prefix", "bool"),
               4: _F("remove_extra_whitespaces", "bool"), 5: _F("escape_whitespaces", "bool")}
_MODEL_PROTO = {1: _F("pieces", "message", repeated=True, schema=_PIECE),
                2: _F("trainer_spec", "message", schema=_TRAINER),
                3: _F("normalizer_spec", "message", schema=_NORMALIZER),
                5: _F("denormalizer_spec", "message", schema=_NORMALIZER)}
_PIECES_ONLY = {1: _F("pieces", "bytes", repeated=True)}  # piece_count: the pieces left undecoded


def _bytewise_replace(err: UnicodeDecodeError):
    """UTF-8 error handler: one U+FFFD for the first bad byte, then go on from the next byte (sentencepiece's
    IsValidDecodeUTF8 loop in Decode)."""
    return "\ufffd", err.start + 1


_ERRORS = "llama_cx.spm_bytewise"
codecs.register_error(_ERRORS, _bytewise_replace)


def tokenizer_model_kind(path) -> str:
    """'sentencepiece' or 'tiktoken': which kind of `tokenizer.model` a Meta checkpoint holds, by its content.

    tiktoken (Llama 3) is text, one `base64 rank` line per token; SentencePiece (Llama 2) is a protobuf whose first
    byte is the key of a length-delimited ModelProto field: 0x0A (pieces, written first), 0x12 (trainer_spec) or
    0x1A (normalizer_spec). Anything else is called tiktoken, whose reader then names the bad line."""
    path = os.fsdecode(path)
    with open_regular(path, "tokenizer file") as f:  # not found / a FIFO or device: one-line FormatError
        try:
            head = f.read(256)
        except OSError as e:
            raise FormatError(f"{path}: cannot read the tokenizer file ({e.strerror or e})") from None
    first = head.lstrip(b"\r\n").split(b"\n", 1)[0]
    if re.fullmatch(rb"[A-Za-z0-9+/=]+ [0-9]+\r?", first):
        return "tiktoken"
    return "sentencepiece" if head[:1] in (b"\x0a", b"\x12", b"\x1a") else "tiktoken"


def piece_count(path) -> int:
    """How many pieces the SentencePiece `tokenizer.model` at `path` holds (Meta's `n_words`, which Llama 2's
    params.json `vocab_size: -1` stands for), without building the tokenizer: only the ModelProto's top level is
    read, each piece taken whole as bytes. The file is checked as far as that reads it."""
    path = os.fsdecode(path)
    return _count_pieces(_read_model_file(path), path)


def _count_pieces(data: bytes, source: str) -> int:
    if not data:
        raise FormatError(f"{source}: empty file (not a SentencePiece model)")
    n = len(pb.decode(data, _PIECES_ONLY, source).get("pieces", ()))
    if not n:
        raise FormatError(f"{source}: no pieces (the SentencePiece model holds no vocabulary)")
    return n


def _read_model_file(path: str) -> bytes:
    return read_regular(path, "tokenizer file", MAX_TOKENIZER_FILE)


class SentencePieceTokenizer(SpecialTokens):
    """Text <-> token ids for a SentencePiece BPE vocabulary. Build with `from_file` or `from_gguf_metadata`.

    The public interface is llama_cx.Tokenizer's (encode, decode, stream_decoder, bos_id, eos_id, stop_ids,
    special_tokens, vocab_size, ...), plus Meta's Llama 2 names (n_words) and sentencepiece's (id_to_piece,
    piece_to_id).

    Threads: one SentencePieceTokenizer may be shared by any number of threads (its tables are read-only; its word
    and special-token caches are filled under a lock). A stream decoder belongs to one stream."""

    def __init__(self, pieces: Sequence[str], scores: Sequence[float], types: Sequence[int], *, source: str,
                 byte_fallback: bool, add_dummy_prefix: bool = True, remove_extra_whitespaces: bool = False,
                 escape_whitespaces: bool = True, treat_whitespace_as_suffix: bool = False,
                 unk_surface: Optional[str] = None, bos_id: Optional[int] = None, eos_id: Optional[int] = None,
                 pad_id: Optional[int] = None, stop_ids: Sequence[int] = (), add_bos: bool = True,
                 chat_template: Optional[str] = None, kind: str = "SentencePiece BPE"):
        """pieces/scores/types: one per id (types are ModelProto.SentencePiece.Type values). Checks what
        sentencepiece checks on load (model_interface.cc InitializePieces) and raises FormatError naming `source`."""
        self.source = str(source)
        self.kind = kind
        self.pattern = None  # no pre-tokenizer regex: the normalizer and BPE see the whole text
        self.add_bos = add_bos
        self.chat_template = chat_template
        self.core_name = "python"
        self._add_dummy_prefix = bool(add_dummy_prefix)
        self._remove_extra_whitespaces = bool(remove_extra_whitespaces)
        self._escape_whitespaces = bool(escape_whitespaces)
        self._suffix = bool(treat_whitespace_as_suffix)
        self._byte_fallback = bool(byte_fallback)
        self._unk_surface = _DEFAULT_UNK_SURFACE if unk_surface is None else unk_surface
        self._pieces: List[str] = list(pieces)
        self._types: List[int] = list(types)
        n = len(self._pieces)

        def fail(msg):
            raise FormatError(f"{self.source}: {msg}")

        if n == 0:
            fail("no pieces (empty vocabulary)")
        if len(scores) != n or len(self._types) != n:
            fail(f"{n} pieces but {len(scores)} scores and {len(self._types)} types")
        # sentencepiece keeps two maps: NORMAL / USER_DEFINED / UNUSED pieces are what BPE may produce
        # (`pieces_`), the others (CONTROL, UNKNOWN, BYTE) are looked up first (`reserved_id_map_`).
        merge: Dict[str, Tuple[float, int]] = {}
        reserved: Dict[str, int] = {}
        user_defined: List[str] = []
        unk = None
        self._byte_of: Dict[int, int] = {}  # id -> byte, for BYTE pieces
        for i, (piece, score, t) in enumerate(zip(self._pieces, scores, self._types)):
            if t not in _TYPE_NAMES:
                fail(f"piece {i} ({brief(piece)}) has type {t}, not one of "
                     f"{', '.join(f'{k} ({v})' for k, v in _TYPE_NAMES.items())}")
            if not isinstance(piece, str) or not piece:
                fail(f"piece {i} is empty")
            if "\0" in piece:
                fail(f"piece {i} ({brief(piece)}) contains a NUL character")
            if len(piece.encode("utf-8", "surrogatepass")) >= _MAX_PIECE_BYTES:
                fail(f"piece {i} is {len(piece)} characters long (sentencepiece allows under {_MAX_PIECE_BYTES} bytes)")
            table = merge if t in (NORMAL, USER_DEFINED, UNUSED) else reserved
            if piece in table:
                first = table[piece][1] if table is merge else table[piece]
                fail(f"piece {i} ({brief(piece)}) is already defined as piece {first}")
            if table is merge:
                merge[piece] = (float(score), i)
            else:
                reserved[piece] = i
            if t == USER_DEFINED:
                user_defined.append(piece)
            elif t == UNKNOWN:
                if unk is not None:
                    fail(f"two unknown pieces: {unk} ({brief(self._pieces[unk])}) and {i} ({brief(piece)})")
                unk = i
            elif t == BYTE:
                m = _BYTE_PIECE.fullmatch(piece)
                if m is None:
                    fail(f"byte piece {i} is {brief(piece)}, not of the form <0xNN>")
                if not self._byte_fallback:
                    fail(f"byte piece {i} ({piece}) is present although byte_fallback is off")
                self._byte_of[i] = int(m.group(1), 16)
        if unk is None:
            fail("no unknown piece (type UNKNOWN, e.g. <unk>)")
        self.unk_id: int = unk
        if self._byte_fallback:
            have = {b: i for i, b in self._byte_of.items()}
            missing = [b for b in range(256) if b not in have]
            if missing:
                fail(f"byte_fallback is on but there is no byte piece <0x{missing[0]:02X}> "
                     f"({len(missing)} of the 256 missing)")
        self._merge = merge
        self._max_piece_len = max(map(len, merge)) if merge else 1
        # PieceToId: the reserved map first, then the BPE pieces, else unk (model_interface.cc)
        self._id_of: Dict[str, int] = {p: i for p, (_, i) in merge.items()}
        self._id_of.update(reserved)
        # <0xNN> -> id through PieceToId, as PopulateSentencePieceText does
        self._byte_ids = [self._id_of.get(f"<0x{b:02X}>", unk) for b in range(256)]
        self._has_unused = any(t == UNUSED for t in self._types)
        # BPE runs over the whole text, but when no piece holds a space symbol right after another character
        # (Llama 2's do not), no merge can cross the point before such a space: the text can be cut there into
        # words that are segmented alone, and a word seen before is looked up (the result is the same; the cache
        # makes prose ~10x faster). Not with UNUSED pieces: their resegmentation uses the last merge recorded
        # anywhere in the text (sentencepiece's rev_merge), which cutting would change.
        space = SPACE if self._escape_whitespaces else " "
        crossing = re.compile(f"[^{space}]{space}")
        self._words = None
        if not self._has_unused and not any(crossing.search(p) for p in merge):
            self._words = re.compile(f"{space}*[^{space}]+|{space}+")
        # Threads share one tokenizer (the tables above are read-only after __init__); the word cache below is read
        # with single dict lookups and filled under _cache_lock (the special-token patterns: _specials.py), so a
        # clear and an insert never interleave.
        # A cached value is never mutated after it is stored.
        self._word_cache: Dict[str, List[str]] = {}
        self._cache_lock = threading.Lock()
        # Longest user-defined symbol first: a regex alternation takes the first alternative that matches.
        self._user_re = re.compile("|".join(re.escape(s) for s in sorted(user_defined, key=lambda s: (-len(s), s)))) \
            if user_defined else None

        # Decode looks each id's piece up again with PieceToId (so a piece both reserved and not acts reserved);
        # kinds: 0 text, 1 control (empty), 2 unknown (unk_surface), 3 byte.
        kind_of_type = {CONTROL: 1, UNKNOWN: 2, BYTE: 3}
        self._decode_kind = bytearray(kind_of_type.get(self._types[self._id_of[p]], 0) for p in self._pieces)
        self._decode_text = [p.replace(SPACE, " ") for p in self._pieces]

        self.special_tokens: Dict[str, int] = {p: i for i, p in enumerate(self._pieces) if self._types[i] in (CONTROL, UNKNOWN)}
        self._special_ids = frozenset(self.special_tokens.values())
        self._init_specials()

        def token_id(name, v):
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
                fail(f"{name} = {brief(v)} is not a token id (vocabulary of {n})")
            return v

        self.bos_id = token_id("bos id", bos_id)
        self.eos_id = token_id("eos id", eos_id)
        self.pad_id = token_id("pad id", pad_id)
        stops = [token_id("stop id", s) for s in stop_ids]
        if self.eos_id is not None:
            stops.insert(0, self.eos_id)
        self.stop_ids: Tuple[int, ...] = tuple(dict.fromkeys(stops))

    # -- construction ----------------------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path) -> "SentencePieceTokenizer":
        """A SentencePiece `tokenizer.model` (serialized ModelProto), e.g. Llama 2's."""
        path = os.fsdecode(path)
        return cls.from_model_proto(_read_model_file(path), source=path)

    @classmethod
    def from_model_proto(cls, data: bytes, source: str = "<ModelProto>") -> "SentencePieceTokenizer":
        """From the bytes of a serialized SentencePiece ModelProto."""
        source = str(source)
        if not data:
            raise FormatError(f"{source}: empty file (not a SentencePiece model)")
        proto = pb.decode(data, _MODEL_PROTO, source)
        trainer = proto.get("trainer_spec", {})
        norm = proto.get("normalizer_spec", {})

        def fail(msg):
            raise FormatError(f"{source}: {msg}")

        model_type = trainer.get("model_type", 1)  # proto default: UNIGRAM
        if model_type != _BPE:
            name = _MODEL_TYPES.get(model_type, f"unknown ({model_type})")
            fail(f"a SentencePiece {name} model; only BPE models (Llama 2's kind) are supported")
        raw = proto.get("pieces")
        if not raw:
            fail("no pieces (the SentencePiece model holds no vocabulary)")
        for k, p in enumerate(raw):
            if "piece" not in p:
                fail(f"piece {k} has no text (ModelProto.pieces[{k}].piece is missing)")
        if norm.get("precompiled_charsmap"):
            fail(f"normalization rules {brief(norm.get('name', ''))} (precompiled_charsmap) are not supported; "
                 f"only identity normalization (Llama 2's) is")
        if proto.get("denormalizer_spec", {}).get("precompiled_charsmap"):
            fail("denormalization rules (denormalizer_spec.precompiled_charsmap) are not supported")
        pieces = [p["piece"] for p in raw]
        n = len(pieces)
        types = [p.get("type", NORMAL) for p in raw]
        controls = {p: i for i, p in enumerate(pieces) if types[i] == CONTROL}

        def control_id(key, default):
            # sentencepiece's bos_id()/eos_id()/pad_id(): PieceToId(trainer_spec.<x>_piece) if that is a control
            # piece (PieceToId looks at control pieces first, so the control one is it when there is one)
            return controls.get(trainer.get(key) or default)

        return cls(
            pieces, [p.get("score", 0.0) for p in raw], types, source=source,
            byte_fallback=trainer.get("byte_fallback", False),
            add_dummy_prefix=norm.get("add_dummy_prefix", True),
            remove_extra_whitespaces=norm.get("remove_extra_whitespaces", True),
            escape_whitespaces=norm.get("escape_whitespaces", True),
            treat_whitespace_as_suffix=trainer.get("treat_whitespace_as_suffix", False),
            unk_surface=trainer.get("unk_surface"),
            bos_id=control_id("bos_piece", "<s>"), eos_id=control_id("eos_piece", "</s>"),
            pad_id=control_id("pad_piece", "<pad>"), add_bos=True,
            kind=f"SentencePiece BPE (tokenizer.model, {n} pieces)",
        )

    @classmethod
    def from_gguf_metadata(cls, meta: dict, source: str) -> "SentencePieceTokenizer":
        """A GGUF whose tokenizer.ggml.model is "llama": tokens + scores + token_type, with llama.cpp's defaults
        for what is absent (add_space_prefix true, bos 1, eos 2, add_bos_token true)."""
        source = str(source)

        def fail(msg):
            raise FormatError(f"{source}: {msg}")

        model = meta.get("tokenizer.ggml.model")
        if model != "llama":
            fail(f"tokenizer.ggml.model is {brief(model)}, not 'llama' (SentencePiece)")
        tokens = meta.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
            fail("tokenizer.ggml.tokens is missing or not a list of strings")
        n = len(tokens)
        scores = meta.get("tokenizer.ggml.scores", [0.0] * n)
        if not isinstance(scores, list) or len(scores) != n or \
                not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores):
            fail(f"tokenizer.ggml.scores must be {n} numbers, one per token")
        types = meta.get("tokenizer.ggml.token_type", [NORMAL] * n)
        if not isinstance(types, list) or len(types) != n or \
                not all(isinstance(t, int) and not isinstance(t, bool) for t in types):
            fail(f"tokenizer.ggml.token_type must be {n} integers, one per token")
        # a GGUF string that was not UTF-8 was kept with surrogate escapes; such a piece can match no text
        tokens = [t.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for t in tokens]
        template = meta.get("tokenizer.chat_template")

        def get_id(key, default):
            v = meta.get(f"tokenizer.ggml.{key}", default)
            return None if v is None or v in (-1, 2**32 - 1) else v  # llama.cpp's "no token" (-1, as int32 or uint32)

        unk = get_id("unknown_token_id", 0)
        if UNKNOWN not in types and isinstance(unk, int) and 0 <= unk < n:
            types = list(types)  # no token typed UNKNOWN: llama.cpp takes unknown_token_id (default 0) as it
            types[unk] = UNKNOWN
        stops = [i for i, t in enumerate(tokens) if types[i] == CONTROL and t in _END_OF_GENERATION]

        def flag(key, default):  # a string "false" must not read as true
            v = meta.get(f"tokenizer.ggml.{key}", default)
            if not isinstance(v, bool):
                fail(f"tokenizer.ggml.{key} = {brief(v)} is not a bool")
            return v

        return cls(
            tokens, [float(s) for s in scores], types, source=source, byte_fallback=BYTE in types,
            add_dummy_prefix=flag("add_space_prefix", True),
            remove_extra_whitespaces=flag("remove_extra_whitespaces", False),
            bos_id=get_id("bos_token_id", 1), eos_id=get_id("eos_token_id", 2),
            pad_id=get_id("padding_token_id", None), stop_ids=stops,
            add_bos=flag("add_bos_token", True),
            chat_template=template if isinstance(template, str) else None,
            kind=f"SentencePiece BPE (GGUF 'llama' vocabulary, {n} tokens)",
        )

    # -- encoding --------------------------------------------------------------------------------------------

    def encode(self, text: str, *, bos: bool = False, eos: bool = False,
               allowed_special: Optional[SpecialSet] = None, disallowed_special: SpecialSet = ()) -> List[int]:
        """The ids of text, as sentencepiece's EncodeAsIds (Meta's Llama 2 Tokenizer.encode), with bos/eos added
        when asked; allowed_special / disallowed_special as in llama_cx.Tokenizer.encode. Lone surrogates become
        U+FFFD."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, not {type(text).__name__}")
        allowed = self._special_names(allowed_special, "allowed_special") if allowed_special else frozenset()
        if disallowed_special == "all":
            disallowed = frozenset(self.special_tokens) - allowed
        else:
            disallowed = self._special_names(disallowed_special, "disallowed_special") if disallowed_special else frozenset()
        if disallowed:
            m = self._special_re(disallowed).search(text)
            if m:
                raise TokenizerError(
                    f"the text contains the special token {m.group()!r} at character {m.start()}; pass it in "
                    f"allowed_special to encode it as that token, or disallowed_special=() to encode it as text")
        if not allowed:
            ids = self._encode_ordinary(text)
        else:
            ids, start = [], 0
            for m in self._special_re(allowed).finditer(text):
                ids += self._encode_ordinary(text[start:m.start()])
                ids.append(self.special_tokens[m.group()])
                start = m.end()
            ids += self._encode_ordinary(text[start:])
        return self._with_bos_eos(ids, bos, eos)

    def _encode_ordinary(self, text: str) -> List[int]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: a valid pair becomes its character, a lone one U+FFFD
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        normalized = self._normalize(text)
        if not normalized:
            return []
        if self._words is None:
            return self._ids(self._bpe(normalized))
        cache = self._word_cache
        symbols: List[str] = []
        for word in self._words.findall(normalized):
            segmented = cache.get(word)
            if segmented is None:
                segmented = self._bpe(word)
                if len(word) <= 64:
                    with self._cache_lock:
                        if len(cache) >= 1 << 16:
                            cache.clear()
                        cache[word] = segmented
            symbols += segmented
        return self._ids(symbols)

    def _normalize(self, text: str) -> str:
        """sentencepiece's Normalizer::Normalize with identity rules (no precompiled charsmap)."""
        if not text:
            return ""
        ws = SPACE if self._escape_whitespaces else " "
        if self._user_re is None and not self._remove_extra_whitespaces:  # Llama 2: the fast path
            body = text.replace(" ", SPACE) if self._escape_whitespaces else text
            if not self._add_dummy_prefix:
                return body
            return body + ws if self._suffix else ws + body
        units = self._units(text)
        start = 0
        if self._remove_extra_whitespaces:
            while start < len(units) and units[start] == " ":
                start += 1
        if start == len(units):
            return ""
        out = [ws] if (self._add_dummy_prefix and not self._suffix) else []
        is_prev_space = self._remove_extra_whitespaces
        for u in units[start:]:
            if is_prev_space:
                u = u.lstrip(" ")
            if u:
                out.append(u.replace(" ", SPACE) if self._escape_whitespaces else u)
                is_prev_space = u.endswith(" ")
            if not self._remove_extra_whitespaces:
                is_prev_space = False
        normalized = "".join(out)
        if self._remove_extra_whitespaces:
            normalized = normalized.rstrip(ws)
        if self._add_dummy_prefix and self._suffix:
            normalized += ws
        return normalized

    def _units(self, text: str) -> List[str]:
        """text cut into user-defined symbols (longest match, left to right) and single characters."""
        if self._user_re is None:
            return list(text)
        units: List[str] = []
        pos = 0
        for m in self._user_re.finditer(text):
            units.extend(text[pos:m.start()])
            units.append(m.group())
            pos = m.end()
        units.extend(text[pos:])
        return units

    def _bpe(self, normalized: str) -> List[str]:
        """bpe::Model::SampleEncode without dropout: the final symbols, in order."""
        if self._user_re is None:
            syms = list(normalized)
            frozen = None
        else:
            syms = self._units(normalized)
            user = self._user_re
            frozen = [len(s) > 1 or user.fullmatch(s) is not None for s in syms]
        n = len(syms)
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        merge = self._merge
        max_len = self._max_piece_len
        rev_merge: Dict[str, Tuple[str, str]] = {}
        unused = self._has_unused
        types = self._types

        # heap entries: (-score, left, right, length of the joined piece); the highest score pops first, the
        # leftmost on a tie (sentencepiece's SymbolPairComparator). An entry is stale once either side changed,
        # which the lengths reveal: a symbol only grows, and one that was absorbed is emptied.
        heap = []
        for i in range(n - 1):
            if frozen is not None and (frozen[i] or frozen[i + 1]):
                continue
            joined = syms[i] + syms[i + 1]
            hit = merge.get(joined)
            if hit is not None:
                heap.append((-hit[0], i, i + 1, len(joined)))
                if unused and types[hit[1]] == UNUSED:
                    rev_merge[joined] = (syms[i], syms[i + 1])
        heapq.heapify(heap)
        pop, push = heapq.heappop, heapq.heappush

        def add(left, right):
            if left < 0 or right < 0 or (frozen is not None and (frozen[left] or frozen[right])):
                return
            a, b = syms[left], syms[right]
            if len(a) + len(b) > max_len:
                return
            joined = a + b
            hit = merge.get(joined)
            if hit is not None:
                push(heap, (-hit[0], left, right, len(joined)))
                if unused and types[hit[1]] == UNUSED:
                    rev_merge[joined] = (a, b)

        while heap:
            _, left, right, size = pop(heap)
            a, b = syms[left], syms[right]
            if not a or not b or len(a) + len(b) != size:
                continue
            syms[left] = a + b
            syms[right] = ""
            after = nxt[right]
            nxt[left] = after
            if after >= 0:
                prv[after] = left
            add(prv[left], left)
            add(left, after)

        out: List[str] = []
        i = 0
        while i != -1:
            out.append(syms[i])
            i = nxt[i]
        if unused:
            out = self._resegment(out, rev_merge)
        return out

    def _resegment(self, symbols: List[str], rev_merge: Dict[str, Tuple[str, str]]) -> List[str]:
        """An UNUSED piece is split back into the symbols that made it, recursively."""
        out: List[str] = []
        stack = list(reversed(symbols))
        id_of, types = self._id_of, self._types
        while stack:
            w = stack.pop()
            i = id_of.get(w, self.unk_id)
            parts = rev_merge.get(w) if types[i] == UNUSED else None
            if parts is None:
                out.append(w)
            else:
                stack.append(parts[1])
                stack.append(parts[0])
        return out

    def _ids(self, symbols: List[str]) -> List[int]:
        """Symbols -> ids (SentencePieceProcessor::PopulateSentencePieceText): an unknown symbol becomes its UTF-8
        bytes with byte_fallback, otherwise a run of unknown symbols is one unk id."""
        id_of, unk = self._id_of, self.unk_id
        ids: List[int] = []
        prev_unk = False
        for w in symbols:
            i = id_of.get(w, unk)
            if i != unk:
                ids.append(i)
                prev_unk = False
            elif self._byte_fallback:
                byte_ids = self._byte_ids
                ids.extend([byte_ids[b] for b in w.encode("utf-8")])
                prev_unk = True
            else:
                if not prev_unk:
                    ids.append(unk)
                prev_unk = True
        return ids

    # -- decoding --------------------------------------------------------------------------------------------

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ids, as sentencepiece's DecodeIds (Meta's Llama 2 Tokenizer.decode): the first piece loses
        its leading space, control ids are empty, byte runs are UTF-8 (a bad byte gives U+FFFD)."""
        d = _Decoder(self)
        out = [d.feed(i) for i in ids]
        out.append(d.flush())
        return "".join(out)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The UTF-8 of decode(ids) (SentencePiece decodes to text: a bad byte is already U+FFFD)."""
        return self.decode(ids).encode("utf-8")

    def token_bytes(self, token_id: int) -> bytes:
        """What one id stands for, as bytes: a byte piece its byte, a control id nothing, the unknown id " ⁇ ",
        any other piece its text with "▁" as a space (no leading-space rule: that needs the ids before it)."""
        i = self._check_id(token_id)
        kind = self._decode_kind[i]
        if kind == 3:
            return bytes([self._byte_of[self._id_of[self._pieces[i]]]])
        if kind == 1:
            return b""
        if kind == 2:
            return self._unk_surface.encode("utf-8")
        return self._decode_text[i].encode("utf-8")

    def stream_decoder(self, continues: bool = False) -> "_Decoder":
        """A decoder that takes ids one at a time; the concatenation of its output equals decode(all ids).
        continues=True: the ids continue text that came before (a completion after its prompt), so the first
        piece keeps its leading space ("is" + "▁Paris" = "is Paris"), as llama.cpp's detokenize after the
        prompt's ids; decode() drops it, as sentencepiece does at the start of a text."""
        return _Decoder(self, continues)

    def _check_id(self, token_id) -> int:
        try:
            i = operator.index(token_id)
        except TypeError:
            raise TokenizerError(f"token ids must be integers, got {brief(token_id)}") from None
        if not 0 <= i < len(self._pieces):
            raise TokenizerError(
                f"token id {i} is outside the vocabulary of {self.source} (0..{len(self._pieces) - 1})")
        return i

    # -- vocabulary ------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    @property
    def n_words(self) -> int:
        """Meta's Llama 2 name for the vocabulary size."""
        return len(self._pieces)

    def id_to_piece(self, token_id: int) -> str:
        return self._pieces[self._check_id(token_id)]

    def piece_to_id(self, piece: str) -> int:
        """sentencepiece's PieceToId: the id of a piece, or the unknown id."""
        return self._id_of.get(piece, self.unk_id)

    def piece_type(self, token_id: int) -> str:
        return _TYPE_NAMES[self._types[self._check_id(token_id)]]

    def special_id(self, name: str) -> int:
        """The id of a special (control or unknown) piece by name, e.g. special_id("</s>")."""
        try:
            return self.special_tokens[name]
        except (KeyError, TypeError):
            raise TokenizerError(f"{brief(name)} is not a special token of {self.source}") from None

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({self.source!r}, vocab_size={self.vocab_size})"


class _Decoder:
    """Incremental SentencePiece decode: feed(id) -> the text it completes, flush() -> the rest.

    It keeps sentencepiece Decode's state: the run of byte pieces not yet read as UTF-8 (held back while it may
    still become a character), and whether the leading-space rule still applies (until some text came out or a
    piece that began with "▁" had its space taken)."""

    def __init__(self, tok: SentencePieceTokenizer, continues: bool = False):
        self._tok = tok
        self._bytes = codecs.getincrementaldecoder("utf-8")(errors=_ERRORS)
        self._in_bytes = False
        self._emitted = False
        self._bos_ws_seen = False
        self._is_bos_ws = not continues  # once off, off for good
        self._strip_leading = tok._add_dummy_prefix or tok._remove_extra_whitespaces

    def feed(self, token_id: int) -> str:
        tok = self._tok
        i = tok._check_id(token_id)
        kind = tok._decode_kind[i]
        if kind == 3:
            self._in_bytes = True
            out = self._bytes.decode(bytes([tok._byte_of[tok._id_of[tok._pieces[i]]]]))
            self._emitted = self._emitted or bool(out)
            return out
        out = self._end_bytes()
        if self._bos_ws_seen or self._emitted:
            self._is_bos_ws = False
        if kind == 1:
            text, self._bos_ws_seen = "", False
        elif kind == 2:
            text, self._bos_ws_seen = tok._unk_surface, False
        else:
            text = tok._decode_text[i]
            has_bos_ws = False
            if self._is_bos_ws and self._strip_leading and tok._pieces[i][0] == SPACE:
                text, has_bos_ws = text[1:], True
            self._bos_ws_seen = has_bos_ws and not tok._remove_extra_whitespaces
        self._emitted = self._emitted or bool(text)
        return out + text

    def _end_bytes(self) -> str:
        if not self._in_bytes:
            return ""
        self._in_bytes = False
        out = self._bytes.decode(b"", final=True)
        self._bytes.reset()
        self._emitted = self._emitted or bool(out)
        return out

    def flush(self) -> str:
        """The text still held back (bytes that are no whole character give U+FFFD each)."""
        return self._end_bytes()
