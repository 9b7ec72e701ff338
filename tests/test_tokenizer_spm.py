"""The SentencePiece tokenizer (Llama 2) against the `sentencepiece` library and llama.cpp's test vectors.

Vocabulary: llama.cpp's ggml-vocab-llama-spm.gguf (Llama 2's 32,000 pieces), from the llama-cpp-python source
package, and the tokenizer.model that sentencepiece's own protobuf module writes from it (conftest
`llama_spm_vocab_dir`). Smaller models trained by sentencepiece's trainer cover what Llama 2's does not use:
user-defined and control symbols, no byte fallback, extra-whitespace removal, UNUSED pieces, suffix whitespace.
"""
import io
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sentencepiece = pytest.importorskip("sentencepiece")
pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")

from _spm import processor  # noqa: E402
from _tokenizer_corpus import corpus  # noqa: E402
from llama_cx.errors import FormatError, TokenizerError  # noqa: E402
from llama_cx.formats.gguf import GGUFFile  # noqa: E402
from llama_cx.tokenizers.spm import SentencePieceTokenizer, piece_count, tokenizer_model_kind  # noqa: E402

VOCAB = "ggml-vocab-llama-spm.gguf"

NASTY = [
    # whitespace runs, leading/trailing spaces, newlines, tabs
    "", " ", "  ", "   ", " " * 17, " " * 33, "\t", "\n", "\r\n", "\n\n\n", " \n ", "\t\t x", "a  b", "a   b",
    "a" + " " * 20 + "b", " Hello", "  Hello", "   Hello", "Hello ", "Hello  ", "Hello\n", " \n\tHello\t\n ",
    "line1\nline2\r\nline3\rline4", "    def f(x):\n        return x\n", "\u2581", "\u2581\u2581x", "a\u2581 b",
    # emoji, CJK, combining marks, bytes absent from the vocabulary (byte fallback)
    "🦙 llama", "👨‍👩‍👧‍👦", "🇺🇸🇯🇵", "中文文本，包括标点符号。", "日本語のテキスト", "한국어", "ไทยไม่มีช่องว่าง",
    "e\u0301", "𝕳𝖊𝖑𝖑𝖔", "\ue000\uf8ff", "\U000f0000\U0010fffd", "\x00\x01\x7f", "\ufffd", "\U0001e5d0",
    "ᚠᚢᚦᚨᚱᚲ", "𓀀𓀁𓀂", "Ꙭ", "\u0378",
    # what looks like a special token is text
    "<s>", "</s>", "<unk>", "<0x41>", "[INST] hi [/INST]", "<<SYS>>\nsys\n<</SYS>>\n\n",
    # numbers (Llama 2 splits digits)
    "1234567890", "3.14159", "1,000,000", "x²",
]


def _long_words():
    rng = random.Random(7)
    return {
        "a x 100k": "a" * 100_000,
        "letters 100k": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(100_000)),
        "spaces 100k": " " * 100_000,
        "emoji 20k": "😀" * 20_000,
        "cjk 30k": "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(30_000)),
    }


@pytest.fixture(scope="module")
def model_path(llama_spm_vocab_dir):
    return os.path.join(llama_spm_vocab_dir, "tokenizer.model")


@pytest.fixture(scope="module")
def sp(model_path):
    return sentencepiece.SentencePieceProcessor(model_file=model_path)


@pytest.fixture(scope="module")
def ours(model_path):
    return SentencePieceTokenizer.from_file(model_path)


@pytest.fixture(scope="module")
def ours_gguf(llama_spm_vocab_dir):
    gf = GGUFFile(os.path.join(llama_spm_vocab_dir, VOCAB))
    try:
        return SentencePieceTokenizer.from_gguf_metadata(gf.metadata, gf.path)
    finally:
        gf.close()


def _texts():
    return NASTY + corpus()


# -- the Llama 2 vocabulary ------------------------------------------------------------------------------------


