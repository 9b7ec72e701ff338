"""llama_cx.formats.gguf (and gguf_llama) against the real producer and reader of GGUF files, llama.cpp's `gguf` package.

Files are written with gguf.GGUFWriter (quantized with gguf.quants.quantize) and our reader must return the
same metadata and tensors; quantized tensors must equal gguf.quants.dequantize rounded to bf16 bit for bit.
Hostile files are valid ones with one field patched; every one must give a one-line FormatError.
"""
import math
import os
import re

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _ckpt import SMALL, random_state_dict
from _gguf_files import (
    bf16_rne, hf_permute, key_pos, llama3_rope_factors, llamacpp_permute, meta_to_hf, patch, set_u32, set_u64,
    tensor_info_pos, tensor_to_numpy, write_gguf, write_llama_gguf,
)
from llama_cx.errors import FormatError, LlamaCxError
from llama_cx.dtypes import BY_GGML_ID
from llama_cx.formats.gguf import FILE_TYPES, GGUFFile
from llama_cx.formats.gguf_llama import load as load_gguf
from llama_cx.model import Model

# ---- every metadata value type -----------------------------------------------------------------------------

F32_VALUE = 0.1  # not exact in float32: checks we return the float32 value, like gguf does
SCALARS = [
    ("t.u8", 255, V.UINT8), ("t.i8", -128, V.INT8), ("t.u16", 65535, V.UINT16), ("t.i16", -32768, V.INT16),
    ("t.u32", 2**32 - 1, V.UINT32), ("t.i32", -(2**31), V.INT32), ("t.f32", F32_VALUE, V.FLOAT32),
    ("t.true", True, V.BOOL), ("t.false", False, V.BOOL), ("t.u64", 2**64 - 1, V.UINT64),
    ("t.i64", -(2**63), V.INT64), ("t.f64", math.pi, V.FLOAT64),
    ("t.str", "héllo ✓ 🦙\nsecond line", V.STRING), ("t.empty_str", "", V.STRING),
]
ARRAYS = [
    ("t.a_u8", [0, 7, 255], V.ARRAY, V.UINT8), ("t.a_i8", [-128, 0, 127], V.ARRAY, V.INT8),
    ("t.a_u16", [0, 65535], V.ARRAY, V.UINT16), ("t.a_i16", [-32768, 5], V.ARRAY, V.INT16),
    ("t.a_u32", [1, 2, 2**32 - 1], V.ARRAY, V.UINT32), ("t.a_i32", [-(2**31), 3], V.ARRAY, V.INT32),
    ("t.a_f32", [0.5, -2.25, F32_VALUE], V.ARRAY, V.FLOAT32), ("t.a_bool", [True, False, True], V.ARRAY, V.BOOL),
    ("t.a_u64", [2**64 - 1, 0], V.ARRAY, V.UINT64), ("t.a_i64", [-(2**63), 2**63 - 1], V.ARRAY, V.INT64),
    ("t.a_f64", [math.e, -0.0], V.ARRAY, V.FLOAT64), ("t.a_str", ["a", "", "ünï", "x" * 300], V.ARRAY, V.STRING),
]
NESTED = [
    ("t.nested_int", [[1, 2, 3], [4], [-5, 6]], V.ARRAY),  # gguf writes ints in nested lists as int32
    ("t.nested_str", [["a", "bc"], ["d"]], V.ARRAY),
    ("t.nested3", [[[1.5], [2.5, 3.5]], [[4.5]]], V.ARRAY),
]
TYPE_NAMES = {V.UINT8: "uint8", V.INT8: "int8", V.UINT16: "uint16", V.INT16: "int16", V.UINT32: "uint32",
              V.INT32: "int32", V.FLOAT32: "float32", V.BOOL: "bool", V.UINT64: "uint64", V.INT64: "int64",
              V.FLOAT64: "float64", V.STRING: "string"}


def expected_value(value, vtype):
    if isinstance(value, list):
        return [expected_value(v, vtype) for v in value]
    if vtype == V.FLOAT32:
        return float(np.float32(value))
    return value


def one_line_error(excinfo, path, *fragments):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    assert msg.startswith(str(path) + ": "), msg
    for f in fragments:
        assert f in msg, msg
    return msg


@pytest.fixture(scope="module")
def all_types_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "all_types.gguf"
    rng = np.random.default_rng(1)
    tensors = [("w.f32", rng.standard_normal((3, 5)), Q.F32), ("w.q8", rng.standard_normal((2, 64)), Q.Q8_0)]
    write_gguf(path, SCALARS + ARRAYS + NESTED, tensors)
    return path


