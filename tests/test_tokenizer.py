"""Llama 3 tokenizer (Meta's tiktoken file) against Meta's own golden ids, Meta's Tokenizer class and tiktoken."""
import base64
import importlib
import os
import random
import re
import sys
import time
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_cx.tokenizers import _bpe_py, _pretokenize, _unicode_data
from llama_cx.errors import FormatError, TokenizerError
from llama_cx.tokenizers import Tokenizer
from llama_cx.tokenizers.tiktoken_format import LLAMA3_PATTERN

from _tokenizer_corpus import INTERESTING, corpus, long_samples, random_strings

try:
    from llama_cx.tokenizers import _bpe
except ImportError:  # the compiled core is tested when it is built
    _bpe = None
needs_compiled = pytest.mark.skipif(_bpe is None, reason="llama_cx.tokenizers._bpe is not built")


@pytest.fixture(scope="module")
def meta_tokenizer_module(llama_models_root):
    """Meta's llama_models/llama3/tokenizer.py itself (it runs on tiktoken)."""
    if llama_models_root not in sys.path:
        sys.path.insert(0, llama_models_root)
    return importlib.import_module("llama_models.llama3.tokenizer")


@pytest.fixture(scope="module")
def meta(meta_tokenizer_module, llama3_tokenizer_path):
    return meta_tokenizer_module.Tokenizer(Path(llama3_tokenizer_path))


@pytest.fixture(scope="module")
def tok(llama3_tokenizer_path):
    return Tokenizer.from_file(llama3_tokenizer_path)


@pytest.fixture(scope="module")
def ref(meta, llama3_tokenizer_path):
    """tiktoken built from the same file, with Meta's pattern and special tokens."""
    ranks = tiktoken.load.load_tiktoken_bpe(llama3_tokenizer_path)
    return tiktoken.Encoding(name="llama3-test", pat_str=meta.pat_str, mergeable_ranks=ranks,
                             special_tokens=meta.special_tokens)


@pytest.fixture(scope="module")
def samples():
    return corpus()


def _first_mismatches(pairs, limit=3):
    return [(s[:80], a[:12], b[:12]) for s, a, b in pairs if a != b][:limit]


# -- Meta's golden cases (llama_models/llama3/tests/api/test_tokenizer.py, ported) ------------------------------


def test_meta_special_tokens(tok):
    assert tok.special_tokens["<|begin_of_text|>"] == 128000


def test_meta_encode(tok):
    assert tok.encode("This is a test sentence.", bos=True, eos=True) == [128000, 2028, 374, 264, 1296, 11914, 13, 128001]


def test_meta_decode(tok):
    assert tok.decode([128000, 2028, 374, 264, 1296, 11914, 13, 128001]) == \
        "<|begin_of_text|>This is a test sentence.<|end_of_text|>"


# -- vocabulary and special tokens ---------------------------------------------------------------------------------


def test_special_tokens_are_metas(tok, meta):
    assert tok.special_tokens == meta.special_tokens
    assert len(tok.special_tokens) == 256
    assert tok.vocab_size == meta.n_words == 128256
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (meta.bos_id, meta.eos_id, meta.pad_id)
    assert list(tok.stop_ids) == meta.stop_tokens
    assert tok.special_id("<|eot_id|>") == meta.eot_id == 128009
    assert tok.special_id("<|eom_id|>") == meta.eom_id
    assert tok.special_id("<|python_tag|>") == meta.python_tag_id
    assert tok.special_id("<|reserved_special_token_245|>") == 128255
    assert tok.is_special(128000) and tok.is_special(128255) and not tok.is_special(127999)
    with pytest.raises(TokenizerError, match="not a special token"):
        tok.special_id("<|no_such_token|>")