def test_vocabulary_facts(ours, sp):
    assert ours.vocab_size == ours.n_words == sp.vocab_size() == 32000
    assert (ours.bos_id, ours.eos_id, ours.unk_id) == (sp.bos_id(), sp.eos_id(), sp.unk_id()) == (1, 2, 0)
    assert ours.pad_id is None and sp.pad_id() == -1
    assert ours.stop_ids == (2,)
    assert ours.special_tokens == {"<unk>": 0, "<s>": 1, "</s>": 2}
    assert all(ours.id_to_piece(i) == sp.id_to_piece(i) for i in range(0, 32000, 97))
    assert ours.piece_to_id("▁Hello") == sp.piece_to_id("▁Hello") == 15043
    assert ours.piece_to_id("no such piece") == 0
    assert ours.encode("Hello world", bos=True) == [1, 15043, 3186]  # Meta's Llama 2 tokenizer
    assert ours.encode("Hello world", bos=True, eos=True) == [1, 15043, 3186, 2]


def test_ids_match_sentencepiece_on_nasty_corpus(ours, sp):
    texts = _texts()
    assert len(texts) > 1500
    for t in texts:
        assert ours.encode(t) == sp.encode(t), repr(t[:80])


def test_whole_text_bpe_equals_word_by_word(model_path, ours, sp):
    """Llama 2's pieces never hold "▁" after another character, so encode cuts the text into words before each
    such "▁" and caches them; BPE over the whole text (what sentencepiece runs) must give the same ids."""
    assert ours._words is not None
    whole = SentencePieceTokenizer.from_file(model_path)
    whole._words = None
    for t in NASTY + corpus(seed=9, n_random=300) + ["the cat sat on the mat " * 200]:
        assert whole.encode(t) == ours.encode(t) == sp.encode(t), repr(t[:80])


def test_gguf_vocabulary_gives_identical_ids(ours, ours_gguf):
    assert ours_gguf.vocab_size == 32000 and (ours_gguf.bos_id, ours_gguf.eos_id) == (1, 2)
    assert ours_gguf.add_bos and ours_gguf.special_tokens == ours.special_tokens
    for t in _texts():
        assert ours_gguf.encode(t) == ours.encode(t), repr(t[:80])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab ▁\t\n.,'1😀中\x00é") + ["\u0301", "\U0010fffd"]), max_size=40)
       | st.text(max_size=40))
def test_ids_match_sentencepiece_hypothesis(ours, sp, text):
    ids = ours.encode(text)
    try:
        want = sp.encode(text)
    except UnicodeEncodeError:  # lone surrogates: sentencepiece takes UTF-8 only; we replace them by U+FFFD
        return
    assert ids == want
    assert ours.decode(ids) == sp.decode(ids)


@pytest.mark.parametrize("name", sorted(_long_words()))
def test_very_long_words_match_sentencepiece(ours, sp, name):
    """Whole 100 KB words: BPE runs over one symbol list this long (no pre-tokenizer); a heap keeps it
    O(n log n) (about a second in Python, measured; not asserted)."""
    text = _long_words()[name]
    assert ours.encode(text) == sp.encode(text)