@pytest.mark.parametrize("version", [2, 3])
def test_metadata_of_every_value_type(tmp_path, version):
    path = tmp_path / f"v{version}.gguf"
    write_gguf(path, SCALARS + ARRAYS + NESTED, [("x", np.ones(32), Q.F32)], version=version)
    with GGUFFile(path) as gf:
        assert gf.version == version
        assert gf.metadata["general.architecture"] == "llama"
        for key, value, vtype in SCALARS:
            got = gf.metadata[key]
            assert got == expected_value(value, vtype) and type(got) is type(value), key
            assert gf.metadata_types[key] == TYPE_NAMES[vtype]
        for key, value, _, sub in ARRAYS:
            assert gf.metadata[key] == expected_value(value, sub), key
            assert gf.metadata_types[key] == f"array[{TYPE_NAMES[sub]}]"
        assert gf.metadata["t.nested_int"] == [[1, 2, 3], [4], [-5, 6]]
        assert gf.metadata["t.nested_str"] == [["a", "bc"], ["d"]]
        assert gf.metadata["t.nested3"] == [[[1.5], [2.5, 3.5]], [[4.5]]]
        assert gf.metadata_types["t.nested_int"] == "array[array]"
        assert math.copysign(1.0, gf.metadata["t.a_f64"][1]) == -1.0  # -0.0 survives

        # and gguf's own reader agrees on every (non-nested) key, value and type
        reader = gguf.GGUFReader(path)
        for key, field in reader.fields.items():
            if key.startswith("GGUF.") or key.startswith("t.nested"):
                continue
            assert gf.metadata[key] == field.contents(), key
            assert gf.metadata_types[key].split("[")[0] == TYPE_NAMES.get(field.types[0], "array"), key


def test_non_utf8_strings_are_kept_recoverable(tmp_path):
    # GGUF says UTF-8, but real vocabularies hold raw byte pieces now and then: keep them, recoverable
    path = tmp_path / "bytes.gguf"
    write_gguf(path, [("t.raw", b"ab\xff", V.STRING), ("t.raw_arr", [b"ok", b"\xc3"], V.ARRAY, V.STRING)], [])
    with GGUFFile(path) as gf:
        assert gf.metadata["t.raw"].encode("utf-8", "surrogateescape") == b"ab\xff"
        assert [s.encode("utf-8", "surrogateescape") for s in gf.metadata["t.raw_arr"]] == [b"ok", b"\xc3"]


def test_type_tables_match_gguf():
    for tid, dt in BY_GGML_ID.items():
        assert Q(tid).name == dt.ggml_name
        assert gguf.GGML_QUANT_SIZES[Q(tid)] == (dt.block_size, dt.block_bytes), dt.name
    assert {int(t) for t in gguf.GGML_QUANT_SIZES} == set(BY_GGML_ID)
    for fid, name in FILE_TYPES.items():
        assert gguf.LlamaFileType(fid).name == name


# ---- tensors: views and dequantization ---------------------------------------------------------------------

def _tensor_cases(rng):
    def mixed(shape):
        # rows of very different scales, a zero row, negatives: exercises d = 0 and the min of Q4_1
        x = rng.standard_normal(shape).astype(np.float32)
        x *= np.logspace(-3, 2, shape[-2] if len(shape) > 1 else 1, dtype=np.float32).reshape(-1, 1)
        if len(shape) > 1:
            x[..., 0, :] = 0
        return x

    return [
        ("f32_3d", mixed((3, 5, 7)), Q.F32),
        ("f32_4d", mixed((2, 3, 1, 5)), Q.F32),
        ("f32_1d", rng.standard_normal(11), Q.F32),
        ("f16", mixed((5, 33)), Q.F16),
        ("bf16", mixed((7, 9)), Q.BF16),
        ("q8_0", mixed((7, 96)), Q.Q8_0),
        ("q8_0_1row", mixed((1, 32)), Q.Q8_0),
        ("q4_0", mixed((5, 160)), Q.Q4_0),
        ("q4_0_3d", mixed((3, 2, 64)), Q.Q4_0),
        ("q4_1", mixed((9, 64)), Q.Q4_1),
        ("q5_0", mixed((3, 64)), Q.Q5_0),
        ("q5_1", mixed((4, 96)), Q.Q5_1),
        ("q4_1_1d", rng.standard_normal(96).astype(np.float32), Q.Q4_1),
    ]