def test_base_token_count_is_read_from_the_file(tmp_path, llama3_tokenizer_path, meta):
    """A file with 3000 tokens: special ids start at 3000, and encoding matches tiktoken on that file."""
    lines = Path(llama3_tokenizer_path).read_text().splitlines()[:3000]
    path = tmp_path / "small.model"
    path.write_text("\n".join(lines) + "\n")
    small = Tokenizer.from_file(path)
    assert small.bos_id == 3000 and small.vocab_size == 3256 and small.special_id("<|eot_id|>") == 3009
    ranks = tiktoken.load.load_tiktoken_bpe(str(path))
    specials = {name: 3000 + i for i, name in enumerate(meta.special_tokens)}
    small_ref = tiktoken.Encoding(name="small", pat_str=meta.pat_str, mergeable_ranks=ranks, special_tokens=specials)
    texts = corpus(n_random=200)
    assert _first_mismatches((s, small.encode(s), small_ref.encode(s, disallowed_special=())) for s in texts) == []


# -- encoding equals tiktoken ---------------------------------------------------------------------------------------


def test_pattern_is_metas(meta):
    assert LLAMA3_PATTERN == meta.pat_str


def test_corpus_matches_tiktoken(tok, ref, samples):
    pairs = ((s, tok.encode(s), ref.encode(s, allowed_special=set(), disallowed_special=())) for s in samples)
    assert _first_mismatches(pairs) == []


def test_corpus_matches_tiktoken_allowed_all(tok, ref, samples):
    pairs = ((s, tok.encode(s, allowed_special="all"), ref.encode(s, allowed_special="all")) for s in samples)
    assert _first_mismatches(pairs) == []


def test_allowed_subset_matches_tiktoken(tok, ref):
    text = "a<|eot_id|>b<|eom_id|>c<|begin_of_text|><|eot_id|><|eot_id|"
    for allowed in ({"<|eot_id|>"}, {"<|eom_id|>", "<|begin_of_text|>"}, set()):
        ours = tok.encode(text, allowed_special=allowed)
        assert ours == ref.encode(text, allowed_special=allowed, disallowed_special=())
        assert [tok.decode([i]) for i in ours if tok.is_special(i)] == \
            [m for m in re.findall(r"<\|[a-z_]+\|>", text) if m in allowed]


def test_default_encodes_special_text_as_text(tok, meta):
    """Meta's default (allowed_special=set(), disallowed_special=()): "<|eot_id|>" typed by a user is plain text."""
    text = "<|begin_of_text|>hi<|eot_id|><|start_header_id|>"
    ids = tok.encode(text)
    assert ids == meta.encode(text, bos=False, eos=False)
    assert not any(tok.is_special(i) for i in ids)
    assert tok.decode(ids) == text


def test_disallowed_special(tok, ref):
    with pytest.raises(ValueError):
        ref.encode("a<|eot_id|>", disallowed_special="all")
    with pytest.raises(TokenizerError) as e:
        tok.encode("a<|eot_id|>", disallowed_special="all")
    assert "<|eot_id|>" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(TokenizerError):
        tok.encode("a<|eot_id|>", disallowed_special={"<|eot_id|>"})
    # other special text is still plain text; allowed beats disallowed "all"
    assert tok.encode("a<|eom_id|>", disallowed_special={"<|eot_id|>"}) == \
        ref.encode("a<|eom_id|>", disallowed_special={"<|eot_id|>"})
    assert tok.encode("a<|eot_id|>", allowed_special={"<|eot_id|>"}, disallowed_special="all") == \
        ref.encode("a<|eot_id|>", allowed_special={"<|eot_id|>"}, disallowed_special="all")
    with pytest.raises(TypeError):
        tok.encode("x", allowed_special="<|eot_id|>")


def test_bos_eos(tok):
    assert tok.encode("", bos=True, eos=True) == [128000, 128001]
    assert tok.encode("") == []
    assert tok.encode("hi", bos=True)[0] == 128000 and tok.encode("hi", eos=True)[-1] == 128001


def test_long_inputs_match_metas_slicing(tok, meta):
    """Meta encodes long text in slices (400k-char windows, runs of at most 25k (non-)whitespace chars)."""
    for s in long_samples():
        assert tok.encode(s) == meta.encode(s, bos=False, eos=False), s[:40]
    s = "x<|eot_id|>" * 37_000  # 407k chars: the window edge falls inside a special token
    assert tok.encode(s, allowed_special="all") == meta.encode(s, bos=False, eos=False, allowed_special="all")