def test_llama_cpp_vectors(ours, ours_gguf, llama_spm_vocab_dir):
    """llama.cpp's tests/test-tokenizer-0 vectors: .inp holds the texts, each followed by
    "\\n__ggml_vocab_test__\\n"; .out one line of space-separated ids per text (no BOS), written by
    convert_hf_to_gguf_update.py from Hugging Face's tokenizer."""
    with open(os.path.join(llama_spm_vocab_dir, VOCAB + ".inp"), encoding="utf-8", newline="") as f:
        texts = f.read().split("\n__ggml_vocab_test__\n")
    with open(os.path.join(llama_spm_vocab_dir, VOCAB + ".out"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    assert texts[-1] == "" and lines[-1] == "" and len(texts) == len(lines) > 40
    for text, line in zip(texts[:-1], lines[:-1]):
        want = [int(x) for x in line.split()]
        assert ours.encode(text) == want, repr(text)
        assert ours_gguf.encode(text) == want, repr(text)


def test_decode_matches_sentencepiece(ours, sp):
    for t in _texts():
        ids = sp.encode(t)
        assert ours.decode(ids) == sp.decode(ids), repr(t[:80])


def test_round_trip(ours):
    """Identity normalization + byte fallback: decode(encode(t)) gives t back, except that a "▁" in the text
    comes back as a space (it is what a space becomes)."""
    for t in _texts():
        if "▁" in t:
            assert ours.decode(ours.encode(t)) == t.replace("▁", " ")
            continue
        assert ours.decode(ours.encode(t)) == t, repr(t[:80])


def test_decode_random_ids_and_stream(ours, sp):
    """Random ids, byte pieces and control ids among them: sentencepiece's leading-space rule, its per-byte
    U+FFFD for bytes that make no character, and the stream decoder gives the same text piece by piece."""
    rng = random.Random(3)
    byte_ids = list(range(3, 259))
    for n in range(400):
        k = rng.randrange(12)
        ids = []
        for _ in range(k):
            r = rng.random()
            ids.append(rng.choice(byte_ids) if r < 0.45 else rng.randrange(3) if r < 0.55 else rng.randrange(32000))
        want = sp.decode(ids)
        assert ours.decode(ids) == want, ids
        d = ours.stream_decoder()
        assert "".join(d.feed(i) for i in ids) + d.flush() == want, ids


def test_stream_decoder_holds_back_split_characters(ours):
    ids = ours.encode("🦙 x")  # 🦙 is not a piece: four byte pieces after "▁"
    assert ids == [29871, 243, 162, 169, 156, 921]
    d = ours.stream_decoder()
    assert [d.feed(i) for i in ids] == ["", "", "", "", "🦙", " x"]
    assert d.flush() == ""
    d = ours.stream_decoder()
    # a cut character: one U+FFFD per byte; the space stays, text came before it
    assert [d.feed(i) for i in [243, 162, 29871]] == ["", "", "\ufffd\ufffd "]
    assert ours.decode([243, 162]) == "\ufffd\ufffd"


def test_leading_space_rule(ours, sp):
    for ids in ([15043], [29871, 15043], [1, 15043], [1, 29871, 2, 15043], [29871], [29871, 29871, 15043], [13, 15043],
                [259, 15043], [2, 259]):
        assert ours.decode(ids) == sp.decode(ids), ids
    assert ours.decode([15043, 3186]) == "Hello world"


def test_special_token_text(ours):
    assert ours.encode("<s>") == [529, 29879, 29958]  # text by default, as sentencepiece
    assert ours.encode("a<s>b", allowed_special={"<s>"}) == ours.encode("a") + [1] + ours.encode("b")
    assert ours.encode("</s>", allowed_special="all") == [2]
    with pytest.raises(TokenizerError) as e:
        ours.encode("x</s>", disallowed_special="all")
    assert "'</s>'" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(TokenizerError):
        ours.decode([32000])
    with pytest.raises(TokenizerError):
        ours.decode([-1])
    assert ours.special_id("</s>") == 2 and ours.is_special(1) and not ours.is_special(3)
    with pytest.raises(TokenizerError):
        ours.special_id("<|eot_id|>")


def test_lone_surrogates_become_replacement_character(ours):
    assert ours.encode("a\ud800b") == ours.encode("a\ufffdb")


def test_tokenizer_model_kind(model_path, llama3_tokenizer_path, tmp_path):
    assert tokenizer_model_kind(model_path) == "sentencepiece"
    assert tokenizer_model_kind(llama3_tokenizer_path) == "tiktoken"
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"garbage that is neither\n")
    assert tokenizer_model_kind(bad) == "tiktoken"  # whose reader then names the bad line


def test_piece_count(model_path, sp, tmp_path):
    """What a Llama 2 params.json's vocab_size -1 stands for (Meta: tokenizer.n_words), read without building."""
    assert piece_count(model_path) == sp.vocab_size() == 32000
    data = open(model_path, "rb").read()
    for body, problem in [(data[:1000], "truncated protobuf"), (b"", "empty file"),
                          (b"\x12\x00", "no pieces")]:  # only an empty trainer_spec
        bad = tmp_path / "tokenizer.model"
        bad.write_bytes(body)
        with pytest.raises(FormatError) as e:
            piece_count(bad)
        assert problem in str(e.value) and str(bad) in str(e.value) and "\n" not in str(e.value)


# -- other SentencePiece BPE models, trained by sentencepiece itself --------------------------------------------

TRAIN_TEXT = (
    "The quick brown fox jumps over the lazy dog. Tool calls look like <tool> and @@ joins words.\n"
    "Pack my box with five dozen liquor jugs!   Several    spaces here.\n"
    "Sphinx of black quartz, judge my vow. 1234 5678 90.\n"
    "naïve café, résumé, über, façade; données et Straße.\n"
) * 30


def _trained(**kw):
    out = io.BytesIO()
    args = dict(model_type="bpe", vocab_size=200, character_coverage=1.0, normalization_rule_name="identity",
                user_defined_symbols=["<tool>", "@@"], control_symbols=["<ctl>"], byte_fallback=False,
                remove_extra_whitespaces=False, hard_vocab_limit=False, minloglevel=2)
    args.update(kw)
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(TRAIN_TEXT.splitlines()), model_writer=out,
                                             **args)
    m = pb2.ModelProto()
    m.ParseFromString(out.getvalue())
    return m