@pytest.mark.parametrize("version", [2, 3])
def test_tensors_of_every_supported_dtype(tmp_path, version):
    path = tmp_path / "tensors.gguf"
    cases = _tensor_cases(np.random.default_rng(7))
    written = write_gguf(path, [("t.k", 1, V.UINT32)], cases, version=version)
    reader = {t.name: t for t in gguf.GGUFReader(path).tensors}
    with GGUFFile(path) as gf:
        assert gf.version == version and gf.data_offset % 32 == 0
        infos = {ti.name: ti for ti in gf.tensor_infos}
        assert list(infos) == [c[0] for c in cases]
        for name, array, qtype in cases:
            ti = infos[name]
            r = reader[name]
            assert ti.type_name == qtype.name and ti.ggml_type == int(qtype)
            assert ti.shape == array.shape and ti.dims == tuple(int(d) for d in r.shape)  # gguf: ne0 first
            assert ti.data_offset == r.data_offset and ti.nbytes == r.n_bytes
            assert bytes(gf.tensor_bytes(ti)) == written[name].tobytes()
            t = gf.tensor(ti)
            assert t.shape == array.shape and t.is_contiguous and t.name == name
            got = tensor_to_numpy(t)
            if qtype == Q.F32:
                assert t.dtype == "f32" and t.buffer is gf.mmap and t.offset == ti.data_offset  # zero-copy
                np.testing.assert_array_equal(got, array.astype(np.float32))
            elif qtype == Q.F16:
                assert t.dtype == "f16" and t.buffer is gf.mmap
                np.testing.assert_array_equal(got, array.astype(np.float16))
            elif qtype == Q.BF16:
                assert t.dtype == "bf16" and t.buffer is gf.mmap
                np.testing.assert_array_equal(got, bf16_rne(array))  # gguf's BF16 quantizer is RNE too
            else:  # block types: zero-copy too, read by their kernels in place
                assert t.dtype == qtype.name.lower() and t.buffer is gf.mmap and t.offset == ti.data_offset
                want = gguf.quants.dequantize(written[name], qtype)
                assert got.shape == want.shape and np.array_equal(got, want), name  # bit-exact
            del t, got  # views of the mmap must go before close


# ---- the llama architecture --------------------------------------------------------------------------------

def _meta_params(**overrides):
    return dict(SMALL, **overrides)


def _meta_np(t: torch.Tensor) -> np.ndarray:
    return t.float().numpy()


def test_qk_rows_are_meta_layout(tmp_path):
    """Meta -> HF (transformers' permute) -> GGUF (llama.cpp's permute) -> our reader gives Meta's weights back.

    So GGUF attn_q / attn_k rows are Meta's interleaved-pair RoPE layout and need no un-permuting.
    """
    params = _meta_params()
    sd = random_state_dict(params, dtype="bf16", seed=11)
    hf = meta_to_hf(sd, params)
    # control: the HF layout really is different, so the round trip below can fail
    assert not torch.equal(hf["model.layers.0.self_attn.q_proj.weight"], sd["layers.0.attention.wq.weight"])
    assert not torch.equal(hf["model.layers.0.self_attn.k_proj.weight"], sd["layers.0.attention.wk.weight"])
    # the two permutations are inverses for q (n_heads) and for k (n_kv_heads)
    w = torch.arange(64 * 8, dtype=torch.float32).reshape(64, 8)
    for heads in (4, 2, 1):
        assert torch.equal(llamacpp_permute(hf_permute(w, heads), heads, heads), w)

    path = tmp_path / "meta_layout.gguf"
    write_llama_gguf(path, params, sd)
    ckpt = load_gguf(path)
    assert ckpt.format == "gguf" and set(ckpt.tensors) == set(sd)
    for name, t in sd.items():
        got = ckpt.tensors[name]
        assert got.shape == tuple(t.shape) and got.dtype == "f32"
        np.testing.assert_array_equal(tensor_to_numpy(got), _meta_np(t), err_msg=name)


def _qtype_mix(name, arr):
    if arr.ndim == 1:
        return Q.F32  # llama.cpp keeps norms in f32
    return {"attn_q": Q.Q4_1, "attn_k": Q.Q4_0, "attn_v": Q.Q8_0, "attn_output": Q.BF16, "ffn_gate": Q.Q4_1,
            "ffn_down": Q.Q4_0, "ffn_up": Q.F16, "token_embd": Q.Q8_0, "output": Q.Q4_1}[name.split(".")[-2]]