def test_meta_slices_match_metas_function(meta):
    for s in long_samples() + ["", "a", " a ", "\u001c" * 30_000 + "x"]:
        assert list(_pretokenize._split_whitespaces_or_nonwhitespaces(s, 25_000)) == \
            list(meta._split_whitespaces_or_nonwhitespaces(s, 25_000))
        assert list(_pretokenize.meta_slices(s)) == [
            sub for i in range(0, len(s), 400_000) for sub in meta._split_whitespaces_or_nonwhitespaces(s[i:i + 400_000], 25_000)]


def test_lone_surrogates_like_tiktoken(tok, ref):
    for s in ["a\ud800b", "\udfff", "\ud83d\ude00", "x\ud83d", "\ud83d\ude00\ud800"]:
        assert tok.encode(s) == ref.encode(s, disallowed_special=()), repr(s)


def test_pathological_inputs_stay_fast(tok, meta):
    """Long pieces merge in O(n log n): a 50k-byte piece (Meta caps pieces at 25k chars) takes milliseconds."""
    for s in ["\u0301" * 25_000, "a" * 300_000, " " * 100_000, "😀" * 60_000]:
        t = time.perf_counter()
        ids = tok.encode(s)
        assert time.perf_counter() - t < 5.0
        assert tok.decode(ids) == s
    assert tok.encode("\u0301" * 25_000) == meta.encode("\u0301" * 25_000, bos=False, eos=False)


# -- decoding ------------------------------------------------------------------------------------------------------


def test_roundtrip_corpus(tok, samples):
    for s in samples + long_samples():
        assert tok.decode(tok.encode(s)) == s
        assert tok.decode(tok.encode(s, allowed_special="all")) == s


def test_decode_matches_tiktoken_on_random_ids(tok, ref):
    """Random ids make invalid UTF-8; both replace it the same way (errors='replace')."""
    rng = random.Random(7)
    for _ in range(300):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 12))]
        assert tok.decode(ids) == ref.decode(ids)
        assert tok.decode_bytes(ids) == ref.decode_bytes(ids)


def test_decode_bad_ids(tok):
    for bad in ([-1], [128256], [5, 10**9], [1.5], ["x"], [None]):
        with pytest.raises(TokenizerError) as e:
            tok.decode(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(TokenizerError, match=r"0\.\.128255"):
        tok.decode([128256])
    with pytest.raises(TokenizerError):
        tok.token_bytes(-5)
    assert tok.decode([]) == ""


def _stream(tok, ids):
    d = tok.stream_decoder()
    parts = [d.feed(i) for i in ids]
    return parts, "".join(parts) + d.flush()


def test_stream_decoder_equals_decode(tok, samples):
    for s in samples:
        ids = tok.encode(s, allowed_special="all")
        assert _stream(tok, ids)[1] == tok.decode(ids) == s
    rng = random.Random(11)
    byte_ids = list(range(256))  # single bytes, in any order: cut characters and invalid sequences
    for _ in range(500):
        ids = [rng.choice(byte_ids) if rng.random() < 0.7 else rng.randrange(tok.vocab_size)
               for _ in range(rng.randrange(1, 16))]
        assert _stream(tok, ids)[1] == tok.decode(ids)


def test_stream_decoder_waits_for_whole_characters(tok):
    byte_id = {tok.token_bytes(i): i for i in range(tok.vocab_size) if len(tok.token_bytes(i)) == 1}
    s = "a漢😀é"
    parts, text = _stream(tok, [byte_id[bytes([b])] for b in s.encode("utf-8")])  # one id per byte
    assert text == s
    assert [p for p in parts if p] == ["a", "漢", "😀", "é"]


# -- hypothesis: equality with tiktoken and round trips ---------------------------------------------------------

_text = st.one_of(st.text(max_size=120), st.text(alphabet=[c for c in INTERESTING if len(c) == 1], max_size=60),
                  st.lists(st.sampled_from(INTERESTING + ["<|eot_id|>", "<|begin_of_text|>"]), max_size=20).map("".join))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_text)
