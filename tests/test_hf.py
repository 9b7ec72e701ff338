"""Hugging Face directories (config.json + safetensors + tokenizer.json) written by transformers itself, against
transformers running the same directory; tokenizer.json against the `tokenizers` library; every bad input one line.

Tolerance: max |Δlogit| <= 1e-3 x std(reference logits), both sides float32 arithmetic on the same weights
(a bf16 directory is read by transformers with dtype=float32, which widens the same bf16 values exactly);
greedy ids identical for 16 tokens.
"""
import json
import os
import shutil
import struct

import numpy as np
import pytest
import torch

import llama_cx
from conftest import CACHE
from llama_cx.errors import FormatError
from llama_cx.formats import open_checkpoint
from llama_cx.formats.hf import config_from_hf
from llama_cx.formats.safetensors import open_safetensors
from llama_cx.tokenizers.chat_format import ChatFormat, ChatMLFormat
from llama_cx.tokenizers.hf_json import load_hf_tokenizer
from llama_cx.tokenizers.tiktoken_format import LLAMA3_PATTERN, LLAMA3_SPECIAL_TOKENS
from _tokenizer_corpus import corpus

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

TOL = 1e-3
LLAMA31_ROPE = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=32)
LLAMA32_ROPE = dict(LLAMA31_ROPE, factor=32.0)


def _random_model(seed=0, tied=False, rope=None, n_kv=2, head_dim=None, **kw):
    cfg = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=n_kv,
               intermediate_size=96, vocab_size=300, max_position_embeddings=512, rms_norm_eps=1e-5,
               rope_theta=500000.0, tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2)
    if rope is not None:
        cfg["rope_scaling"] = dict(rope)
    if head_dim is not None:
        cfg["head_dim"] = head_dim
    cfg.update(kw)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    with torch.no_grad():  # weights of the scale of a trained model, so the logits are not all near zero
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif "embed" in name:
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, p.shape[1] ** -0.5)
    return model.eval()


def _to_4x_layout(directory):
    """Rewrite config.json as transformers 4.x writes it (the layout on the Hub): rope_theta at the top level and
    rope_scaling beside it (key "type" as in early Llama 3.1 configs), instead of 5.x's rope_parameters."""
    path = os.path.join(directory, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    rope = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rope.pop("rope_theta")
    kind = rope.pop("rope_type")
    cfg["rope_scaling"] = None if kind == "default" else dict(rope, type=kind)
    cfg["torch_dtype"] = cfg.pop("dtype", "float32")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    return cfg


def _save(tmp_path, name, dtype="f32", shard=None, layout="5.x", **kw):
    model = _random_model(**kw)
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
    d = tmp_path / name
    model.save_pretrained(d, max_shard_size=shard) if shard else model.save_pretrained(d)
    if layout == "4.x":
        _to_4x_layout(d)
    return d


def _reference(d):
    """transformers reading the directory itself, in float32."""
    return LlamaForCausalLM.from_pretrained(d, dtype=torch.float32).eval()


IDS = [1, 17, 250, 3, 99, 42, 7, 123, 299, 0, 64, 5] * 4  # 48 positions: past original_max_position_embeddings


def _compare(d, n_new=16):
    ref = _reference(d)
    ours = llama_cx.load(str(d))
    got = np.asarray(ours.logits(IDS), dtype=np.float64)
    with torch.no_grad():
        want = ref(torch.tensor([IDS])).logits[0].double().numpy()
    err = np.abs(got - want).max() / want.std()
    assert err <= TOL, f"max |Δ| = {err:.2e} x std"
    ctx = ours.new_context(128)
    nxt = int(np.argmax(ctx.forward(IDS[:20])))
    mine = []
    for _ in range(n_new):
        mine.append(nxt)
        nxt = int(np.argmax(ctx.forward([nxt])))
    with torch.no_grad():
        prompt = torch.tensor([IDS[:20]])  # holds id 0: an explicit mask, or pad_token_id=0 would mask it out
        out = ref.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n_new,
                           min_new_tokens=n_new, do_sample=False, num_beams=1, pad_token_id=0)
    assert mine == out[0, 20:].tolist()
    return ours, ref