@pytest.mark.parametrize("version", [2, 3])
def test_llama_checkpoint_quantized_mix(tmp_path, version):
    params = _meta_params()
    sd = random_state_dict(params, dtype="f32", seed=5)
    path = tmp_path / "llama_mix.gguf"
    written = write_llama_gguf(
        path, params, sd, qtype_of=_qtype_mix, version=version,
        extra_metadata=[("general.file_type", 3, V.UINT32), ("general.name", "tiny", V.STRING)],
    )
    ckpt = load_gguf(path)
    c = ckpt.config
    assert (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size) == (64, 2, 4, 2, 300)
    assert c.hidden_dim == sd["layers.0.feed_forward.w1.weight"].shape[0] and c.head_dim == 16
    assert c.rope_theta == 500000.0 and c.norm_eps == float(np.float32(1e-5)) and c.max_seq_len == 8192
    assert not c.use_scaled_rope
    assert ckpt.file_size == os.path.getsize(path) and ckpt.tokenizer is None
    md = ckpt.metadata
    assert md["gguf_version"] == version and md["file_type"] == "MOSTLY_Q4_1" and md["general.name"] == "tiny"
    assert md["tensor_types"] == {"F32": 5, "Q4_1": 5, "Q8_0": 3, "Q4_0": 4, "BF16": 2, "F16": 2}
    assert not any("dequantized" in n for n in ckpt.notes)  # block types stay in the file mapping

    gguf_of = {"tok_embeddings.weight": "token_embd.weight", "norm.weight": "output_norm.weight",
               "output.weight": "output.weight"}
    parts = {"attention.wq": "attn_q", "attention.wk": "attn_k", "attention.wv": "attn_v",
             "attention.wo": "attn_output", "feed_forward.w1": "ffn_gate", "feed_forward.w2": "ffn_down",
             "feed_forward.w3": "ffn_up", "attention_norm": "attn_norm", "ffn_norm": "ffn_norm"}
    for i in range(params["n_layers"]):
        for m, g in parts.items():
            gguf_of[f"layers.{i}.{m}.weight"] = f"blk.{i}.{g}.weight"
    assert set(ckpt.tensors) == set(sd)
    for name, t in ckpt.tensors.items():
        g = gguf_of[name]
        qtype = _qtype_mix(g, _meta_np(sd[name]))
        got = tensor_to_numpy(t)
        if qtype in (Q.F32, Q.F16):
            want = written[g]
        elif qtype == Q.BF16:
            want = written[g].view(np.uint16)
        else:
            assert t.buffer is ckpt.files[0].mapping, name  # zero-copy
            want = gguf.quants.dequantize(written[g], qtype)
        assert got.shape == tuple(sd[name].shape) and np.array_equal(got, want), name
    # Q/K went through both permutations and still match Meta's f32 weights after quantization error
    wq = tensor_to_numpy(ckpt.tensors["layers.1.attention.wq.weight"])
    if wq.dtype == np.uint16:
        wq = (wq.astype(np.uint32) << 16).view(np.float32)
    err = np.abs(wq - _meta_np(sd["layers.1.attention.wq.weight"]))
    assert err.max() < 0.2 * np.abs(_meta_np(sd["layers.1.attention.wq.weight"])).max()


def test_header_only_open_dequantizes_nothing(tmp_path):
    """open_checkpoint(weights=False), for `llama-cx info`: the same records a load makes (every tensor, quantized ones
    too, a view of the mapped file: nothing is copied either way); and the sampling the file recommends
    (general.sampling.*) under SamplingParams' names."""
    params = _meta_params()
    sd = random_state_dict(params, dtype="f32", seed=5)
    path = tmp_path / "mix.gguf"
    write_llama_gguf(path, params, sd, qtype_of=_qtype_mix, extra_metadata=[
        ("general.sampling.temp", 0.3, V.FLOAT32), ("general.sampling.top_k", 40, V.INT32),
        ("general.sampling.penalty_last_n", 32, V.INT32)])
    full, head = load_gguf(path), load_gguf(path, weights=False)
    assert full.has_weights and not head.has_weights and head.buffers == [] == full.buffers
    assert full.notes == head.notes and full.metadata == head.metadata and full.config == head.config
    for name, t in full.tensors.items():
        h = head.tensors[name]
        assert (h.dtype, h.shape) == (t.dtype, t.shape), name
        assert h.buffer is head.files[0].mapping and t.buffer is full.files[0].mapping, name
    assert head.sampling == full.sampling == {"temperature": pytest.approx(0.3), "top_k": 40, "repeat_last_n": 32}
    with pytest.raises(LlamaCxError, match="opened without its weights"):
        Model(head)


