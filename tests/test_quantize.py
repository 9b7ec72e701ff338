"""`llama-cx quantize` against two independent producers of the same bytes:

- the `gguf` package's Python quantizer (gguf.quants.quantize, a port of ggml's reference) for the 32-blocks,
  on random and extreme rows;
- llama.cpp itself (llama-cpp-python's llama_model_quantize, no importance matrix) for whole files: every
  tensor's type, its weight RMSE (gguf.quants.dequantize of both files against the F32 input) and its bytes,
  for every mixture, on a random model whose rows are multiples of 256 and on one whose rows are not (fallbacks);
- llama.cpp loads and runs what we write (a Meta checkpoint with the Llama 3 tokenizer and Llama 3.1 rope
  scaling), its token ids equal Meta's tokenizer's, and its logits follow our engine's on the same weights.
"""
import ctypes
import os
import subprocess
import sys

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

import llama_cx
from llama_cx import _kernels
from llama_cx.errors import FormatError, InvalidArgumentError
from llama_cx.formats.gguf import GGUFFile
from llama_cx.quantize import FILE_TYPES, choose_types

from _ckpt import random_state_dict, write_checkpoint
from _gguf_files import write_llama_gguf
from _llamacpp import dequantized_f32_gguf, llama_cpp_or_skip, no_extra_buffers
from test_hf import smol_dir  # noqa: F401  (fixture: SmolLM2 saved by transformers as an HF directory, cached)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(llama_cx.__file__)))
BLOCKS_32 = [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1]
K_QUANTS = [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]
ROW_BYTES = {Q.Q8_0: 34, Q.Q4_0: 18, Q.Q4_1: 20, Q.Q5_0: 22, Q.Q5_1: 24,
             Q.Q2_K: 84, Q.Q3_K: 110, Q.Q4_K: 144, Q.Q5_K: 176, Q.Q6_K: 210}


def ours(x: np.ndarray, qtype) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows, cols = x.shape
    rb = _kernels.quant_row_bytes(int(qtype), cols)
    out = bytearray(rows * rb)
    assert _kernels.quantize_rows(int(qtype), x, out, rows, cols) == len(out)
    return np.frombuffer(out, np.uint8).reshape(rows, rb)


def extreme_rows(cols: int, rng) -> np.ndarray:
    """Rows that stress scale choice and rounding: zeros, denormal-small, near f16 overflow, one outlier, constant,
    alternating signs, exact ties at half steps, negative-only, positive-only."""
    r = [np.zeros(cols), np.full(cols, 1e-30), np.full(cols, -3.5), rng.standard_normal(cols) * 60000,
         np.where(np.arange(cols) % 2, 1.0, -1.0), np.arange(cols) % 17 - 8.0, -np.abs(rng.standard_normal(cols)),
         np.abs(rng.standard_normal(cols)) + 5, np.linspace(-1, 1, cols)]
    spike = rng.standard_normal(cols) * 1e-3
    spike[::37] = 50.0
    r.append(spike)
    tiny = rng.standard_normal(cols) * 1e-7
    r.append(tiny)
    return np.array(r, dtype=np.float32)