CASES = {
    # name: (save kwargs)
    "gqa-untied-f32-single": dict(),
    "gqa-tied-f32-sharded": dict(tied=True, shard="40KB"),
    "mha-untied-bf16-sharded": dict(dtype="bf16", n_kv=4, shard="30KB"),
    "tied-bf16-single": dict(dtype="bf16", tied=True),
    "llama3.1-rope-5.x": dict(rope=LLAMA31_ROPE, shard="50KB"),
    "llama3.1-rope-4.x": dict(rope=LLAMA31_ROPE, layout="4.x"),
    "llama3.2-rope-tied-bf16-4.x": dict(rope=LLAMA32_ROPE, tied=True, dtype="bf16", layout="4.x"),
    "llama3.2-rope-tied-bf16-5.x": dict(rope=LLAMA32_ROPE, tied=True, dtype="bf16", shard="40KB"),
    "head-dim-32": dict(head_dim=32, n_kv=1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_and_greedy_match_transformers(tmp_path, case):
    kw = dict(CASES[case])
    d = _save(tmp_path, case, **kw)
    sharded = os.path.isfile(d / "model.safetensors.index.json")
    assert sharded == ("shard" in kw)
    ours, ref = _compare(d)
    ck, c = ours.checkpoint, ours.config
    assert ck.format == "hf"
    assert ck.metadata["dtype"] == kw.get("dtype", "f32")
    assert ours.tied_embeddings == kw.get("tied", False)
    assert ("shards" in ck.format_description) == sharded
    assert (c.n_heads, c.n_kv_heads, c.head_dim) == (4, kw.get("n_kv", 2), kw.get("head_dim", 16))
    rope = kw.get("rope")
    assert c.use_scaled_rope == (rope is not None)
    if rope is not None:
        assert (c.rope_scale_factor, c.rope_original_context) == (rope["factor"], 32)
        assert ref.config.rope_parameters["rope_type"] == "llama3"  # transformers read the same layout
    assert any("rotate-half" in n for n in ours.notes)


def test_rope_scaling_matters(tmp_path):
    """The scaled-RoPE cases test something: without the scaling the logits are far from transformers'."""
    d = _save(tmp_path, "r", rope=LLAMA31_ROPE)
    ref = _reference(d)
    with torch.no_grad():
        want = ref(torch.tensor([IDS])).logits[0].double().numpy()
    plain = llama_cx.Model(open_checkpoint(str(d)))
    plain.config = plain.checkpoint.config = plain.config.replace(use_scaled_rope=False)
    got = np.asarray(llama_cx.Model(plain.checkpoint).logits(IDS), dtype=np.float64)
    assert np.abs(got - want).max() / want.std() > 100 * TOL


def test_bare_safetensors_file_and_rope_override(tmp_path):
    d = _save(tmp_path, "one", rope=LLAMA31_ROPE)
    ck = open_checkpoint(str(d / "model.safetensors"))
    assert ck.format == "hf" and ck.path == str(d / "model.safetensors")
    ck2 = open_checkpoint(str(d), rope_scale_factor=4.0)
    assert ck2.config.rope_scale_factor == 4.0


def test_f16_directory(tmp_path):
    """f16 weights are widened to f32 at load (no f16 kernels), as for Meta and GGUF files."""
    model = _random_model(seed=2).to(torch.float16)
    d = tmp_path / "f16"
    model.save_pretrained(d)
    ours = llama_cx.load(str(d))
    assert ours.checkpoint.metadata["dtype"] == "f16"
    assert any("f16 matrices widened" in n for n in ours.notes)
    ref = _reference(d)
    with torch.no_grad():
        want = ref(torch.tensor([IDS])).logits[0].double().numpy()
    got = np.asarray(ours.logits(IDS), dtype=np.float64)
    assert np.abs(got - want).max() / want.std() <= TOL


def test_weights_are_views_of_the_mapped_file(tmp_path):
    d = _save(tmp_path, "v", dtype="bf16")
    ck = open_checkpoint(str(d))
    for name, t in ck.tensors.items():
        if ".wq." in name or ".wk." in name:
            assert t.buffer is ck.buffers[0]  # the un-permuted copy
        else:
            assert t.buffer is ck.files[0].mapping, name


def test_header_only_open_copies_nothing(tmp_path):
    """open_checkpoint(weights=False), for `llama-cx info`: wq / wk stay views (no reordered copy is made)."""
    d = _save(tmp_path, "h", dtype="bf16")
    full, head = open_checkpoint(str(d)), open_checkpoint(str(d), weights=False)
    assert not head.has_weights and head.buffers == [] and head.notes == full.notes and head.config == full.config
    for name, t in full.tensors.items():
        assert (head.tensors[name].dtype, head.tensors[name].shape) == (t.dtype, t.shape), name
        assert head.tensors[name].buffer is head.files[0].mapping, name


def test_huge_pages_copy_gives_the_same_logits(tmp_path):
    d = _save(tmp_path, "hp", dtype="bf16", vocab_size=2048, hidden_size=256, intermediate_size=512)  # > 1 MiB
    a, b = llama_cx.load(str(d)), llama_cx.load(str(d), huge_pages=True)
    assert b.checkpoint.tensors["layers.0.feed_forward.w1.weight"].buffer is not b.checkpoint.files[0].mapping
    assert np.array_equal(np.asarray(a.logits(IDS)), np.asarray(b.logits(IDS)))


# ---- SmolLM2: transformers loads the demo GGUF and saves it as an HF directory ---------------------------------


@pytest.fixture(scope="module")
def smol_dir(smollm2_gguf_path):
    """SmolLM2-135M-Instruct as transformers saves it (bf16 safetensors, tokenizer.json, chat template), cached."""
    out = os.path.join(CACHE, "smollm2-hf-bf16")
    if os.path.exists(os.path.join(out, ".complete")):
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, name = os.path.split(smollm2_gguf_path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    # a model loaded from a GGUF refuses save_pretrained ("quantized with gguf"): the same weights, plain model
    cfg = gguf_model.config.to_dict()
    cfg.pop("quantization_config", None)
    model = LlamaForCausalLM(LlamaConfig.from_dict(cfg))
    model.load_state_dict(gguf_model.state_dict())
    model = model.to(torch.bfloat16)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    open(os.path.join(out, ".complete"), "w").close()
    return out


@pytest.fixture(scope="module")
def smol(smol_dir):
    return llama_cx.load(smol_dir)


@pytest.fixture(scope="module")
def smol_ref(smol_dir):
    from transformers import AutoTokenizer

    return _reference(smol_dir), AutoTokenizer.from_pretrained(smol_dir)


PROMPT = "The capital of France is Paris. The capital of Germany is"


def test_smollm2_directory_facts(smol):
    c, ck = smol.config, smol.checkpoint
    assert (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.hidden_dim) == (576, 30, 9, 3, 49152, 1536)
    assert smol.tied_embeddings and ck.metadata["dtype"] == "bf16"
    tok = smol.tokenizer
    assert tok.vocab_size == 49152 and tok.special_id("<|im_start|>") == 1 and tok.special_id("<|im_end|>") == 2
    assert isinstance(smol.chat_format, ChatMLFormat)
    assert smol.chat_format.default_system and "SmolLM" in smol.chat_format.default_system


def test_smollm2_hf_dir_matches_transformers_and_our_gguf(smol, smol_ref, smollm2_gguf_path):
    ref, tok = smol_ref
    ids = tok(PROMPT)["input_ids"]
    assert smol.tokenizer.encode(PROMPT) == ids
    got = np.asarray(smol.logits(ids), dtype=np.float64)
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0].double().numpy()
    assert np.abs(got - want).max() / want.std() <= TOL
    # our GGUF run reads the Q4_1 blocks themselves (exact for a prompt), the HF directory their bf16 rounding
    # (transformers saved bf16): apart by that rounding of the weights only (measured 0.035 x std), same top-1
    gguf = np.asarray(llama_cx.load(smollm2_gguf_path).logits(ids), dtype=np.float64)
    assert np.abs(got - gguf).max() / gguf.std() <= 0.1
    assert (got.argmax(-1) == gguf.argmax(-1)).all()


def test_smollm2_greedy_chat_identical(smol, smol_ref, smollm2_gguf_path):
    ref, tok = smol_ref
    question = [{"role": "user", "content": "What is the capital of France?"}]
    ids = smol.chat_format.encode_dialog(question)
    hf_ids = tok.apply_chat_template(question, tokenize=True, add_generation_prompt=True)
    hf_ids = hf_ids["input_ids"] if hasattr(hf_ids, "keys") else hf_ids
    assert ids == list(hf_ids)
    gen = smol.generate(ids, max_tokens=16, temperature=0)
    text = "".join(gen)
    with torch.no_grad():
        out = ref.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, num_beams=1,
                           eos_token_id=smol.tokenizer.special_id("<|im_end|>"), pad_token_id=0)
    assert gen.tokens == out[0, len(ids):].tolist()
    gguf_model = llama_cx.load(smollm2_gguf_path)
    assert "".join(gguf_model.generate(ids, max_tokens=16, temperature=0)) == text
    assert "Paris" in text, text


# ---- tokenizer.json against the `tokenizers` library -------------------------------------------------------------


def _hf_ids(backend, text, specials=False):
    backend.encode_special_tokens = not specials
    try:
        return backend.encode(text, add_special_tokens=False).ids
    finally:
        backend.encode_special_tokens = False


def _mismatches(pairs, limit=3):
    return [(s[:60], a[:10], b[:10]) for s, a, b in pairs if a != b][:limit]


def _check_corpus(ours, backend, seed):
    texts = corpus(seed=seed)
    assert _mismatches((s, ours.encode(s), _hf_ids(backend, s)) for s in texts) == []
    assert _mismatches((s, ours.encode(s, allowed_special="all"), _hf_ids(backend, s, True)) for s in texts) == []


def test_smollm2_tokenizer_json_matches_tokenizers(smol_dir, smol):
    from tokenizers import Tokenizer as HFTokenizer

    backend = HFTokenizer.from_file(os.path.join(smol_dir, "tokenizer.json"))
    assert smol.tokenizer.pattern == "gpt2"  # transformers' GGUF converter writes plain ByteLevel
    _check_corpus(smol.tokenizer, backend, seed=31)


def test_smollm2_original_pre_tokenizer(tmp_path, smol_dir):
    """SmolLM2's own tokenizer.json splits digits first (Digits(individual_digits) + ByteLevel), merges as "a b"."""
    from tokenizers import Tokenizer as HFTokenizer

    with open(os.path.join(smol_dir, "tokenizer.json")) as f:
        tj = json.load(f)
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    tj["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in tj["model"]["merges"]]
    for name in ("tokenizer_config.json", "generation_config.json"):
        shutil.copy(os.path.join(smol_dir, name), tmp_path / name)
    with open(tmp_path / "tokenizer.json", "w") as f:
        json.dump(tj, f)
    ours = load_hf_tokenizer(str(tmp_path))
    assert ours.pattern == "smollm"
    _check_corpus(ours, HFTokenizer.from_file(str(tmp_path / "tokenizer.json")), seed=32)


def test_gpt2_regex_as_an_explicit_split(tmp_path, smol_dir):
    """GPT-2's regex written out as a Split before a regex-free ByteLevel is the same "gpt2" scanner."""
    from tokenizers import Tokenizer as HFTokenizer

    with open(os.path.join(smol_dir, "tokenizer.json")) as f:
        tj = json.load(f)
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    with open(tmp_path / "tokenizer.json", "w") as f:
        json.dump(tj, f)
    ours = load_hf_tokenizer(str(tmp_path))
    assert ours.pattern == "gpt2"
    backend = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    texts = corpus(seed=36, n_random=400)
    assert _mismatches((s, ours.encode(s), _hf_ids(backend, s)) for s in texts) == []


LLAMA3_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")


@pytest.fixture(scope="module")
def llama3_tokenizer_dir(llama3_tokenizer_path, tmp_path_factory):
    """A Llama 3 tokenizer.json as on the Hub, built from Meta's tokenizer.model by transformers' converter, with
    the post-processor that adds <|begin_of_text|>, tokenizer_config.json and generation_config.json."""
    from tokenizers import processors
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(vocab_file=llama3_tokenizer_path, pattern=LLAMA3_PATTERN,
                                extra_special_tokens=LLAMA3_SPECIAL_TOKENS).converted()
    backend.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 128000)]),
    ])
    d = tmp_path_factory.mktemp("llama3-tok")
    backend.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": LLAMA3_TEMPLATE}))
    (d / "generation_config.json").write_text(json.dumps({"bos_token_id": 128000,
                                                          "eos_token_id": [128001, 128008, 128009]}))
    return d


