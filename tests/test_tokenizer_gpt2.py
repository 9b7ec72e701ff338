"""GGUF byte-level BPE ("gpt2") tokenizers against Hugging Face: SmolLM2's real GGUF, and Llama 3 as a GGUF would
hold it (pre-tokenizer "llama-bpe", merges converted by transformers) against tiktoken."""
import random
import unicodedata

import pytest
import tiktoken
import tiktoken.load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Regex, pre_tokenizers

from llama_cx.tokenizers import _bpe_py, _pretokenize
from llama_cx.tokenizers.chat_format import ChatFormat, chat_format_for
from llama_cx.errors import FormatError
from llama_cx.tokenizers import Tokenizer
from llama_cx.tokenizers.gpt2_bpe import _BYTE_OF_CHAR
from llama_cx.tokenizers.tiktoken_format import LLAMA3_PATTERN, LLAMA3_SPECIAL_TOKENS

from _hf_tokenizers import gguf_metadata, hf_from_gguf, hf_smollm2_original
from _tokenizer_corpus import INTERESTING, corpus, random_strings


@pytest.fixture(scope="module")
def smol_meta(smollm2_gguf_path):
    return gguf_metadata(smollm2_gguf_path)


@pytest.fixture(scope="module")
def smol(smol_meta, smollm2_gguf_path):
    return Tokenizer.from_gguf_metadata(smol_meta, smollm2_gguf_path)


@pytest.fixture(scope="module")
def hf(smollm2_gguf_path):
    return hf_smollm2_original(smollm2_gguf_path)


@pytest.fixture(scope="module")
def samples():
    return corpus(seed=77)


def hf_ids(backend, text, specials=False):
    """HF's ids; specials=False: special token text encoded as text (our default), True: matched (HF's default)."""
    backend.encode_special_tokens = not specials
    try:
        return backend.encode(text, add_special_tokens=False).ids
    finally:
        backend.encode_special_tokens = False


def _mismatches(pairs, limit=3):
    return [(s[:80], a[:12], b[:12]) for s, a, b in pairs if a != b][:limit]


# -- SmolLM2 --------------------------------------------------------------------------------------------------------


def test_smollm2_vocabulary_facts(smol, smol_meta):
    assert smol.vocab_size == len(smol_meta["tokenizer.ggml.tokens"]) == 49152
    assert smol.pattern == "smollm"
    assert (smol.bos_id, smol.eos_id, smol.pad_id) == (1, 2, 2)
    assert smol.special_id("<|im_start|>") == 1 and smol.special_id("<|im_end|>") == 2
    assert smol.special_id("<|endoftext|>") == 0
    assert len(smol.special_tokens) == 17 and all(smol.is_special(i) for i in range(17)) and not smol.is_special(17)
    assert set(smol.stop_ids) == {0, 2}
    assert smol.add_bos is False
    assert "<|im_start|>" in smol.chat_template


def test_smollm2_corpus_matches_hf(smol, hf, samples):
    assert _mismatches((s, smol.encode(s), hf_ids(hf, s)) for s in samples) == []


def test_smollm2_corpus_matches_hf_allowed_all(smol, hf, samples):
    """With allowed_special="all" we match special tokens in text, as Hugging Face does by default."""
    assert _mismatches((s, smol.encode(s, allowed_special="all"), hf_ids(hf, s, specials=True)) for s in samples) == []


def test_smollm2_matches_transformers_gguf_loader_without_digits(smol, smollm2_gguf_path, samples):
    """transformers' own GGUF tokenizer (AutoTokenizer(gguf_file=...)) agrees wherever digits cannot matter: it
    ignores tokenizer.ggml.pre = "smollm" (plain ByteLevel, no digit split), unlike llama.cpp and SmolLM2."""
    stock = hf_from_gguf(smollm2_gguf_path).backend_tokenizer
    digit_free = [s for s in samples if not any(unicodedata.category(c) in ("Nd", "Nl", "No", "Cn") for c in s)]
    assert len(digit_free) > 250
    assert _mismatches((s, smol.encode(s), hf_ids(stock, s)) for s in digit_free) == []
    # the documented difference: "a  1" is [a, "  ", 1] with the digit split, [a, " ", " ", 1] without
    assert smol.encode("a  1") != hf_ids(stock, "a  1")