@pytest.mark.parametrize("qtype", BLOCKS_32, ids=lambda t: t.name)
def test_32_blocks_byte_identical_to_gguf(qtype):
    rng = np.random.default_rng(int(qtype))
    cols = 32 * 9  # several blocks per row
    random = (rng.standard_normal((37, cols)) * rng.uniform(1e-4, 30, (37, 1))).astype(np.float32)
    x = np.concatenate([random, extreme_rows(cols, rng)])
    got = ours(x, qtype)
    want = gguf.quants.quantize(x, qtype)
    assert got.shape == want.shape == (len(x), cols // 32 * ROW_BYTES[qtype])
    bad = [i for i in range(len(x)) if not np.array_equal(got[i], want[i])]
    assert not bad, f"rows {bad[:5]} differ from gguf.quants.quantize"


@pytest.mark.parametrize("qtype", BLOCKS_32 + K_QUANTS, ids=lambda t: t.name)
def test_rows_and_threads(qtype):
    """Row sizes are ggml's; 1 thread and N threads write the same bytes; a row length the blocks do not divide
    is refused."""
    block = 256 if qtype in K_QUANTS else 32
    assert _kernels.quant_row_bytes(int(qtype), 3 * block) == 3 * ROW_BYTES[qtype]
    assert _kernels.quant_row_bytes(int(qtype), block + 16) == 0
    x = np.random.default_rng(1).standard_normal((53, 2 * block)).astype(np.float32)
    old = llama_cx.get_num_threads()
    try:
        llama_cx.set_num_threads(1)
        one = ours(x, qtype)
        llama_cx.set_num_threads(max(2, os.cpu_count() or 2))
        many = ours(x, qtype)
    finally:
        llama_cx.set_num_threads(old)
    assert np.array_equal(one, many)
    with pytest.raises(ValueError, match="cannot be written for rows of 48 elements"):
        _kernels.quantize_rows(int(qtype), x, bytearray(1 << 16), 1, 48)


@pytest.mark.parametrize("qtype", K_QUANTS, ids=lambda t: t.name)
def test_k_quants_extreme_rows_round_trip(qtype):
    """Extreme rows dequantize (gguf's dequantize) to finite values close to the input: zero rows to zeros. The
    last row (values ~1e-7) needs scales below f16's smallest: it comes back as zeros, as in ggml."""
    rng = np.random.default_rng(7)
    x = extreme_rows(512, rng)
    d = gguf.quants.dequantize(ours(x, qtype), qtype)
    assert np.isfinite(d).all()
    assert (d[0] == 0).all()
    rel = np.sqrt(((d - x) ** 2).mean(axis=1)) / np.maximum(np.sqrt((x ** 2).mean(axis=1)), 1e-30)
    assert (rel[1:-1] < 0.6).all(), rel
    assert (d[-1] == 0).all()


# ---- whole files against llama.cpp's quantizer ----------------------------------------------------------------

def _model_gguf(path, dim, hidden_multiple, n_layers, n_heads, n_kv, vocab, seed):
    params = dict(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv, vocab_size=vocab,
                  multiple_of=hidden_multiple, ffn_dim_multiplier=None, norm_eps=1e-5, rope_theta=500000.0)
    sd = random_state_dict(params, dtype="f32", seed=seed)
    write_llama_gguf(path, params, sd)
    return str(path)


@pytest.fixture(scope="module")
def f32_256(tmp_path_factory):
    """8 layers (use_more_bits picks layers 0, 3, 6, 7), GQA 4, every row a multiple of 256."""
    return _model_gguf(tmp_path_factory.mktemp("q") / "f32-256.gguf", 256, 256, 8, 4, 1, 512, seed=1)


@pytest.fixture(scope="module")
def f32_odd(tmp_path_factory):
    """Rows of 320 and 864 (multiples of 32, not of 256): llama.cpp falls back to 32-block types."""
    return _model_gguf(tmp_path_factory.mktemp("q") / "f32-odd.gguf", 320, 32, 3, 5, 5, 384, seed=2)


def _llamacpp_quantize(src, dst, kind):
    llama_cpp = llama_cpp_or_skip()
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = FILE_TYPES[kind][0]
    p.nthread = 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p))
    assert rc == 0, f"llama_model_quantize failed ({rc})"
    return str(dst)