def _variants():
    base = _trained()
    v = {"trained": base}
    m = pb2.ModelProto()
    m.CopyFrom(base)
    m.normalizer_spec.remove_extra_whitespaces = True
    v["remove-extra-whitespaces"] = m
    m = pb2.ModelProto()
    m.CopyFrom(base)
    m.normalizer_spec.add_dummy_prefix = False
    v["no-dummy-prefix"] = m
    m = pb2.ModelProto()
    m.CopyFrom(base)
    m.trainer_spec.treat_whitespace_as_suffix = True
    v["whitespace-suffix"] = m
    m = pb2.ModelProto()
    m.CopyFrom(base)
    m.normalizer_spec.escape_whitespaces = False
    v["no-escape"] = m
    m = pb2.ModelProto()
    m.CopyFrom(base)
    m.trainer_spec.unk_surface = "<?>"
    for i, p in enumerate(m.pieces):  # every 7th multi-character piece UNUSED: resegmented back
        if p.type == pb2.ModelProto.SentencePiece.NORMAL and len(p.piece) > 1 and i % 7 == 0:
            p.type = pb2.ModelProto.SentencePiece.UNUSED
    v["unused-pieces"] = m
    v["byte-fallback"] = _trained(byte_fallback=True, vocab_size=400)
    return v


@pytest.fixture(scope="module")
def variants():
    return _variants()


TRAINED_TEXTS = NASTY + [
    "<tool>call<tool>", "a@@b", "@@@", " <tool> ", "<ctl>", "x<ctl>y", "  leading and   inner  and trailing  ",
    "\u00e9t\u00e9 ZZZ qqq", "unknown ☃ chars ☃☃ here", "日本", "quick brown fox", "Pack my box",
] + [line for line in TRAIN_TEXT.splitlines()[:4]]


@pytest.mark.parametrize("variant", ["trained", "remove-extra-whitespaces", "no-dummy-prefix", "whitespace-suffix",
                                     "no-escape", "unused-pieces", "byte-fallback"])
def test_trained_models_match_sentencepiece(variants, variant):
    m = variants[variant]
    sp = processor(m)
    ours = SentencePieceTokenizer.from_model_proto(m.SerializeToString(), source=variant)
    assert ours.vocab_size == sp.vocab_size()
    texts = TRAINED_TEXTS + corpus(seed=5, n_random=300)
    for t in texts:
        ids = sp.encode(t)
        assert ours.encode(t) == ids, repr(t[:80])
        assert ours.decode(ids) == sp.decode(ids), repr(t[:80])
    rng = random.Random(11)
    for _ in range(200):
        ids = [rng.randrange(sp.vocab_size()) for _ in range(rng.randrange(8))]
        d = ours.stream_decoder()
        want = sp.decode(ids)
        assert ours.decode(ids) == want, ids
        assert "".join(d.feed(i) for i in ids) + d.flush() == want, ids


_FRAGMENTS = ["<tool>", "<to", "ol>", "@@", "@", "<ctl>", " ", "  ", "\t", "\n", "▁", "the", "quick", "fox", "é",
              "ï", "☃", "日", "1", "23", "!", "."]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["trained", "remove-extra-whitespaces", "whitespace-suffix", "unused-pieces",
                        "byte-fallback", "no-escape"]),
       st.lists(st.sampled_from(_FRAGMENTS), max_size=16).map("".join))