def test_smollm2_bytes_without_tokens_are_dropped_like_hf(smol, hf):
    """SmolLM2 has no token for 21 bytes (0x04, 0xc0, 0xf5.., ...): HF drops them (no unk token), so do we."""
    for s in ["a\x04b", "\x04", "x\x00\x04\x05y", "!\x04!", "\U00040000", "a\U00050001b", "\x13\x14\x16\x1d"]:
        assert smol.encode(s) == hf_ids(hf, s), repr(s)


def test_smollm2_roundtrip_and_decode_matches_hf(smol, hf, samples):
    for s in samples:
        ids = smol.encode(s)
        if not any(c in s for c in "\x04\x06\x13\x14\x16\x1d") and not any(0x40000 <= ord(c) < 0xC0000 for c in s):
            assert smol.decode(ids) == s
        stream = smol.stream_decoder()
        assert "".join(stream.feed(i) for i in ids) + stream.flush() == smol.decode(ids)
    rng = random.Random(3)
    for _ in range(300):
        ids = [rng.randrange(smol.vocab_size) for _ in range(rng.randrange(1, 10))]
        assert smol.decode(ids) == hf.decode(ids, skip_special_tokens=False)


_text = st.one_of(st.text(max_size=100), st.lists(st.sampled_from(INTERESTING), max_size=25).map("".join))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_text)
def test_hypothesis_smollm2_matches_hf(smol, hf, s):
    assert smol.encode(s) == hf_ids(hf, s)


# -- scanners against Hugging Face's pre-tokenizers (Oniguruma regexes) ----------------------------------------


def _unmap(piece: str) -> str:
    return bytes(_BYTE_OF_CHAR[c] for c in piece).decode("utf-8")


_HF_SPLITTERS = {
    "gpt2": (pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), _unmap),
    "smollm": (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]), _unmap),
    "llama3": (pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"), lambda p: p),
}


@pytest.mark.parametrize("pattern", sorted(_HF_SPLITTERS))
def test_scanner_matches_hf_pre_tokenizer(pattern):
    splitter, unmap = _HF_SPLITTERS[pattern]
    texts = corpus(seed=5, n_random=1000) + random_strings(6, 300, max_len=200)
    wrong = []
    for s in texts:
        want = [unmap(p) for p, _ in splitter.pre_tokenize_str(s)]
        if _pretokenize.split(s, pattern) != want:
            wrong.append(s)
    assert wrong[:3] == []


def test_compiled_core_equals_python_core_with_merges(smol, smol_meta):
    tokens, types = smol_meta["tokenizer.ggml.tokens"], smol_meta["tokenizer.ggml.token_type"]
    token_bytes = [smol.token_bytes(i) if t in (1, 6) else None for i, t in enumerate(types)]
    index = {t: i for i, t in enumerate(tokens)}
    merges = [tuple(index[p] for p in m.split(" ")) for m in smol_meta["tokenizer.ggml.merges"]]
    py = _bpe_py.Core(token_bytes, merges, "smollm", False)
    for s in corpus(seed=8, n_random=300):
        assert smol._core.encode_ordinary(s, False) == py.encode_ordinary(s, False)
    if hasattr(smol._core, "short_piece"):  # the heap merge on every piece
        smol._core.short_piece = 1
        try:
            for s in corpus(seed=9, n_random=200):
                assert smol._core.encode_ordinary(s, False) == py.encode_ordinary(s, False)
        finally:
            smol._core.short_piece = 64


# -- Llama 3 as a GGUF holds it: "llama-bpe", merge list instead of ranks -------------------------------------------


@pytest.fixture(scope="module")
def llama3_gguf_meta(llama3_tokenizer_path):
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab, merges = TikTokenConverter(vocab_file=llama3_tokenizer_path).extract_vocab_merges_from_model(
        llama3_tokenizer_path)
    tokens = sorted(vocab, key=vocab.get) + LLAMA3_SPECIAL_TOKENS
    return {
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "llama-bpe", "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [1] * len(vocab) + [3] * len(LLAMA3_SPECIAL_TOKENS),
        "tokenizer.ggml.merges": [f"{a} {b}" for a, b in merges],
        "tokenizer.ggml.bos_token_id": 128000, "tokenizer.ggml.eos_token_id": 128009,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.chat_template": "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}",
    }