def test_hypothesis_matches_tiktoken(tok, ref, s):
    assert tok.encode(s) == ref.encode(s, disallowed_special=())
    assert tok.encode(s, allowed_special="all") == ref.encode(s, allowed_special="all")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_text)
def test_hypothesis_roundtrip(tok, s):
    ids = tok.encode(s)
    assert tok.decode(ids) == s
    assert _stream(tok, ids)[1] == s


# -- pre-tokenizer classes against tiktoken's regex engine --------------------------------------------------------


def _probe_code_points():
    rng = random.Random(3)
    cps = set(range(0x00, 0x250)) | {0x1680, 0x180E, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0xFEFF, 0x17F, 0x212A}
    cps |= set(range(0x2000, 0x2010)) | {rng.randrange(0x110000) for _ in range(1500)}
    table = _pretokenize.class_table()
    import unicodedata

    newer = [c for c in range(0x110000) if table[c] in (1, 2) and unicodedata.category(chr(c)) == "Cn"]
    cps |= set(newer[::16])  # assigned after this Python's Unicode version
    return sorted(c for c in cps if not 0xD800 <= c < 0xE000)


def test_two_char_pieces_match_tiktoken_regex(tok):
    """For s = a + c, tiktoken with s in its vocabulary gives 1 id iff its regex keeps s one piece: compare with our
    scanner for many code points c, in both orders, next to chars of every class."""
    neighbours = ["a", "1", " ", "'", "\n", "\r", "!", "\t", "\u00a0", "\u0301", "漢"]
    probes = sorted({p for c in map(chr, _probe_code_points()) for n in neighbours for p in (n + c, c + n)})
    ranks = {bytes([b]): b for b in range(256)}
    for p in probes:
        ranks.setdefault(p.encode("utf-8"), len(ranks))
    enc = tiktoken.Encoding(name="probe", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens={})
    wrong = [p for p, ids in zip(probes, map(enc.encode_ordinary, probes))
             if (len(ids) == 1) != (len(_pretokenize.split(p, "llama3")) == 1)]
    assert wrong == []


def test_unicode_table_agrees_with_python_where_python_knows():
    """Our Unicode 16.0 classes equal unicodedata's (this Python's Unicode version) for every assigned code point;
    code points Python does not know yet are the only differences."""
    import unicodedata

    table = _pretokenize.class_table()
    cls = {"L": 1, "N": 2}
    spaces = {c for k in range(0, len(_unicode_data.WHITE_SPACE), 2)
              for c in range(_unicode_data.WHITE_SPACE[k], _unicode_data.WHITE_SPACE[k + 1] + 1)}
    for c in range(0x110000):
        cat = unicodedata.category(chr(c))
        want = 3 if c in spaces else cls.get(cat[0], 0)
        assert table[c] == want or (cat == "Cn" and table[c] in (1, 2)), hex(c)
    assert all(chr(c).isspace() == (chr(c) in _pretokenize.PY_SPACES) for c in range(0x110000))


# -- the compiled core against its pure-Python twin ---------------------------------------------------------------


@pytest.fixture(scope="module")
def base_bytes(llama3_tokenizer_path):
    ranks = tiktoken.load.load_tiktoken_bpe(llama3_tokenizer_path)
    out = [None] * len(ranks)
    for b, r in ranks.items():
        out[r] = b
    return out


@needs_compiled
def test_compiled_scanner_equals_python_scanner():
    from llama_cx.tokenizers.tokenizer import _py_space_table

    texts = corpus(n_random=800) + random_strings(99, 300, max_len=300)
    for pattern in _pretokenize.PATTERNS:
        core = _bpe.Core([bytes([b]) for b in range(256)], None, pattern, True, _pretokenize.class_table(),
                         _py_space_table())
        for s in texts:
            assert core.split(s) == _pretokenize.split(s, pattern), (pattern, s[:60])