def _tensors(path):
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def _compare_with_llamacpp(src, kind, tmp_path):
    ref = _llamacpp_quantize(src, tmp_path / f"ref-{kind}.gguf", kind)
    got = llama_cx.quantize(src, tmp_path / f"ours-{kind}.gguf", kind).path
    x, a, b = _tensors(src), _tensors(got), _tensors(ref)
    assert set(a) == set(b)
    rows = []
    for name in b:
        assert a[name].tensor_type == b[name].tensor_type, f"{name}: ours {a[name].tensor_type.name}, " \
                                                            f"llama.cpp {b[name].tensor_type.name}"
        w = np.asarray(x[name].data, dtype=np.float32).reshape(-1)
        rmse = [float(np.sqrt(((gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1) - w) ** 2).mean()))
                for t in (a[name], b[name])]
        same = np.array_equal(np.asarray(a[name].data), np.asarray(b[name].data))
        rows.append((name, a[name].tensor_type.name, rmse[0], rmse[1], same))
    ft = GGUFFile(got)
    assert ft.metadata["general.file_type"] == FILE_TYPES[kind][0]
    ft.close()
    return rows


KINDS = list(FILE_TYPES)


@pytest.mark.parametrize("kind", KINDS)
def test_mixture_types_and_rmse_match_llamacpp(kind, f32_256, tmp_path):
    rows = _compare_with_llamacpp(f32_256, kind, tmp_path)
    worse = [(n, t, r0, r1) for n, t, r0, r1, _ in rows if r0 > r1 * 1.02 + 1e-12]
    assert not worse, f"weight RMSE more than 2% above llama.cpp's: {worse[:5]}"
    # Stronger than the RMSE bound, and what the reference quantizers promise: the very same bytes.
    differ = [n for n, *_, same in rows if not same]
    assert not differ, f"tensors whose bytes differ from llama.cpp's: {differ[:5]}"


@pytest.mark.parametrize("kind", ["q4_k_m", "q5_k_m", "q6_k", "q2_k", "q3_k_m", "q8_0"])
def test_fallback_types_match_llamacpp(kind, f32_odd, tmp_path):
    rows = _compare_with_llamacpp(f32_odd, kind, tmp_path)
    types = {t for _, t, *_ in rows}
    assert not types & {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}  # no row here is a multiple of 256
    differ = [n for n, *_, same in rows if not same]
    assert not differ, f"tensors whose bytes differ from llama.cpp's: {differ[:5]}"


def test_f16_and_bf16_inputs(tmp_path):
    """F16 and BF16 GGUF inputs quantize exactly as their values widened to F32 do."""
    params = dict(dim=256, n_layers=1, n_heads=4, n_kv_heads=4, vocab_size=256, multiple_of=256, norm_eps=1e-5)
    sd = random_state_dict(params, dtype="f32", seed=5)
    for name, qt, torch_dtype in (("f16", Q.F16, "float16"), ("bf16", Q.BF16, "bfloat16")):
        low = {k: v.to(getattr(__import__("torch"), torch_dtype)) for k, v in sd.items()}
        src = str(tmp_path / f"{name}.gguf")
        write_llama_gguf(src, params, low, qtype_of=lambda n, a, qt=qt: qt if a.ndim == 2 else Q.F32)
        wide = str(tmp_path / f"{name}-as-f32.gguf")
        write_llama_gguf(wide, params, {k: v.float() for k, v in low.items()})
        a = _tensors(llama_cx.quantize(src, tmp_path / f"{name}-q.gguf", "q4_k_m").path)
        b = _tensors(llama_cx.quantize(wide, tmp_path / f"{name}-wide-q.gguf", "q4_k_m").path)
        for n in b:
            assert np.array_equal(np.asarray(a[n].data), np.asarray(b[n].data)), n


def test_recipe_details():
    """Spot checks of llama.cpp's recipe that the files above do not reach: tied embeddings take the output's
    Q6_K, a 70B-shaped model (80 layers, GQA) lifts attn_v to Q5_K in Q3_K_M, rows that even the 32-blocks do not
    divide fall back to F16."""
    t = [("token_embd.weight", (1000, 512)), ("blk.0.attn_v.weight", (128, 512)), ("output_norm.weight", (512,))]
    assert choose_types(t, "q4_k_m", 1, 4) == {"token_embd.weight": 14, "blk.0.attn_v.weight": 14,
                                               "output_norm.weight": 0}
    many = [(f"blk.{i}.attn_v.weight", (1024, 8192)) for i in range(80)]
    got = choose_types(many, "q3_k_m", 80, 8)
    assert got["blk.0.attn_v.weight"] == 13 and got["blk.5.attn_v.weight"] == 13  # Q5_K (Q4_K lifted)
    assert choose_types([("blk.0.ffn_up.weight", (64, 48))], "q4_k_m", 1, 1) == {"blk.0.ffn_up.weight": 1}


