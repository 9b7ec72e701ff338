"""Test helper: llama-cpp-python (llama.cpp 0.3.36) as an oracle, and F32 copies of quantized GGUFs.

- llama_cpp_or_skip(): the module, or pytest.skip with the reason it cannot be imported;
- no_extra_buffers(monkeypatch): llama.cpp repacks some quantized weights for its AMX kernels when the CPU has
  AMX, and those kernels segfault on the test machine (gdb: ggml_backend_amx_mul_mat, 0.3.36); without "extra
  buffer types" the plain CPU kernels run (the same switch as tests/test_llama_api.py on the serve branch);
- dequantized_f32_gguf(src, dst): the same model with every tensor dequantized exactly to F32 (gguf's
  dequantize), metadata copied, written by llama_cx's own GGUF writer.
"""
import numpy as np
import pytest


def llama_cpp_or_skip():
    try:
        import llama_cpp
    except Exception as e:  # ImportError, or the shared library failing to load
        pytest.skip(f"llama-cpp-python is not importable: {e}")
    return llama_cpp


def no_extra_buffers(monkeypatch):
    llama_cpp = llama_cpp_or_skip()
    low = llama_cpp.llama_cpp
    default = low.llama_model_default_params

    def without_extra_buffers():
        params = default()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False
        return params

    monkeypatch.setattr(low, "llama_model_default_params", without_extra_buffers)
    monkeypatch.setattr(llama_cpp, "llama_model_default_params", without_extra_buffers, raising=False)


def dequantized_f32_gguf(src, dst, overrides=()):
    """overrides: (key, value, type) metadata entries to set (added when absent)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from llama_cx.formats.gguf import GGUFFile
    from llama_cx.formats.gguf_writer import GGUFWriter

    gf = GGUFFile(src)
    w = GGUFWriter(dst)
    changed = {k: (v, t) for k, v, t in overrides}
    for k, v in gf.metadata.items():
        if k == "general.file_type":
            v = 0  # ALL_F32
        v, t = changed.pop(k, (v, gf.metadata_types[k]))
        w.add(k, v, t)
    for k, (v, t) in changed.items():
        w.add(k, v, t)
    r = GGUFReader(src)
    arrays = []
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(tuple(reversed([int(d) for d in t.shape])))
        w.add_tensor(t.name, a.shape, 0)
        arrays.append(a)
    with w.data() as put:
        for a in arrays:
            put(np.ascontiguousarray(a))
    gf.close()
    return dst