def test_llama3_gguf_matches_tiktoken(llama3_gguf_meta, llama3_tokenizer_path):
    tok = Tokenizer.from_gguf_metadata(llama3_gguf_meta, "llama3.gguf")
    ranks = tiktoken.load.load_tiktoken_bpe(llama3_tokenizer_path)
    specials = {name: 128000 + i for i, name in enumerate(LLAMA3_SPECIAL_TOKENS)}
    ref = tiktoken.Encoding(name="l3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials)
    assert tok.pattern == "llama3" and tok.add_bos and tok.bos_id == 128000
    assert set(tok.stop_ids) == {128009, 128001, 128008}
    texts = corpus(seed=21, n_random=800)
    assert _mismatches((s, tok.encode(s), ref.encode(s, disallowed_special=())) for s in texts) == []
    assert _mismatches((s, tok.encode(s, allowed_special="all"), ref.encode(s, allowed_special="all")) for s in texts) == []
    assert isinstance(chat_format_for(tok), ChatFormat)
    file_tok = Tokenizer.from_file(llama3_tokenizer_path)
    assert all(tok.token_bytes(i) == file_tok.token_bytes(i) for i in range(0, 128256, 97))


# -- bad metadata ---------------------------------------------------------------------------------------------------


def _bad(meta, match):
    with pytest.raises(FormatError) as e:
        Tokenizer.from_gguf_metadata(meta, "bad.gguf")
    msg = str(e.value)
    assert msg.startswith("bad.gguf: ") and "\n" not in msg and match in msg, msg


def _tiny_meta(**changes):
    alphabet = {b: c for c, b in _BYTE_OF_CHAR.items()}
    tokens = [alphabet[b] for b in range(256)] + ["ab", "<|end|>"]
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": [1] * 257 + [3], "tokenizer.ggml.merges": ["a b"],
            "tokenizer.ggml.eos_token_id": 257}
    meta.update(changes)
    return {k: v for k, v in meta.items() if v is not None}


def test_tiny_vocabulary_works():
    tok = Tokenizer.from_gguf_metadata(_tiny_meta(), "tiny.gguf")
    assert tok.encode("xab<|end|>") == [ord("x"), 256] + [ord(c) for c in "<|end|>"]
    assert tok.encode("xab<|end|>", allowed_special="all") == [ord("x"), 256, 257]
    assert tok.stop_ids == (257,) and tok.bos_id is None


def test_bad_model():
    _bad(_tiny_meta(**{"tokenizer.ggml.model": "llama"}), "only byte-level BPE")
    _bad(_tiny_meta(**{"tokenizer.ggml.model": None}), "tokenizer.ggml.model")


def test_unknown_pre_tokenizer():
    _bad(_tiny_meta(**{"tokenizer.ggml.pre": "qwen2"}), "'qwen2' is not supported (supported: ")
    _bad(_tiny_meta(**{"tokenizer.ggml.pre": ["gpt2"]}), "is not supported")


def test_bad_tokens():
    _bad(_tiny_meta(**{"tokenizer.ggml.tokens": None}), "tokenizer.ggml.tokens")
    _bad(_tiny_meta(**{"tokenizer.ggml.tokens": [1, 2, 3]}), "tokenizer.ggml.tokens")
    _bad(_tiny_meta(**{"tokenizer.ggml.token_type": [1, 1]}), "token_type must be 258 integers")


def test_bad_merges():
    _bad(_tiny_meta(**{"tokenizer.ggml.merges": ["a zz"]}), "merges[0] = 'a zz' is not two tokens")
    _bad(_tiny_meta(**{"tokenizer.ggml.merges": ["a b", "b a"]}), "merges[1] = 'b a' joins to a string that is not a token")
    _bad(_tiny_meta(**{"tokenizer.ggml.merges": None}), "tokenizer.ggml.merges")


def test_bad_special_ids():
    _bad(_tiny_meta(**{"tokenizer.ggml.eos_token_id": 258}), "eos_token_id = 258 is not a token id")
    _bad(_tiny_meta(**{"tokenizer.ggml.bos_token_id": -1}), "bos_token_id = -1")