# ---- the files run in llama.cpp ---------------------------------------------------------------------------------

LLAMA31 = dict(dim=256, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=128256, multiple_of=256,
               ffn_dim_multiplier=None, norm_eps=1e-5, rope_theta=500000.0, use_scaled_rope=True)
TEXTS = ["Hello, world! The quick brown fox jumps over the lazy dog.",
         "  Leading spaces, tabs\tand\nnewlines; numbers 1234567 and émojis 🦙 too.",
         "def f(x):\n    return x ** 2  # a comment"]


@pytest.fixture(scope="module")
def meta_ckpt(tmp_path_factory, llama3_tokenizer_path):
    """A random Llama 3.1-style Meta checkpoint (bf16, torch.save) with Meta's tokenizer.model."""
    d = tmp_path_factory.mktemp("meta31")
    write_checkpoint(d, params=dict(LLAMA31), dtype="bf16", seed=3, tokenizer=llama3_tokenizer_path)
    return str(d)


@pytest.fixture(scope="module")
def meta_q4km(meta_ckpt, tmp_path_factory):
    return llama_cx.quantize(meta_ckpt, tmp_path_factory.mktemp("out") / "m-q4_k_m.gguf", "q4_k_m").path


def test_meta_checkpoint_metadata(meta_q4km, meta_ckpt):
    gf = GGUFFile(meta_q4km)
    md = gf.metadata
    assert md["general.architecture"] == "llama"
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.pre"] == "llama-bpe"
    assert len(md["tokenizer.ggml.tokens"]) == 128256
    assert md["tokenizer.ggml.bos_token_id"] == 128000
    # Llama 3's tokenizer.json holds 280147 merges; the ranks give the same set back
    assert len(md["tokenizer.ggml.merges"]) == 280147
    names = [ti.name for ti in gf.tensor_infos]
    assert names[0] == "rope_freqs.weight"
    gf.close()


def test_tokenizer_ids_equal_meta_and_llamacpp(meta_ckpt, meta_q4km, monkeypatch):
    llama_cpp = llama_cpp_or_skip()
    no_extra_buffers(monkeypatch)
    meta = llama_cx.Tokenizer.from_file(os.path.join(meta_ckpt, "tokenizer.model"))
    ours = llama_cx.tokenizers.Tokenizer.from_gguf_metadata(GGUFFile(meta_q4km).metadata, "q4_k_m")
    llm = llama_cpp.Llama(model_path=meta_q4km, vocab_only=True, verbose=False)
    for text in TEXTS:
        want = meta.encode(text, bos=True)
        assert ours.encode(text, bos=True) == want
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == want


def _logits_llamacpp(path, ids, monkeypatch):
    llama_cpp = llama_cpp_or_skip()
    no_extra_buffers(monkeypatch)
    llm = llama_cpp.Llama(model_path=path, n_ctx=64, n_batch=64, logits_all=True, verbose=False, n_threads=2)
    llm.eval(ids)
    return np.array(llm.scores[:len(ids)], dtype=np.float64)