def test_trained_models_hypothesis(variants, variant, text):
    m = variants[variant]
    sp = _processors(variant, m)
    ours = _ours(variant, m)
    ids = sp.encode(text)
    assert ours.encode(text) == ids
    assert ours.decode(ids) == sp.decode(ids)


_CACHE = {}


def _processors(name, m):
    key = ("sp", name)
    if key not in _CACHE:
        _CACHE[key] = processor(m)
    return _CACHE[key]


def _ours(name, m):
    key = ("ours", name)
    if key not in _CACHE:
        _CACHE[key] = SentencePieceTokenizer.from_model_proto(m.SerializeToString(), source=name)
    return _CACHE[key]


def test_trained_model_user_defined_and_unknown(variants):
    m = variants["trained"]
    ours = SentencePieceTokenizer.from_model_proto(m.SerializeToString(), source="trained")
    tool = ours.piece_to_id("<tool>")
    assert ours.piece_type(tool) == "USER_DEFINED" and tool in ours.encode("x<tool>y")  # always matched in text
    assert "<ctl>" in ours.special_tokens and ours.special_tokens["<ctl>"] not in ours.encode("<ctl>")
    ids = ours.encode("☃☃☃")  # without byte fallback a run of unknown characters is one unk id
    assert ids.count(ours.unk_id) == 1
    assert ours.decode([ours.unk_id]) == " \u2047 "


# -- bad files: one line each, naming the file and the problem ------------------------------------------------


def _proto(pieces=(("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3), ("a", -1.0, 1), ("b", -2.0, 1),
                   ("▁", -3.0, 1), ("ab", -0.5, 1)), model_type=2, **trainer):
    m = pb2.ModelProto()
    for text, score, t in pieces:
        p = m.pieces.add()
        p.piece, p.score, p.type = text, score, t
    m.trainer_spec.model_type = model_type
    for k, v in trainer.items():
        setattr(m.trainer_spec, k, v)
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.remove_extra_whitespaces = False
    return m


def _load(tmp_path, data: bytes):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(data)
    return SentencePieceTokenizer.from_file(path), str(path)


def _bad(tmp_path, data: bytes, *needles):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(data)
    with pytest.raises(FormatError) as e:
        SentencePieceTokenizer.from_file(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path) + ": "), msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_small_model_is_fine(tmp_path):
    m = _proto()
    ours, _ = _load(tmp_path, m.SerializeToString())
    assert ours.encode("ab ba") == processor(m).encode("ab ba")


