"""Target `safetensors`: our safetensors reader and the HF directory loader (config.json beside the file is a
valid tiny one), then a forward pass over whatever loaded.

Inputs: mutations of model.safetensors files that transformers' save_pretrained wrote for tiny Llamas (f32,
bf16, tied), with the header length as a hotspot; and headers generated from scratch by hypothesis: the real
tensor names with dtypes, shapes and data_offsets that are true, lying, negative, overlapping or huge, the
header length true or lying, then data.
"""
import functools
import json
import os
import struct

from hypothesis import strategies as st

from llama_cx.formats import open_checkpoint

from ._corpus import TINY, scratch_dir, write_atomic
from ._engine import BOUNDARY, Input, Seed, mutations
from ._model_check import run_model

NAME = "safetensors"
TIMEOUT = 10.0
_HF_TINY = dict(hidden_size=TINY["dim"], num_hidden_layers=TINY["n_layers"], num_attention_heads=TINY["n_heads"],
                num_key_value_heads=TINY["n_kv_heads"], vocab_size=TINY["vocab_size"], intermediate_size=48,
                max_position_embeddings=64, rms_norm_eps=1e-5)


@functools.lru_cache(maxsize=None)
def _saved() -> tuple:
    """(name, config.json text, model.safetensors bytes) of tiny Llamas saved by transformers."""
    import tempfile

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = []
    for name, dtype, tied in (("f32", torch.float32, False), ("bf16", torch.bfloat16, False), ("tied", torch.float32, True)):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**_HF_TINY, tie_word_embeddings=tied)).to(dtype)
        with tempfile.TemporaryDirectory() as d:
            model.save_pretrained(d)
            with open(os.path.join(d, "config.json")) as f:
                cfg = f.read()
            with open(os.path.join(d, "model.safetensors"), "rb") as f:
                out.append((name, cfg, f.read()))
    return tuple(out)


def _dir() -> str:
    d = os.path.join(scratch_dir(), "safetensors")
    if not os.path.isdir(d):
        os.makedirs(d)
        write_atomic(os.path.join(d, "config.json"), _saved()[0][1].encode())  # untied: a tied seed fails cleanly
    return d


def seeds():
    return [Seed(f"transformers {name}", data, ((0, 8),)) for name, _, data in _saved()]


@st.composite
def generated_file(draw):
    _, _, real = _saved()[0]
    n = struct.unpack("<Q", real[:8])[0]
    header = json.loads(real[8:8 + n])
    header.pop("__metadata__", None)
    names = list(header)
    out = {}
    for name in draw(st.lists(st.sampled_from(names), max_size=len(names), unique=True)) or names:
        e = dict(header[name])
        k = draw(st.integers(0, 9))
        if k == 1:
            e["dtype"] = draw(st.sampled_from(["F64", "I64", "U8", "BOOL", "F8_E4M3", "Q4", "", "bf16"]))
        elif k == 2:
            e["shape"] = draw(st.lists(st.one_of(st.integers(-2, 70), st.sampled_from(BOUNDARY)), max_size=3))
        elif k == 3:
            e["data_offsets"] = draw(st.lists(st.one_of(st.integers(-4, 20000), st.sampled_from(BOUNDARY)),
                                              min_size=0, max_size=3))
        elif k == 4:
            e = draw(st.one_of(st.none(), st.integers(), st.text(max_size=4), st.lists(st.integers(), max_size=2)))
        out[name] = e
    raw = json.dumps(out).encode()
    data_len = max([0] + [e["data_offsets"][1] for e in header.values()])
    data = real[8 + n:8 + n + data_len][: draw(st.sampled_from([data_len, data_len // 2, 0]))]
    length = draw(st.sampled_from(BOUNDARY)) if draw(st.integers(0, 7)) == 3 else len(raw)
    blob = struct.pack("<Q", length & (2**64 - 1)) + raw + data
    return Input(blob, f"generated safetensors header {raw[:300]!r}")


def inputs(seed_list):
    m = mutations(seed_list)
    return st.one_of(m, m, generated_file())


def execute(data: bytes):
    path = os.path.join(_dir(), "model.safetensors")
    write_atomic(path, data)
    ck = open_checkpoint(path)
    run_model(ck)