@pytest.mark.parametrize("kind", ["q4_k_m", "q8_0"])
def test_llamacpp_runs_our_file(kind, meta_ckpt, meta_q4km, tmp_path, monkeypatch):
    """llama.cpp's logits on our quantized file follow llama_cx's on the same weights dequantized exactly
    (llama.cpp also rounds its activations to 8 bits, hence the tolerance); rope scaling included."""
    path = meta_q4km if kind == "q4_k_m" else llama_cx.quantize(meta_ckpt, tmp_path / "m.gguf", kind).path
    f32 = dequantized_f32_gguf(path, str(tmp_path / "deq.gguf"))
    model = llama_cx.load(f32)
    assert model.config.use_scaled_rope and model.config.rope_scale_factor == 8.0
    ids = model.tokenizer.encode(" ".join(TEXTS), bos=True)[:40]
    ref = np.array(model.logits(ids), dtype=np.float64).reshape(len(ids), -1)
    got = _logits_llamacpp(path, ids, monkeypatch)
    err = np.abs(got - ref).mean() / ref.std()
    assert err < 0.05, f"llama.cpp vs llama_cx on the dequantized weights: mean |diff| {err:.4f} x std"
    assert (got.argmax(1) == ref.argmax(1)).mean() > 0.9


def test_q8_0_loads_in_llama_cx(meta_ckpt, tmp_path):
    """Our Q8_0 file loads in llama_cx (widened at load) with the same config and tokenizer as the checkpoint."""
    path = llama_cx.quantize(meta_ckpt, tmp_path / "m-q8.gguf", "q8_0").path
    a, b = llama_cx.load(meta_ckpt), llama_cx.load(path)
    assert a.config.replace(norm_eps=b.config.norm_eps) == b.config  # GGUF keeps the epsilon as float32
    assert abs(a.config.norm_eps - b.config.norm_eps) < 1e-12
    assert b.tokenizer.encode(TEXTS[1], bos=True) == a.tokenizer.encode(TEXTS[1], bos=True)
    assert isinstance(llama_cx.chat_format_for(b.tokenizer), llama_cx.ChatFormat)  # the template we wrote: Llama 3
    assert llama_cx.chat_format_for(b.tokenizer).encode_dialog([{"role": "user", "content": "Hi"}]) == \
        llama_cx.chat_format_for(a.tokenizer).encode_dialog([{"role": "user", "content": "Hi"}])
    ids = a.tokenizer.encode(TEXTS[0], bos=True)
    la = np.array(a.logits(ids)).reshape(len(ids), -1)
    lb = np.array(b.logits(ids)).reshape(len(ids), -1)
    assert np.abs(la - lb).mean() / la.std() < 0.05
    assert (la.argmax(1) == lb.argmax(1)).mean() > 0.9


# ---- inputs, errors and the command line -------------------------------------------------------------------------

def test_gguf_input_keeps_tokenizer(smollm2_gguf_path, tmp_path):
    """A quantized input is refused (a second rounding); its F32 copy quantizes, the tokenizer keys copied."""
    with pytest.raises(FormatError, match="tensor token_embd.weight is Q8_0; quantize reads F32, F16 or BF16"):
        llama_cx.quantize(smollm2_gguf_path, tmp_path / "x.gguf", "q8_0")
    assert not os.path.exists(tmp_path / "x.gguf")
    f32 = dequantized_f32_gguf(smollm2_gguf_path, str(tmp_path / "f32.gguf"))
    r = llama_cx.quantize(f32, tmp_path / "q.gguf", "q4_k_m")
    src, out = GGUFFile(smollm2_gguf_path).metadata, GGUFFile(r.path).metadata
    for k in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.chat_template", "tokenizer.ggml.pre"):
        assert out[k] == src[k]
    # SmolLM2's 576-wide rows: Q5_0 for most matrices, Q8_0 for the tied embeddings, as llama.cpp does
    counts = r.type_counts()
    assert counts["Q5_0"] > counts.get("Q4_K", 0) and r.types["token_embd.weight"] == 8


