"""Target `tokenizer`: encode/decode of the real tokenizers on arbitrary strings and id lists.

Tokenizers: Meta's Llama 3 tokenizer.model and SmolLM2's byte-level BPE from its GGUF metadata.
Properties: encode gives ids inside the vocabulary; decode(encode(s)) == s for every string without lone
surrogates (those become U+FFFD, as tiktoken does); special-token text follows allowed/disallowed_special;
decode of any list of ints gives a str or a LlamaCxError (ids out of range, huge, negative); the streaming
decoder's pieces concatenate to decode(ids). Inputs include pathological runs (100k spaces, digits, one
letter, mixed scripts) that would expose quadratic pre-tokenization or merging.
"""
import functools
import json

from hypothesis import strategies as st

from llama_cx.formats.gguf import GGUFFile
from llama_cx.tokenizers import Tokenizer

from ._corpus import llama3_tokenizer_path, smollm2_gguf_path
from ._engine import BOUNDARY, Input

NAME = "tokenizer"
TIMEOUT = 20.0


def _without_surrogates(text: str) -> str:
    """tiktoken's treatment of surrogates: a pair becomes its character, a lone one U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


@functools.lru_cache(maxsize=None)
def tokenizers():
    with GGUFFile(smollm2_gguf_path()) as gf:
        smol = Tokenizer.from_gguf_metadata(gf.metadata, source=gf.path)
    return {"llama3": Tokenizer.from_file(llama3_tokenizer_path()), "smollm2": smol}


@functools.lru_cache(maxsize=None)
def _byte_tokens(name) -> frozenset:
    """The bytes that have a token of their own: only text made of them must survive a round trip (SmolLM2's
    vocabulary has no token for 21 bytes, e.g. 0xF1, the lead byte of U+40000..U+7FFFF; they are dropped)."""
    tok = tokenizers()[name]
    singles = {tok.token_bytes(i) for i in range(tok.vocab_size) if len(tok.token_bytes(i)) == 1}
    return frozenset(b[0] for b in singles)


def seeds():
    return []


_SPECIALS = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|reserved_special_token_5|>", "<|im_start|>",
             "<|endoftext|>", "<|", "|>", "<|eot_id"]
_PIECES = st.one_of(
    st.text(max_size=30),
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.sampled_from(_SPECIALS + [" ", "  ", "\n", "\r\n", "\t", "'s", "'LL", "123", "١٢٣", "ﬀ", "\u200b", "\ufeff",
                                 "e\u0301", "🦙", "日本語", "\x00", "\udcff", "\ud83e\udd99", "ı", "ǅ"]),
)
_TEXTS = st.lists(_PIECES, max_size=12).map("".join)
_RUNS = st.tuples(st.sampled_from([" ", "a", "1", "\n", " a", "日", "🦙", "a1 ", ".\n", "'s", "<|eot_id|>", "\u0301"]),
                  st.integers(1, 100_000)).map(lambda t: t[0] * (t[1] // len(t[0]) + 1))
_IDS = st.lists(st.one_of(st.integers(0, 130_000), st.sampled_from(BOUNDARY), st.integers(-(2**70), 2**70),
                          st.sampled_from([-1, 49151, 49152, 128255, 128256, 128000])), max_size=20)
_ALLOWED = st.sampled_from([None, "all", ("<|eot_id|>",), ("<|im_start|>",), ()])
_DISALLOWED = st.sampled_from([(), "all", ("<|begin_of_text|>",)])


def inputs(_seeds):
    text_case = st.tuples(st.sampled_from(["llama3", "smollm2"]), st.one_of(_TEXTS, _TEXTS, _RUNS), _ALLOWED,
                          _DISALLOWED)
    ids_case = st.tuples(st.sampled_from(["llama3", "smollm2"]), _IDS)
    return st.one_of(
        text_case.map(lambda c: Input(json.dumps(["text", *c], ensure_ascii=True).encode(),
                                      f"encode {c[0]} {c[1][:200]!r} (len {len(c[1])}) allowed={c[2]} disallowed={c[3]}")),
        ids_case.map(lambda c: Input(json.dumps(["ids", *c]).encode(), f"decode {c[0]} {c[1]!r}")),
    )


def execute(data: bytes):
    kind, name, *args = json.loads(data)
    tok = tokenizers()[name]
    if kind == "text":
        text, allowed, disallowed = args
        allowed = tuple(allowed) if isinstance(allowed, list) else allowed
        disallowed = tuple(disallowed) if isinstance(disallowed, list) else disallowed
        ids = tok.encode(text, allowed_special=allowed, disallowed_special=disallowed)
        assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
        out = tok.decode(ids)
        if set(_without_surrogates(text).encode()) <= _byte_tokens(name):
            assert out == _without_surrogates(text), (text[:200], out[:200])
        dec = tok.stream_decoder()
        assert "".join(dec.feed(i) for i in ids) + dec.flush() == out
    else:
        (ids,) = args
        out = tok.decode(ids)
        assert isinstance(out, str)
        dec = tok.stream_decoder()
        assert "".join(dec.feed(i) for i in ids) + dec.flush() == out
