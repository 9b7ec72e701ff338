"""Test helper: write GGUF files with the real producer, the `gguf` package (llama.cpp's gguf-py).

- write_gguf: any metadata and tensors (F32, F16, BF16 and ggml block quantizations via gguf.quants.quantize);
- write_llama_gguf: a Meta-layout state dict converted the way real Llama GGUFs are made: Meta -> HF with
  transformers' convert_llama_weights_to_hf.py permutation, then HF -> GGUF with llama.cpp's
  convert_hf_to_gguf.py (`LlamaModel.permute` on q/k, gguf's own tensor name map, its metadata keys);
- small byte-patching helpers to make hostile files out of valid ones.
"""
import math
import struct

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V


def write_gguf(path, metadata=(), tensors=(), version=3, arch="llama", endianess=gguf.GGUFEndian.LITTLE):
    """metadata: (key, value, GGUFValueType[, sub type]) tuples; tensors: (name, array, ggml type), where a
    float array is converted / quantized by gguf and a uint8 array is written as raw blocks of that type.

    Returns {name: the raw array written} (quantized tensors as gguf's uint8 block bytes).
    """
    w = gguf.GGUFWriter(str(path), arch, endianess=endianess)
    for key, value, vtype, *sub in metadata:
        w.add_key_value(key, value, vtype, sub[0] if sub else None)
    written = {}
    for name, array, qtype in tensors:
        if array.dtype == np.uint8:  # raw block bytes of any ggml type, shape (rows, bytes per row)
            w.add_tensor(name, array, raw_dtype=qtype)
            written[name] = array
            continue
        array = np.ascontiguousarray(array, dtype=np.float32)
        if qtype == Q.F32:
            data = array
            w.add_tensor(name, data)
        elif qtype == Q.F16:
            data = array.astype(np.float16)
            w.add_tensor(name, data)
        else:  # BF16 and block quantizations: gguf's own quantizer, raw bytes + type
            data = gguf.quants.quantize(array, qtype)
            w.add_tensor(name, data, raw_dtype=qtype)
        written[name] = data
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if version != 3:
        # v2 and v3 differ only in that v3 allows big-endian files: the little-endian layout is identical
        set_u32(path, 4, version)
    return written


def set_u32(path, pos, value):
    patch(path, pos, struct.pack("<I", value))


def set_u64(path, pos, value):
    patch(path, pos, struct.pack("<Q", value))


def patch(path, pos, raw: bytes):
    with open(path, "r+b") as f:
        f.seek(pos)
        f.write(raw)


def _gguf_string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


def key_pos(path, key: str) -> int:
    """Byte position of the value-type field of metadata entry `key`."""
    data = open(path, "rb").read()
    at = data.index(_gguf_string(key))
    return at + len(_gguf_string(key))


def tensor_info_pos(path, name: str) -> int:
    """Byte position of the n_dims field of tensor info `name` (tensor infos follow the metadata)."""
    data = open(path, "rb").read()
    at = data.rindex(_gguf_string(name))
    return at + len(_gguf_string(name))


def bf16_rne(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16), round to nearest even, NaN kept NaN: the reference our dequant must match."""
    n = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    # no uint32 overflow except for NaN bit patterns, which are replaced below
    out = ((n + (np.uint32(0x7FFF) + ((n >> 16) & 1))) >> 16).astype(np.uint16)
    nan = (n & 0x7FFFFFFF) > 0x7F800000
    out[nan] = ((n[nan] >> 16) | 64).astype(np.uint16)
    return out


def tensor_to_numpy(t) -> np.ndarray:
    """A llama_cx Tensor as numpy: bf16 as its uint16 bits, f16/f32 as themselves, a GGUF block type dequantized
    to f32 by llama_cx's own kernel (bit for bit gguf.quants.dequantize, tests/test_quants.py)."""
    dtype = {"bf16": np.uint16, "f16": np.float16, "f32": np.float32}.get(t.dtype)
    if dtype is None:
        from llama_cx import _kernels

        out = np.empty(t.shape, np.float32)
        _kernels.to_f32(t.memoryview(), t.dtype, out, out.size)
        return out
    return np.frombuffer(t.memoryview(), dtype=dtype).reshape(t.shape)