def test_tied_llama(tmp_path):
    params = _meta_params()
    sd = random_state_dict(params, dtype="bf16", tied=True, seed=2)
    path = tmp_path / "tied.gguf"
    write_llama_gguf(path, params, sd, qtype_of=lambda n, a: Q.F32 if a.ndim == 1 else Q.BF16)
    ckpt = load_gguf(path)
    assert "output.weight" not in ckpt.tensors
    t = ckpt.tensors["tok_embeddings.weight"]
    assert t.dtype == "bf16" and t.buffer is ckpt.files[0].mapping  # a zero-copy view of the mapped file
    np.testing.assert_array_equal(tensor_to_numpy(t), sd["tok_embeddings.weight"].view(torch.int16).numpy().view(np.uint16))
    assert not any("dequantized" in n for n in ckpt.notes)


@pytest.mark.parametrize("factor", [8.0, 32.0])
def test_rope_freqs_tensor_maps_to_llama31_scaling(tmp_path, factor):
    params = _meta_params()
    sd = random_state_dict(params, dtype="bf16", seed=3)
    freqs = llama3_rope_factors(16, 500000.0, factor)
    assert len({float(f) for f in freqs}) > 2  # head_dim 16 reaches all three branches of the formula
    path = tmp_path / "rope.gguf"
    write_llama_gguf(path, params, sd, extra_tensors=[("rope_freqs.weight", freqs, Q.F32)], context_length=131072)
    c = load_gguf(path).config
    assert c.use_scaled_rope and c.rope_scale_factor == factor and c.max_seq_len == 131072
    assert c.rope_original_context == 8192
    assert load_gguf(path, rope_scale_factor=16.0).config.rope_scale_factor == 16.0

    bad = freqs.copy()
    bad[len(bad) // 2] *= 1.5
    path = tmp_path / "rope_bad.gguf"
    write_llama_gguf(path, params, sd, extra_tensors=[("rope_freqs.weight", bad, Q.F32)])
    with pytest.raises(FormatError) as e:
        load_gguf(path)
    one_line_error(e, path, "rope_freqs.weight", "do not match Llama 3.1 rope scaling")


def test_llama_without_rope_freqs_is_unscaled(tmp_path):
    params = _meta_params(rope_theta=10000.0)
    sd = random_state_dict(params, seed=4)
    path = tmp_path / "plain.gguf"
    write_llama_gguf(path, params, sd)
    c = load_gguf(path).config
    assert not c.use_scaled_rope and c.rope_theta == 10000.0


def _llama_error(tmp_path, match, params=None, sd=None, **kw):
    params = params or _meta_params()
    sd = sd if sd is not None else random_state_dict(params, seed=9)
    path = tmp_path / f"bad_llama_{len(os.listdir(tmp_path))}.gguf"
    write_llama_gguf(path, params, sd, **kw)
    with pytest.raises(FormatError) as e:
        load_gguf(path)
    return one_line_error(e, path, *match)


def test_llama_errors(tmp_path):
    params = _meta_params()
    sd = random_state_dict(params, seed=9)
    del sd["layers.1.feed_forward.w3.weight"]
    _llama_error(tmp_path, ["missing tensor blk.1.ffn_up.weight"], sd=sd)
    sd = random_state_dict(params, seed=9)
    sd["layers.0.attention.wv.weight"] = sd["layers.0.attention.wv.weight"][:16]
    _llama_error(tmp_path, ["tensor blk.0.attn_v.weight has shape [16, 64], expected [32, 64]"], sd=sd)
    _llama_error(tmp_path, ["unexpected tensor blk.0.attn_q.bias"],
                 extra_tensors=[("blk.0.attn_q.bias", np.zeros(64, np.float32), Q.F32)])
    _llama_error(tmp_path, ["llama.vocab_size gives a vocabulary of 301 tokens", "300 rows"],
                 extra_metadata=[("llama.vocab_size", 301, V.UINT32)])
    _llama_error(tmp_path, ["tokenizer.ggml.tokens gives a vocabulary of 2 tokens"],
                 extra_metadata=[("tokenizer.ggml.tokens", ["a", "b"], V.ARRAY, V.STRING)])
    _llama_error(tmp_path, ["llama.rope.dimension_count is 8", "partial rotary"],
                 extra_metadata=[("llama.rope.dimension_count", 8, V.UINT32)])
    _llama_error(tmp_path, ["rope scaling type yarn is not supported"],
                 extra_metadata=[("llama.rope.scaling.type", "yarn", V.STRING)])
    _llama_error(tmp_path, ["metadata llama.block_count must be a positive integer, got 'two'"],
                 extra_metadata=[("llama.block_count", "two", V.STRING)])

    path = tmp_path / "qwen.gguf"
    write_gguf(path, [], [("token_embd.weight", np.zeros((4, 32)), Q.F32)], arch="qwen2")
    with pytest.raises(FormatError) as e:
        load_gguf(path)
    one_line_error(e, path, "architecture qwen2 is not supported")


@pytest.mark.parametrize("qtype,block_bytes", [(Q.IQ4_XS, 136), (Q.TQ2_0, 66), (Q.Q8_1, 40 * 8)])
def test_unsupported_type_via_gguf_file(tmp_path, qtype, block_bytes):
    path = tmp_path / "iq.gguf"
    raw = np.zeros((2, block_bytes), np.uint8)  # two rows of 256 weights each
    write_gguf(path, [], [("blk.0.attn_q.weight", raw, qtype)])
    with GGUFFile(path) as gf:
        (ti,) = gf.tensor_infos
        assert ti.type_name == qtype.name and ti.shape == (2, 256) and ti.nbytes == 2 * block_bytes
        with pytest.raises(FormatError) as e:
            gf.tensor(ti)
        one_line_error(e, path, f"tensor blk.0.attn_q.weight has type {qtype.name}, which is not supported")


# ---- hostile and broken files ------------------------------------------------------------------------------

@pytest.fixture
def small(tmp_path):
    """A valid little file to break: metadata 'test.str', 'test.arr', 'test.flag'; tensors 'a' F32, 'b' Q8_0."""
    path = tmp_path / "small.gguf"
    write_gguf(
        path,
        [("test.str", "hello", V.STRING), ("test.arr", [1, 2, 3], V.ARRAY, V.UINT32), ("test.flag", True, V.BOOL)],
        [("a", np.ones((2, 32)), Q.F32), ("b", np.ones((1, 64)), Q.Q8_0)],
    )
    with GGUFFile(path) as gf:  # sanity: valid as written
        assert [t.name for t in gf.tensor_infos] == ["a", "b"]
    return path


def _expect(path, *fragments):
    with pytest.raises(FormatError) as e:
        GGUFFile(path)
    return one_line_error(e, path, *fragments)


def _dims_pos(path, name):
    return tensor_info_pos(path, name) + 4


def _type_pos(path, name, n_dims=2):
    return tensor_info_pos(path, name) + 4 + 8 * n_dims


HOSTILE = {
    "bad magic": (lambda p: patch(p, 0, b"GGML"), ["not a GGUF file"]),
    "version 1": (lambda p: set_u32(p, 4, 1), ["GGUF version 1 is not supported"]),
    "version 4": (lambda p: set_u32(p, 4, 4), ["GGUF version 4 is not supported"]),
    "tensor count huge": (lambda p: set_u64(p, 8, 2**63), ["header claims 9223372036854775808 tensors"]),
    "kv count huge": (lambda p: set_u64(p, 16, 2**64 - 1), ["18446744073709551615 metadata entries"]),
    "key length huge": (lambda p: set_u64(p, 24, 2**64 - 1), ["string length 18446744073709551615 runs past the end"]),
    "string length 2^64-1": (lambda p: set_u64(p, key_pos(p, "test.str") + 4, 2**64 - 1),
                             ["metadata test.str", "string length 18446744073709551615 runs past the end"]),
    "array count 2^63": (lambda p: set_u64(p, key_pos(p, "test.arr") + 8, 2**63),
                         ["array of 9223372036854775808 uint32 values runs past the end"]),
    "unknown value type": (lambda p: set_u32(p, key_pos(p, "test.str"), 13), ["unknown value type 13"]),
    "unknown array element type": (lambda p: set_u32(p, key_pos(p, "test.arr") + 4, 42),
                                   ["unknown array element type 42"]),
    "bool value 2": (lambda p: patch(p, key_pos(p, "test.flag") + 4, b"\x02"), ["bool value 2"]),
    "duplicate key": (lambda p: patch(p, key_pos(p, "test.arr") - 3, b"str"), ["duplicate metadata key test.str"]),
    "key not utf-8": (lambda p: patch(p, key_pos(p, "test.arr") - 1, b"\xff"), ["is not UTF-8"]),
    "n_dims 5": (lambda p: set_u32(p, tensor_info_pos(p, "a"), 5), ["tensor a has 5 dimensions"]),
    "n_dims 0": (lambda p: set_u32(p, tensor_info_pos(p, "a"), 0), ["tensor a has 0 dimensions"]),
    "dims product overflows": (lambda p: (set_u64(p, _dims_pos(p, "a"), 2**32), set_u64(p, _dims_pos(p, "a") + 8, 2**32)),
                               ["tensor a: dims [4294967296, 4294967296] overflow"]),
    "dim huge": (lambda p: set_u64(p, _dims_pos(p, "a") + 8, 2**40), ["tensor a", "runs past the end of the file"]),
    "offset past the end": (lambda p: set_u64(p, _type_pos(p, "b") + 4, 2**40), ["tensor b (68 bytes at offset 1099511627776) runs past the end"]),
    "offset near 2^64": (lambda p: set_u64(p, _type_pos(p, "b") + 4, 2**64 - 32), ["tensor b", "runs past the end"]),
    "misaligned offset": (lambda p: set_u64(p, _type_pos(p, "b") + 4, 257), ["tensor b: offset 257 is not a multiple of the alignment 32"]),
    "overlapping tensors": (lambda p: set_u64(p, _type_pos(p, "b") + 4, 0), ["tensors a and b overlap"]),
    "unknown ggml type": (lambda p: set_u32(p, _type_pos(p, "a"), 99), ["tensor a has unknown ggml type 99"]),
    "row not whole blocks": (lambda p: set_u64(p, _dims_pos(p, "b"), 48), ["tensor b: row length 48 is not a multiple of the Q8_0 block size 32"]),
    "duplicate tensor name": (lambda p: patch(p, tensor_info_pos(p, "b") - 1, b"a"), ["duplicate tensor name a"]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_file(small, case):
    mutate, fragments = HOSTILE[case]
    mutate(small)
    _expect(small, *fragments)


def test_big_endian_file(tmp_path):
    path = tmp_path / "be.gguf"
    write_gguf(path, [("k", 1, V.UINT32)], [("a", np.ones(32), Q.F32)], endianess=gguf.GGUFEndian.BIG)
    _expect(path, "big-endian GGUF (version 3) is not supported")


@pytest.mark.parametrize("alignment", [48, 0])
def test_bad_alignment(tmp_path, alignment):
    path = tmp_path / "align.gguf"
    write_gguf(path, [("general.alignment", alignment, V.UINT32)], [("a", np.ones(32), Q.F32)])
    _expect(path, f"general.alignment is {alignment}, it must be a power of two")


def test_custom_alignment(tmp_path):
    path = tmp_path / "align64.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_custom_alignment(64)
    w.add_tensor("a", np.arange(3, dtype=np.float32))
    w.add_tensor("b", np.arange(5, dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with GGUFFile(path) as gf:
        assert gf.alignment == 64 and gf.data_offset % 64 == 0
        assert [t.offset for t in gf.tensor_infos] == [0, 64]
        np.testing.assert_array_equal(tensor_to_numpy(gf.tensor(gf.tensor_infos[1])), np.arange(5))


def test_arrays_nested_too_deep(tmp_path):
    path = tmp_path / "deep.gguf"
    value = [1]
    for _ in range(12):
        value = [value]
    write_gguf(path, [("deep", value, V.ARRAY)], [])
    _expect(path, "arrays nested deeper than 8 levels")


def test_missing_empty_and_directory(tmp_path):
    with pytest.raises(FormatError) as e:
        GGUFFile(tmp_path / "nope.gguf")
    one_line_error(e, tmp_path / "nope.gguf", "file not found")
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    _expect(empty, "too small to be a GGUF file (0 bytes)")
    with pytest.raises(FormatError) as e:
        GGUFFile(tmp_path)
    one_line_error(e, tmp_path, "directory")


def test_truncated_at_every_byte(tmp_path, all_types_file):
    """Cut anywhere before the end of the last tensor: always a FormatError, never another exception."""
    data = all_types_file.read_bytes()
    with GGUFFile(all_types_file) as gf:
        end = max(t.data_offset + t.nbytes for t in gf.tensor_infos)
    path = tmp_path / "cut.gguf"
    path.write_bytes(data)
    messages = set()
    for cut in reversed(range(end)):
        os.truncate(path, cut)
        with pytest.raises(FormatError) as e:
            GGUFFile(path)
        messages.add(re.sub(r"\d+", "N", one_line_error(e, path)))
    assert len(messages) > 5  # the cuts hit many different fields
    path.write_bytes(data[:end])  # the padding after the last tensor is optional
    with GGUFFile(path) as gf:
        assert len(gf.tensor_infos) == 2


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4))
def test_random_corruption_never_crashes(tmp_path, all_types_file, edits):
    data = bytearray(all_types_file.read_bytes())
    with GGUFFile(all_types_file) as gf:
        header_end = gf.data_offset
    for pos, byte in edits:
        data[pos % header_end] = byte
    path = tmp_path / "fuzz.gguf"
    path.write_bytes(bytes(data))
    try:
        gf = GGUFFile(path)
    except FormatError as e:
        assert "\n" not in str(e)
        return
    with gf:
        for ti in gf.tensor_infos:
            try:
                gf.tensor(ti)
            except FormatError:
                pass


# ---- the real SmolLM2-135M-Instruct Q4_1 GGUF --------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2(smollm2_gguf_path):
    return load_gguf(smollm2_gguf_path)


@pytest.fixture(scope="module")
def smollm2_reader(smollm2_gguf_path):
    return gguf.GGUFReader(smollm2_gguf_path)


def test_smollm2_metadata_matches_gguf_reader(smollm2_gguf_path, smollm2_reader):
    with GGUFFile(smollm2_gguf_path) as gf:
        assert gf.version == 3
        fields = {k: f for k, f in smollm2_reader.fields.items() if not k.startswith("GGUF.")}
        assert list(gf.metadata) == list(fields)
        for key, field in fields.items():
            assert gf.metadata[key] == field.contents(), key
        assert len(gf.metadata["tokenizer.ggml.tokens"]) == 49152
        assert len(gf.tensor_infos) == len(smollm2_reader.tensors) == 272
        for ti, rt in zip(gf.tensor_infos, smollm2_reader.tensors):
            assert (ti.name, ti.ggml_type, ti.data_offset, ti.nbytes) == (rt.name, int(rt.tensor_type), rt.data_offset, rt.n_bytes)
            assert ti.dims == tuple(int(d) for d in rt.shape)


def test_smollm2_checkpoint(smollm2, smollm2_gguf_path):
    c = smollm2.config
    assert (c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.vocab_size, c.hidden_dim) == (30, 576, 9, 3, 49152, 1536)
    assert c.head_dim == 64 and c.rope_theta == 100000.0 and c.max_seq_len == 8192 and not c.use_scaled_rope
    assert "output.weight" not in smollm2.tensors  # tied
    assert len(smollm2.tensors) == 1 + 30 * 9 + 1
    assert smollm2.format == "gguf" and smollm2.path == str(smollm2_gguf_path)
    assert smollm2.file_size == os.path.getsize(smollm2_gguf_path)
    md = smollm2.metadata
    assert md["file_type"] == "MOSTLY_Q4_1" and md["dtype"] == "Q4_1" and md["gguf_version"] == 3
    assert md["tensor_types"] == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert md["tokenizer.ggml.model"] == "gpt2" and isinstance(md["tokenizer.ggml.tokens"], str)
    assert not any("dequantized" in n for n in smollm2.notes)  # 211 block-type tensors read in place
    assert smollm2.tokenizer is not None, smollm2.notes  # built from the GGUF's tokenizer.ggml.* metadata
    assert smollm2.tensors["layers.3.attention_norm.weight"].dtype == "f32"
    assert smollm2.tensors["layers.3.attention.wq.weight"].dtype == "q4_1"
    assert smollm2.tensors["tok_embeddings.weight"].dtype == "q8_0"


@pytest.mark.parametrize("gguf_name,meta_name", [
    ("token_embd.weight", "tok_embeddings.weight"),  # Q8_0, 28 M weights
    ("blk.0.attn_q.weight", "layers.0.attention.wq.weight"),
    ("blk.0.attn_k.weight", "layers.0.attention.wk.weight"),
    ("blk.29.ffn_down.weight", "layers.29.feed_forward.w2.weight"),
    ("blk.17.ffn_gate.weight", "layers.17.feed_forward.w1.weight"),
    ("output_norm.weight", "norm.weight"),
    ("blk.5.ffn_norm.weight", "layers.5.ffn_norm.weight"),
])
def test_smollm2_tensors_equal_gguf_dequantize(smollm2, smollm2_reader, gguf_name, meta_name):
    rt = next(t for t in smollm2_reader.tensors if t.name == gguf_name)
    got = tensor_to_numpy(smollm2.tensors[meta_name])
    if rt.tensor_type == Q.F32:
        want = np.asarray(rt.data)
    else:
        want = gguf.quants.dequantize(rt.data, rt.tensor_type)
    assert got.shape == want.shape == tuple(reversed([int(d) for d in rt.shape]))
    assert np.array_equal(got, want)