def test_llama3_tokenizer_json_matches_tokenizers_and_tiktoken(llama3_tokenizer_dir, llama3_tokenizer_path):
    import tiktoken
    import tiktoken.load
    from tokenizers import Tokenizer as HFTokenizer

    ours = load_hf_tokenizer(str(llama3_tokenizer_dir))
    assert ours.pattern == "llama3" and ours.vocab_size == 128256
    assert (ours.bos_id, ours.eos_id, ours.add_bos) == (128000, 128009, True)
    assert set(ours.stop_ids) == {128001, 128008, 128009}
    backend = HFTokenizer.from_file(str(llama3_tokenizer_dir / "tokenizer.json"))
    _check_corpus(ours, backend, seed=33)
    assert backend.encode("Hello world").ids == ours.encode("Hello world", bos=ours.add_bos)
    ranks = tiktoken.load.load_tiktoken_bpe(llama3_tokenizer_path)
    ref = tiktoken.Encoding(name="l3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks,
                            special_tokens={t: 128000 + i for i, t in enumerate(LLAMA3_SPECIAL_TOKENS)})
    texts = corpus(seed=34, n_random=300)
    assert _mismatches((s, ours.encode(s), ref.encode(s, disallowed_special=())) for s in texts) == []
    assert isinstance(llama_cx.chat_format_for(ours), ChatFormat)


