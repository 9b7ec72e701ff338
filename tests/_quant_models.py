"""Test helper: quantized GGUFs made by llama.cpp's own quantizer (llama-cpp-python's llama_model_quantize),
llama.cpp's logits on them, and the "truth" for each file: its weights dequantized exactly (gguf's
dequantize) as a Meta state dict, to run in float32 through an independent reference.

llama.cpp repacks some quantized weights for its AMX kernels when the CPU has AMX, and those kernels segfault
on the test machine (gdb: ggml_backend_amx_mul_mat, 0.3.36); without "extra buffer types" its plain CPU kernels
run (the switch the serve branch's tests/test_llama_api.py found)."""
import ctypes

import numpy as np
import pytest
import torch

from _gguf_files import V
from _smollm2 import meta_name

# llama.cpp's file types (llama.h enum llama_ftype) by the name llama-quantize prints
FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K_M": 12, "Q4_K_M": 15,
          "Q5_K_M": 17, "Q6_K": 18}


def llama_cpp_or_skip():
    try:
        import llama_cpp
    except Exception as e:  # ImportError, or its shared library failing to load
        pytest.skip(f"llama-cpp-python is not importable: {e}")
    return llama_cpp


def quantize(src, dst, ftype: str):
    """dst = llama.cpp's quantization of the F32/F16 GGUF src to file type `ftype` (its mixture rules)."""
    llama_cpp = llama_cpp_or_skip()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[ftype]
    params.nthread = 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    assert rc == 0, f"llama_model_quantize {ftype} failed ({rc})"
    return dst


def llama_cpp_logits(path, ids):
    """(len(ids), vocab) float64 logits of llama.cpp on `path`, one batch, its CPU kernels (no extra buffers)."""
    return llama_cpp_logits_each(path, [ids])[0]


def llama_cpp_logits_each(path, prompts):
    """[(len(p), vocab) float64 logits of llama.cpp for each prompt p]: one model, each prompt one batch from an
    empty cache, its CPU kernels (no extra buffers)."""
    llama_cpp = llama_cpp_or_skip()
    low = llama_cpp.llama_cpp
    default = low.llama_model_default_params

    def without_extra_buffers():
        params = default()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False
        return params

    low.llama_model_default_params = without_extra_buffers
    try:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=max([64] + [len(p) for p in prompts]), n_batch=512,
                              logits_all=True, n_threads=1, verbose=False)
        out = []
        for ids in prompts:
            llm.reset()
            llm.eval(list(ids))
            out.append(np.array(llm.scores[: len(ids)], dtype=np.float64))
        llm.close()
    finally:
        low.llama_model_default_params = default
    return out


def spm_vocab_metadata(n_vocab: int):
    """A SentencePiece-style vocabulary of n_vocab pieces (<unk>, <s>, </s>, the 256 byte tokens, then filler
    pieces): enough for llama.cpp to load a model whose logits we read by token id."""
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    toks += [f"\u2581t{i}" for i in range(n_vocab - len(toks))]
    types = [2, 3, 3] + [6] * 256 + [1] * (n_vocab - 259)
    return [
        ("tokenizer.ggml.model", "llama", V.STRING),
        ("tokenizer.ggml.tokens", toks, V.ARRAY, V.STRING),
        ("tokenizer.ggml.scores", [float(-i) for i in range(n_vocab)], V.ARRAY, V.FLOAT32),
        ("tokenizer.ggml.token_type", types, V.ARRAY, V.INT32),
        ("tokenizer.ggml.bos_token_id", 1, V.UINT32),
        ("tokenizer.ggml.eos_token_id", 2, V.UINT32),
        ("tokenizer.ggml.unknown_token_id", 0, V.UINT32),
    ]


def dequantized_state_dict(path):
    """{Meta name: float32 torch tensor}: every tensor of the GGUF at path dequantized exactly (gguf's
    dequantize), q/k rows as stored (llama.cpp's files hold them in Meta's layout); and {GGUF type name: count}."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    r = GGUFReader(str(path))
    sd, types = {}, {}
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type).reshape([int(d) for d in reversed(t.shape)])
        sd[meta_name(t.name)] = torch.from_numpy(np.array(a, dtype=np.float32))
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    return sd, types


def rel_err(x, truth):
    """(mean, max) of |x - truth| in units of each position's std(truth), and the top-1 agreement."""
    d = np.abs(x - truth) / truth.std(axis=-1, keepdims=True)
    return float(d.mean()), float(d.max()), float((x.argmax(-1) == truth.argmax(-1)).mean())