# ---- Meta -> HF -> GGUF, the way real Llama GGUFs are produced ---------------------------------------------

def hf_permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """transformers' convert_llama_weights_to_hf.py `permute` (Meta interleaved pairs -> HF rotate-half)."""
    dim1, dim2 = w.shape
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def llamacpp_permute(weights: torch.Tensor, n_head: int, n_head_kv) -> torch.Tensor:
    """llama.cpp's convert_hf_to_gguf.py `LlamaModel.permute`, verbatim in behaviour."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


_HF_NAMES = {
    "attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj", "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj", "feed_forward.w1": "mlp.gate_proj", "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj", "attention_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}


def meta_to_hf(sd: dict, params: dict) -> dict:
    """A Meta state dict in transformers' LlamaForCausalLM names and layout (q/k permuted like its converter)."""
    n_heads = params["n_heads"]
    n_kv = params.get("n_kv_heads") or n_heads
    top = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
    hf = {}
    for name, t in sd.items():
        if name in top:
            hf[top[name]] = t
            continue
        _, layer, rest = name.split(".", 2)
        part = rest[: -len(".weight")]
        if part == "attention.wq":
            t = hf_permute(t, n_heads)
        elif part == "attention.wk":
            t = hf_permute(t, n_kv)
        hf[f"model.layers.{layer}.{_HF_NAMES[part]}.weight"] = t
    return hf


def llama3_rope_factors(head_dim, theta, factor, low=1.0, high=4.0, old_context_len=8192):
    """rope_freqs.weight as llama.cpp's converter computes it (LlamaModel.generate_extra_tensors)."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    low_freq_wavelen = old_context_len / low
    high_freq_wavelen = old_context_len / high
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            out.append(1)
        elif wavelen > low_freq_wavelen:
            out.append(factor)
        else:
            smooth = (old_context_len / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(out, dtype=torch.float32).numpy()


def llama_metadata(params: dict, hidden_dim: int, context_length=8192, extra=()):
    """The llama.* keys llama.cpp's converter writes (Model.set_gguf_parameters + LlamaModel's)."""
    n_heads = params["n_heads"]
    return [
        ("llama.block_count", params["n_layers"], V.UINT32),
        ("llama.context_length", context_length, V.UINT32),
        ("llama.embedding_length", params["dim"], V.UINT32),
        ("llama.feed_forward_length", hidden_dim, V.UINT32),
        ("llama.attention.head_count", n_heads, V.UINT32),
        ("llama.attention.head_count_kv", params.get("n_kv_heads") or n_heads, V.UINT32),
        ("llama.rope.freq_base", params.get("rope_theta", 500000.0), V.FLOAT32),
        ("llama.attention.layer_norm_rms_epsilon", params.get("norm_eps", 1e-5), V.FLOAT32),
        ("llama.vocab_size", params["vocab_size"], V.UINT32),
        ("llama.rope.dimension_count", params["dim"] // n_heads, V.UINT32),
        *extra,
    ]


def write_llama_gguf(path, params, meta_sd, qtype_of=lambda name, arr: Q.F32, extra_metadata=(),
                     extra_tensors=(), version=3, context_length=8192):
    """Convert a Meta state dict (torch) to a llama GGUF the way real ones are made. Returns {gguf name: written}.

    qtype_of(gguf_name, array) picks each tensor's ggml type (llama.cpp keeps 1-D tensors F32).
    """
    n_heads = params["n_heads"]
    n_kv = params.get("n_kv_heads") or n_heads
    hf = meta_to_hf(meta_sd, params)
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, params["n_layers"])
    tensors = []
    for hf_name, t in hf.items():
        # LlamaModel.modify_tensors
        if hf_name.endswith("q_proj.weight"):
            t = llamacpp_permute(t, n_heads, n_heads)
        if hf_name.endswith("k_proj.weight"):
            t = llamacpp_permute(t, n_heads, n_kv)
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        arr = t.float().numpy()
        tensors.append((name, arr, qtype_of(name, arr)))
    tensors.extend(extra_tensors)
    hidden = meta_sd["layers.0.feed_forward.w1.weight"].shape[0]
    metadata = llama_metadata(params, hidden, context_length) + list(extra_metadata)
    return write_gguf(path, metadata, tensors, version=version)