def test_merges_as_strings_and_as_pairs_give_the_same_tokenizer(llama3_tokenizer_dir, tmp_path):
    with open(llama3_tokenizer_dir / "tokenizer.json") as f:
        tj = json.load(f)
    assert isinstance(tj["model"]["merges"][0], list)
    tj["model"]["merges"] = [" ".join(m) for m in tj["model"]["merges"]]
    (tmp_path / "tokenizer.json").write_text(json.dumps(tj))
    a, b = load_hf_tokenizer(str(llama3_tokenizer_dir)), load_hf_tokenizer(str(tmp_path))
    for s in corpus(seed=35, n_random=200):
        assert a.encode(s) == b.encode(s)


def test_chat_template_from_jinja_file_and_unknown_template(llama3_tokenizer_dir, tmp_path):
    shutil.copy(llama3_tokenizer_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "chat_template.jinja").write_text(LLAMA3_TEMPLATE)
    tok = load_hf_tokenizer(str(tmp_path))
    assert tok.chat_template == LLAMA3_TEMPLATE and tok.add_bos and tok.bos_id == 128000
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}")
    tok = load_hf_tokenizer(str(tmp_path))
    assert llama_cx.chat_format_for(tok) is None


def test_hf_directory_with_tokenizer_in_info(tmp_path, llama3_tokenizer_dir):
    from llama_cx.cli.info import _info_lines

    d = _save(tmp_path, "withtok", vocab_size=128256, hidden_size=32, num_attention_heads=2, n_kv=1,
              intermediate_size=64, num_hidden_layers=1)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(llama3_tokenizer_dir / name, d / name)
    m = llama_cx.load(str(d))
    assert isinstance(m.chat_format, ChatFormat)
    text = "\n".join(_info_lines(m))
    assert "hf (Hugging Face: config.json + one safetensors file (model.safetensors))" in text
    assert "tokenizer.json" in text and "Llama 3" in text
    ids = m.chat_format.encode_dialog([{"role": "user", "content": "hi"}])
    assert ids[:2] == [128000, m.tokenizer.special_id("<|start_header_id|>")]