@needs_compiled
def test_compiled_core_equals_python_core(tok, base_bytes):
    py = _bpe_py.Core(base_bytes, None, "llama3", True)
    texts = corpus(n_random=300) + ["ab!" * 9000]
    for s in texts:
        assert tok._core.encode_ordinary(s, True) == py.encode_ordinary(s, True)


@needs_compiled
def test_heap_merge_equals_linear_merge(tok, base_bytes, monkeypatch):
    """Long pieces use the heap merge: force it on every piece and compare, and on long random pieces against the
    Python twin's linear merge."""
    from llama_cx.tokenizers.tokenizer import _py_space_table

    core = _bpe.Core(base_bytes, None, "llama3", True, _pretokenize.class_table(), _py_space_table())
    core.short_piece = 1
    for s in corpus(n_random=300):
        assert core.encode_ordinary(s, True) == tok.encode(s)
    monkeypatch.setattr(_bpe_py, "SHORT_PIECE", 10**9)
    py = _bpe_py.Core(base_bytes, None, "llama3", True)
    rng = random.Random(5)
    for n in (65, 100, 1000, 3000):
        piece = bytes(rng.choice(b"abcde \xe6\xbc\xa2!") for _ in range(n))
        assert core.encode_piece(piece) == py.encode_piece(piece)


# -- bad tokenizer files --------------------------------------------------------------------------------------------


def _write(tmp_path, lines, name="tokenizer.model"):
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _byte_lines():
    return [base64.b64encode(bytes([b])) + b" " + str(b).encode() for b in range(256)]


def _format_error(path, match):
    with pytest.raises(FormatError) as e:
        Tokenizer.from_file(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    assert match in msg, msg
    return msg


def test_good_minimal_file(tmp_path):
    t = Tokenizer.from_file(_write(tmp_path, _byte_lines() + [base64.b64encode(b"ab") + b" 256"]))
    assert t.vocab_size == 257 + 256 and t.encode("xab") == [ord("x"), 256]


def test_missing_file(tmp_path):
    _format_error(tmp_path / "nope.model", "not found")


def test_directory_instead_of_file(tmp_path):
    _format_error(tmp_path, "cannot read")


def test_empty_file(tmp_path):
    _format_error(_write(tmp_path, [b""]), "no tokens")


def test_malformed_line(tmp_path):
    lines = _byte_lines()
    lines[10] = b"IQ=="
    _format_error(_write(tmp_path, lines), ":11: expected")


def test_bad_base64(tmp_path):
    lines = _byte_lines()
    lines[20] = b"!!notbase64 20"
    _format_error(_write(tmp_path, lines), ":21: token")


def test_bad_rank(tmp_path):
    lines = _byte_lines()
    lines[5] = base64.b64encode(bytes([5])) + b" -5"
    _format_error(_write(tmp_path, lines), ":6: rank")


def test_duplicate_rank(tmp_path):
    lines = _byte_lines() + [base64.b64encode(b"ab") + b" 7"]
    _format_error(_write(tmp_path, lines), ":257: rank 7 already given on line 8")


def test_duplicate_token(tmp_path):
    lines = _byte_lines() + [base64.b64encode(b"a") + b" 256"]
    _format_error(_write(tmp_path, lines), ":257: token b'a' already given on line 98")


def test_non_contiguous_ranks(tmp_path):
    lines = _byte_lines() + [base64.b64encode(b"ab") + b" 300"]
    _format_error(_write(tmp_path, lines), ":257: rank 300 leaves a gap")


def test_missing_single_byte(tmp_path):
    lines = _byte_lines()
    lines[200] = base64.b64encode(b"zz") + b" 200"
    _format_error(_write(tmp_path, lines), "no token for the byte 0xc8")


def test_binary_garbage(tmp_path):
    path = tmp_path / "garbage.model"
    path.write_bytes(os.urandom(2000).replace(b"\n", b"x") + b" 1 2 3")
    _format_error(path, ":1:")