def test_hf_directory(smol_dir, tmp_path, monkeypatch):
    """A Hugging Face directory (SmolLM2, bf16 safetensors + tokenizer.json): the GGUF's vocabulary tokenizes as
    tokenizer.json does, in llama_cx and in llama.cpp (transformers saved SmolLM2's vocabulary with a plain
    ByteLevel pre-tokenizer, which is llama.cpp's "gpt-2"), the chat template
    is kept, and llama.cpp's logits on our Q8_0 file follow llama_cx's on the bf16 directory (q/k rows in the
    order llama.cpp expects)."""
    from llama_cx.tokenizers.hf_json import load_hf_tokenizer

    llama_cpp = llama_cpp_or_skip()
    path = llama_cx.quantize(smol_dir, tmp_path / "smol-q8_0.gguf", "q8_0").path
    md = GGUFFile(path).metadata
    assert md["tokenizer.ggml.pre"] == "gpt-2"
    hf = load_hf_tokenizer(smol_dir)
    assert md["tokenizer.chat_template"] == hf.chat_template
    model = llama_cx.load(smol_dir)
    no_extra_buffers(monkeypatch)
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    for text in TEXTS:
        want = hf.encode(text)
        assert llama_cx.load(path).tokenizer.encode(text) == want
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == want
    ids = hf.encode(TEXTS[0] + " " + TEXTS[2])
    ref = np.array(model.logits(ids), dtype=np.float64).reshape(len(ids), -1)
    got = _logits_llamacpp(path, ids, monkeypatch)
    assert np.abs(got - ref).mean() / ref.std() < 0.05
    assert (got.argmax(1) == ref.argmax(1)).mean() > 0.9


def test_llama2_sentencepiece_checkpoint(llama_spm_vocab_dir, tmp_path, monkeypatch):
    """A Llama 2 style Meta directory (SentencePiece tokenizer.model): model "llama" with pieces, scores and types;
    llama.cpp and llama_cx tokenize the output as the tokenizer.model does."""
    llama_cpp = llama_cpp_or_skip()
    params = dict(dim=256, n_layers=1, n_heads=4, n_kv_heads=4, vocab_size=32000, multiple_of=256, norm_eps=1e-5)
    d = tmp_path / "llama2"
    write_checkpoint(d, params=params, dtype="bf16", tokenizer=os.path.join(llama_spm_vocab_dir, "tokenizer.model"))
    path = llama_cx.quantize(d, tmp_path / "l2.gguf", "q4_0").path
    md = GGUFFile(path).metadata
    assert md["tokenizer.ggml.model"] == "llama" and len(md["tokenizer.ggml.scores"]) == 32000
    spm = llama_cx.SentencePieceTokenizer.from_file(os.path.join(llama_spm_vocab_dir, "tokenizer.model"))
    ours = llama_cx.SentencePieceTokenizer.from_gguf_metadata(md, path)
    no_extra_buffers(monkeypatch)
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    for text in TEXTS:
        want = spm.encode(text, bos=True)
        assert ours.encode(text, bos=True) == want
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == want


def test_bad_arguments(meta_ckpt, tmp_path):
    with pytest.raises(InvalidArgumentError, match="unknown quantization type 'q7_k'"):
        llama_cx.quantize(meta_ckpt, tmp_path / "x.gguf", "q7_k")
    with pytest.raises(FormatError, match="no such file"):
        llama_cx.quantize(tmp_path / "missing", tmp_path / "x.gguf", "q8_0")
    with pytest.raises(FormatError, match="nodir/x.gguf: cannot write"):
        llama_cx.quantize(meta_ckpt, tmp_path / "nodir" / "x.gguf", "q8_0")


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "llama_cx", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_cli_quantize(f32_256, tmp_path):
    out = tmp_path / "cli.gguf"
    r = _cli("quantize", f32_256, str(out), "--type", "Q4_K_M")
    assert r.returncode == 0, r.stderr
    assert f"{out}: Q4_K_M, 75 tensors" in r.stdout
    assert "75/75" in r.stderr  # the progress line
    bad = _cli("quantize", f32_256, str(tmp_path / "y.gguf"), "--type", "q9")
    assert bad.returncode == 2 and "invalid choice: 'q9'" in bad.stderr and len(bad.stderr.splitlines()) == 1