# ---- bad inputs: one line each ---------------------------------------------------------------------------------------


def _error(path, fn=open_checkpoint) -> str:
    with pytest.raises(FormatError) as e:
        fn(str(path))
    msg = str(e.value)
    where = path if os.path.isdir(path) else os.path.dirname(path)  # the file itself, or a file beside it
    assert "\n" not in msg and msg.startswith(str(where)), msg
    return msg


def _write_st(path, header: dict, data: bytes = b"", raw_header: bytes = None, length: int = None):
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h) if length is None else length) + h + data)
    return path


T = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}


@pytest.mark.parametrize("header,data,length,raw,want", [
    ({"a": T}, bytes(16), 1 << 40, None, "header length 1099511627776 runs past the end of the file"),
    ({"a": T}, bytes(8), None, None, "tensor a: data_offsets [0, 16] run past the end of the file (the data section holds 8 bytes)"),
    ({"a": T, "b": dict(T, data_offsets=[8, 24])}, bytes(24), None, None, "tensors a [0, 16] and b [8, 24] overlap"),
    ({"a": dict(T, data_offsets=[-16, 0])}, bytes(16), None, None, "tensor a: data_offsets [-16, 0] are not 0 <= begin <= end"),
    ({"a": dict(T, data_offsets=[16, 0])}, bytes(16), None, None, "are not 0 <= begin <= end"),
    ({"a": dict(T, dtype="Q4")}, bytes(16), None, None, "tensor a has unknown dtype Q4"),
    ({"a": dict(T, shape=[3, 2])}, bytes(24), None, None, "tensor a: shape (3, 2) of F32 needs 24 bytes but its data_offsets [0, 16] hold 16"),
    ({"a": dict(T, shape=[2, -2])}, bytes(16), None, None, "is not a list of at most 8 non-negative integers"),
    (None, bytes(16), None, b'{"a": {"dtype": "F32",', "header is not valid JSON"),
    (None, b"", None, b'[1, 2]', "header does not start with a JSON object"),
    (None, b"", None, b'{"a": 1}', "tensor a: header entry is not an object"),
    (None, b"", None, b'{"__metadata__": {"x": 1}}', "__metadata__ must map strings to strings"),
    (None, b"", None, b"\xff\xfe", "header does not start with a JSON object"),
])
def test_bad_safetensors(tmp_path, header, data, length, raw, want):
    p = _write_st(tmp_path / "m.safetensors", header, data, raw_header=raw, length=length)
    msg = _error(p, open_safetensors)
    assert want in msg, msg


