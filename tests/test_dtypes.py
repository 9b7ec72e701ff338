"""The weight-type tables: llama_cx/dtypes.py (names and sizes in every format) and csrc/dtypes.c (kernels) agree."""
import gguf

from llama_cx import _kernels as K
from llama_cx import dtypes


def test_python_and_c_tables_agree():
    c_rows = K.dtype_table()
    assert [r["id"] for r in c_rows] == list(range(len(c_rows)))
    for r in c_rows:
        d = dtypes.BY_NAME[r["name"]]
        assert d.c_id == r["id"], r["name"]
        assert (d.block_size, d.block_bytes) == (r["block_size"], r["block_bytes"]), r["name"]
    assert {d.name for d in dtypes.DTYPES if d.c_id is not None} == {r["name"] for r in c_rows}


def test_every_type_is_read_by_a_kernel_or_widened_to_one():
    c_rows = {r["name"]: r for r in K.dtype_table()}
    for d in dtypes.DTYPES:
        if not d.weight:  # activation blocks only: what a block type's act_type converts x to
            assert not dtypes.readable(d) and any(r["act_type"] == d.c_id for r in c_rows.values()), d.name
        elif d.widen_to is None and d.c_id is not None:
            assert "generic" in c_rows[d.name]["gemm"], d.name  # the scalar twin is always there
            assert dtypes.kernel_dtype(d.name) is d
        elif d.widen_to is not None:
            target = dtypes.kernel_dtype(d.name)
            assert target.name == d.widen_to and "generic" in c_rows[target.name]["gemm"], d.name
        else:
            assert not dtypes.readable(d), d.name


def test_names_match_each_format():
    for d in dtypes.DTYPES:
        if d.ggml_id is not None:
            q = gguf.GGMLQuantizationType(d.ggml_id)
            assert q.name == d.ggml_name and gguf.GGML_QUANT_SIZES[q] == (d.block_size, d.block_bytes), d.name
        if d.safetensors:
            assert d.safetensors == d.ggml_name  # safetensors' F32 / F16 / BF16
    assert dtypes.readable_list(lambda d: d.torch) == "bfloat16, float16 and float32"