def test_truncated_protobuf(tmp_path, model_path):
    data = open(model_path, "rb").read()
    for cut in (1, 2, 3, 10, 1000, len(data) // 2, len(data) - 1):
        _bad(tmp_path, data[:cut], "truncated protobuf")


def test_wrong_wire_type(tmp_path):
    _bad(tmp_path, b"\x08\x01", "field 1 (pieces) has wire type 0 (varint), expected 2 (length-delimited)")
    good = _proto().SerializeToString()
    _bad(tmp_path, good + b"\x12\x02\x1d\x00", "model_type", "wire type 5")  # trainer_spec.model_type as 32-bit
    _bad(tmp_path, b"\x0b\x0c", "wire type 3 (group start)")


def test_overlong_varint(tmp_path):
    _bad(tmp_path, b"\x0a" + b"\xff" * 11, "varint")
    _bad(tmp_path, b"\x0a" + b"\xff" * 9 + b"\x7f", "larger than 64 bits")


def test_unigram_model_is_refused(tmp_path):
    _bad(tmp_path, _proto(model_type=1).SerializeToString(), "unigram", "only BPE")
    m = _proto()
    m.trainer_spec.ClearField("model_type")  # absent: the proto default, UNIGRAM
    _bad(tmp_path, m.SerializeToString(), "unigram")
    _bad(tmp_path, _proto(model_type=3).SerializeToString(), "word model")


def test_missing_pieces(tmp_path):
    m = _proto(pieces=())
    _bad(tmp_path, m.SerializeToString(), "no pieces")
    m = _proto()
    m.pieces[3].ClearField("piece")
    _bad(tmp_path, m.SerializeToString(), "piece 3 has no text")
    _bad(tmp_path, b"", "empty file")


def test_vocabulary_errors(tmp_path):
    base = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("a", -1.0, 1)]
    _bad(tmp_path, _proto(pieces=base[1:]).SerializeToString(), "no unknown piece")
    _bad(tmp_path, _proto(pieces=base + [("<unk2>", 0.0, 2)]).SerializeToString(), "two unknown pieces")
    _bad(tmp_path, _proto(pieces=base + [("a", -2.0, 1)]).SerializeToString(), "piece 3", "already defined")
    _bad(tmp_path, _proto(pieces=base + [("<0x41>", 0.0, 6)]).SerializeToString(), "byte_fallback is off")
    _bad(tmp_path, _proto(pieces=base + [("<0x41>", 0.0, 6)], byte_fallback=True).SerializeToString(),
         "no byte piece <0x00>")
    _bad(tmp_path, _proto(pieces=base + [("<0xZZ>", 0.0, 6)], byte_fallback=True).SerializeToString(),
         "not of the form <0xNN>")
    # a piece of type 9 (sentencepiece's own protobuf class refuses to write one: appended by hand)
    _bad(tmp_path, _proto(pieces=base).SerializeToString() + b"\x0a\x05\x0a\x01x\x18\x09", "piece 3", "has type 9")
    _bad(tmp_path, _proto(pieces=base + [("a\0b", 0.0, 1)]).SerializeToString(), "NUL")
    m = _proto()
    m.normalizer_spec.name = "nmt_nfkc"
    m.normalizer_spec.precompiled_charsmap = b"\x01\x02\x03\x04\x05"
    _bad(tmp_path, m.SerializeToString(), "'nmt_nfkc'", "not supported")


def test_missing_file(tmp_path):
    with pytest.raises(FormatError) as e:
        SentencePieceTokenizer.from_file(tmp_path / "nope.model")
    assert "not found" in str(e.value)


def test_random_damage_never_escapes_as_another_error(tmp_path, model_path):
    """Flipped and cut bytes: the file loads (protobuf skips what it does not know) or gives a FormatError."""
    data = open(model_path, "rb").read()
    rng = random.Random(5)
    for _ in range(60):
        b = bytearray(data)
        for _ in range(rng.randrange(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        if rng.random() < 0.3:
            del b[rng.randrange(len(b)):]
        try:
            SentencePieceTokenizer.from_model_proto(bytes(b), source="damaged")
        except FormatError as e:
            assert "\n" not in str(e) and str(e).startswith("damaged: ")


def test_gguf_metadata_errors():
    tokens = ["<unk>", "<s>", "</s>", "a"]
    good = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": [0.0, 0.0, 0.0, -1.0], "tokenizer.ggml.token_type": [2, 3, 3, 1]}
    tok = SentencePieceTokenizer.from_gguf_metadata(good, "x.gguf")
    assert tok.encode("a a", bos=True) == [1, 0, 3, 0, 3]  # "▁" is no piece here: unknown
    untyped = SentencePieceTokenizer.from_gguf_metadata(dict(good, **{"tokenizer.ggml.token_type": [1, 3, 3, 1]}), "x")
    assert untyped.unk_id == 0 and untyped.encode("a") == [0, 3]  # no UNKNOWN type: unknown_token_id (default 0)
    for change, needle in [({"tokenizer.ggml.scores": [0.0]}, "tokenizer.ggml.scores must be 4 numbers"),
                           ({"tokenizer.ggml.token_type": [2, 3, 3, 2]}, "two unknown pieces"),
                           ({"tokenizer.ggml.tokens": "abc"}, "tokenizer.ggml.tokens"),
                           ({"tokenizer.ggml.bos_token_id": 99}, "bos id = 99"),
                           ({"tokenizer.ggml.model": "gpt2"}, "not 'llama'")]:
        with pytest.raises(FormatError) as e:
            SentencePieceTokenizer.from_gguf_metadata(dict(good, **change), "x.gguf")
        msg = str(e.value)
        assert msg.startswith("x.gguf: ") and needle in msg and "\n" not in msg, msg