def test_truncated_and_tiny_safetensors(tmp_path):
    p = tmp_path / "m.safetensors"
    p.write_bytes(b"\x05\x00")
    assert "too small to be a safetensors file" in _error(p, open_safetensors)
    shutil.copy(_save(tmp_path, "cfg") / "config.json", tmp_path / "config.json")
    assert _error(p) == f"{p}: too small to be a safetensors file (2 bytes; the header length alone takes 8)"


def test_unsupported_dtype_names_tensor_and_dtype(tmp_path):
    d = _save(tmp_path, "i64")
    st = open_safetensors(d / "model.safetensors")
    name = "model.layers.0.mlp.up_proj.weight"
    e = st.entries[name]
    header = {n: {"dtype": x.dtype, "shape": list(x.shape), "data_offsets": [x.begin, x.end]} for n, x in st.entries.items()}
    header[name] = {"dtype": "I64", "shape": [e.shape[0], e.shape[1] // 2], "data_offsets": [e.begin, e.end]}
    data = bytes(st.mm[st.data_start:])
    _write_st(d / "model.safetensors", header, data)
    assert _error(d).endswith(f"model.safetensors: tensor {name} has dtype I64; only BF16, F16 and F32 are supported")


@pytest.fixture
def sharded(tmp_path):
    return _save(tmp_path, "sh", shard="40KB")


def test_missing_shard_in_index(sharded):
    with open(sharded / "model.safetensors.index.json") as f:
        shard = sorted(set(json.load(f)["weight_map"].values()))[1]
    os.remove(sharded / shard)
    assert f"model.safetensors.index.json: missing shard {shard} (it holds " in _error(sharded)


def test_index_names_a_tensor_its_shard_lacks(sharded):
    p = sharded / "model.safetensors.index.json"
    idx = json.loads(p.read_text())
    name, shard = next((n, s) for n, s in idx["weight_map"].items() if "embed" not in n)
    other = next(s for s in idx["weight_map"].values() if s != shard)
    idx["weight_map"][name] = other
    p.write_text(json.dumps(idx))
    assert f"{other}: no tensor {name}, which model.safetensors.index.json puts in it" in _error(sharded)


def test_bad_index(sharded):
    p = sharded / "model.safetensors.index.json"
    p.write_text("{not json")
    assert "model.safetensors.index.json: not valid JSON" in _error(sharded)
    p.write_text(json.dumps({"weight_map": {"a": "../x.safetensors"}}))
    assert "is not a file name in this directory" in _error(sharded)


def _edit_config(d, **changes):
    p = os.path.join(d, "config.json")
    with open(p) as f:
        cfg = json.load(f)
    for k, v in changes.items():
        if v is _DROP:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    with open(p, "w") as f:
        json.dump(cfg, f)


_DROP = object()


@pytest.fixture
def plain(tmp_path):
    return _save(tmp_path, "plain")


def test_unknown_rope_scaling_type_both_layouts(plain, tmp_path):
    _edit_config(plain, rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0})
    assert _error(plain).endswith("config.json: rope_parameters.rope_type 'yarn' is not supported "
                                  "(llama_cx supports default and llama3 rope)")
    _edit_config(plain, rope_parameters=_DROP, rope_scaling={"type": "dynamic", "factor": 2.0}, rope_theta=1e4)
    assert _error(plain).endswith("config.json: rope_scaling.rope_type 'dynamic' is not supported "
                                  "(llama_cx supports default and llama3 rope)")


def test_llama3_rope_missing_a_factor(plain):
    _edit_config(plain, rope_parameters={"rope_type": "llama3", "factor": 8.0, "rope_theta": 1e4,
                                         "low_freq_factor": 1.0, "high_freq_factor": 4.0})
    assert "rope_parameters.original_max_position_embeddings must be a positive integer, got None" in _error(plain)


def test_wrong_architecture(plain):
    _edit_config(plain, architectures=["MistralForCausalLM"])
    assert _error(plain).endswith("config.json: architectures ['MistralForCausalLM'] is not supported "
                                  "(llama_cx runs LlamaForCausalLM)")
    _edit_config(plain, architectures=_DROP, model_type="qwen2")
    assert "no architectures and model_type 'qwen2'" in _error(plain)


def test_bad_config_json(plain):
    (plain / "config.json").write_text('{"hidden_size": 64,')
    assert "config.json: not valid JSON" in _error(plain)
    (plain / "config.json").write_text("[]")
    assert "config.json: expected a JSON object" in _error(plain)


@pytest.mark.parametrize("changes,want", [
    (dict(hidden_act="gelu"), "hidden_act 'gelu' is not supported"),
    (dict(attention_bias=True), "attention_bias = True: biased projections are not supported"),
    (dict(num_attention_heads=5), "config.json: n_heads 5 is not a multiple of n_kv_heads 2"),
    (dict(hidden_size="64"), "hidden_size must be a positive integer, got '64'"),
    (dict(rms_norm_eps=-1), "rms_norm_eps must be a positive number, got -1"),
    (dict(tie_word_embeddings="yes"), "tie_word_embeddings must be true or false"),
])
def test_bad_config_values(plain, changes, want):
    _edit_config(plain, **changes)
    assert want in _error(plain)


def test_shapes_checked_against_config(plain):
    _edit_config(plain, intermediate_size=128)
    assert "tensor model.layers.0.mlp.gate_proj.weight has shape [96, 64], expected [128, 64] from config.json" in _error(plain)
    _edit_config(plain, intermediate_size=96, num_hidden_layers=3)
    assert "missing tensor model.layers.2.self_attn.q_proj.weight (config.json says num_hidden_layers=3" in _error(plain)
    _edit_config(plain, num_hidden_layers=1)
    assert "unexpected tensor model.layers.1." in _error(plain)


def test_untied_without_lm_head(tmp_path):
    d = _save(tmp_path, "tied", tied=True)
    _edit_config(d, tie_word_embeddings=False)
    assert "missing tensor lm_head.weight (config.json says tie_word_embeddings is false)" in _error(d)


def test_directory_without_weights_and_unknown_file(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    (d / "config.json").write_text("{}")
    assert "no model.safetensors or model.safetensors.index.json" in _error(d)
    junk = tmp_path / "model.bin"
    junk.write_bytes(b"\x00\x01junkjunkjunk")
    assert _error(junk) == (f"{junk}: not a model file (starts with bytes 00 01 6a 75 6e 6b 6a 75); llama_cx reads a "
                            f"Meta checkpoint directory, a consolidated .pth (zip), a GGUF file, a Hugging Face "
                            f"directory or a .safetensors file")


def test_bad_tokenizer_json_is_a_note(plain):
    (plain / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram", "vocab": []}}))
    m = llama_cx.load(str(plain))
    assert m.tokenizer is None
    assert any(n.startswith("no tokenizer: ") and "model type 'Unigram' is not supported" in n for n in m.notes)
    with pytest.raises(llama_cx.TokenizerMissingError, match="tokenizer.json is missing or unreadable"):
        m.require_tokenizer()


@pytest.mark.parametrize("pre,want", [
    ({"type": "Metaspace"}, "pre_tokenizer Metaspace is not supported (supported: "),
    ({"type": "ByteLevel", "add_prefix_space": True, "use_regex": True}, "ByteLevel(add_prefix_space) is not supported"),
    ({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated",
                                              "invert": False}, {"type": "ByteLevel", "use_regex": False}]},
     "pre_tokenizer Split with pattern '\\\\s+' (Isolated) is not supported"),
])
def test_unsupported_pre_tokenizers(tmp_path, llama3_tokenizer_dir, pre, want):
    with open(llama3_tokenizer_dir / "tokenizer.json") as f:
        tj = json.load(f)
    tj["pre_tokenizer"] = pre
    (tmp_path / "tokenizer.json").write_text(json.dumps(tj))
    assert want in _error(tmp_path, load_hf_tokenizer)


def test_config_layouts_agree():
    """The same Llama 3.1 config in both layouts gives the same ModelConfig."""
    common = dict(architectures=["LlamaForCausalLM"], hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=96, vocab_size=300, max_position_embeddings=131072,
                  rms_norm_eps=1e-5)
    rope = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192)
    v4 = config_from_hf(dict(common, rope_theta=500000.0, rope_scaling=dict(rope, rope_type="llama3")), "c4")
    v5 = config_from_hf(dict(common, rope_parameters=dict(rope, rope_type="llama3", rope_theta=500000.0)), "c5")
    assert v4 == v5 and v4.use_scaled_rope and v4.rope_theta == 500000.0 and v4.max_seq_len == 131072


# ---- tokenizer.json: a tiny valid one, and every field replaced by arbitrary JSON --------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from llama_cx.tokenizers.gpt2_bpe import _BYTE_OF_CHAR  # noqa: E402
from llama_cx.tokenizers.hf_json import from_tokenizer_json  # noqa: E402


def _tiny_tokenizer_json():
    alphabet = {b: c for c, b in _BYTE_OF_CHAR.items()}
    vocab = {alphabet[b]: b for b in range(256)}
    vocab["ab"] = 256
    return {
        "added_tokens": [{"id": 257, "content": "<|end|>", "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|end|>", "type_id": 0}},
                                                                    {"Sequence": {"id": "A", "type_id": 0}}]},
        "model": {"type": "BPE", "vocab": vocab, "merges": [["a", "b"]], "ignore_merges": False},
    }


def test_tiny_tokenizer_json():
    tok = from_tokenizer_json(_tiny_tokenizer_json(), "tiny.json", {"eos_token": {"content": "<|end|>"}})
    assert tok.encode("xab<|end|>") == [ord("x"), 256] + list(b"<|end|>")
    assert tok.encode("xab<|end|>", allowed_special="all") == [ord("x"), 256, 257]
    assert (tok.bos_id, tok.eos_id, tok.add_bos, tok.pattern) == (257, 257, True, "gpt2")


_JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 2**40), st.floats(allow_nan=False),
                               st.text(max_size=6), st.sampled_from(["BPE", "ByteLevel", "Sequence", "Split", "a b"])),
                     lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(
                         st.sampled_from(["type", "id", "content", "vocab", "merges", "pretokenizers", "processors",
                                          "single", "SpecialToken", "pattern", "Regex", "use_regex"]), inner, max_size=3)),
                     max_leaves=8)
_PATHS = [("added_tokens",), ("added_tokens", 0), ("added_tokens", 0, "id"), ("normalizer",), ("pre_tokenizer",),
          ("pre_tokenizer", "type"), ("post_processor",), ("post_processor", "single"), ("model",), ("model", "type"),
          ("model", "vocab"), ("model", "merges"), ("model", "merges", 0), ("model", "vocab", "ab"), ()]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_PATHS), _JSON), max_size=3), _JSON)
def test_tokenizer_json_with_arbitrary_fields_fails_in_one_line(edits, config):
    tj = _tiny_tokenizer_json()
    for path, value in edits:
        if not path:
            tj = value
            continue
        node = tj
        try:
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            pass
    try:
        tok = from_tokenizer_json(tj, "t.json", config if isinstance(config, dict) else {},
                                  {"eos_token_id": config} if not isinstance(config, dict) else {})
    except FormatError as e:
        assert "\n" not in str(e) and str(e).startswith("t.json: ")
        return
    tok.decode(tok.encode("Hello ab <|end|>", allowed_special="all"))


@pytest.mark.parametrize("merges,want", [
    ([["a", "zz"]], "model.merges[0] = ['a', 'zz'] is not two tokens of the vocabulary"),
    (["a b", "b a"], "model.merges[1] = 'b a' joins to a string that is not a token"),
    (["a b c"], "model.merges[0] = 'a b c' is not two tokens of the vocabulary"),
    ([["a", "b", "c"]], "is not two tokens of the vocabulary"),
    ([7], "model.merges[0] = 7 is not two tokens"),
    ({"a": "b"}, "model.merges is not a list"),
])
def test_bad_merges(merges, want):
    tj = _tiny_tokenizer_json()
    tj["model"]["merges"] = merges
    with pytest.raises(FormatError) as e:
        from_tokenizer_json(tj, "t.json")
    msg = str(e.value)
    assert msg.startswith("t.json: ") and want in msg and "\n" not in msg, msg


def test_bad_tokenizer_fields():
    def err(**edit):
        tj = _tiny_tokenizer_json()
        for k, v in edit.items():
            tj[k] = v
        with pytest.raises(FormatError) as e:
            from_tokenizer_json(tj, "t.json")
        return str(e.value)

    assert err(normalizer={"type": "NFC"}) == "t.json: normalizer 'NFC' is not supported (byte-level BPE vocabularies have none)"
    assert "byte_fallback BPE (SentencePiece-style) is not supported" in err(
        model=dict(_tiny_tokenizer_json()["model"], byte_fallback=True))
    assert err(added_tokens=[{"id": -1, "content": "x"}]) == (
        "t.json: added_tokens[0] is not an object with a string content and an integer id")
