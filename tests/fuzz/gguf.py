"""Target `gguf`: the GGUF reader and llama loader (header, metadata of every type, tensor infos, counts and
sizes up to 2^64), then a forward pass over whatever loaded.

Inputs: mutations of GGUF files written by the `gguf` package and of the real SmolLM2 header, with boundary
values written into every count/length/type/dim/offset field (hotspots); and files generated from scratch by
hypothesis: header counts (true or lying), metadata entries of every value type including nested arrays
(declared counts and string lengths true or lying), tensor infos of any n_dims/dims/type/offset, then data.
"""
import os
import struct

from hypothesis import strategies as st

from llama_cx.formats import open_checkpoint
from llama_cx.tokenizers import from_spec

from ._corpus import gguf_seeds, scratch_dir, write_atomic
from ._engine import BOUNDARY, Input, mutations
from ._model_check import run_model

NAME = "gguf"
TIMEOUT = 10.0
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B", 10: "<Q", 11: "<q", 12: "<d"}
_KEYS = ["general.architecture", "general.alignment", "llama.block_count", "llama.context_length",
         "llama.embedding_length", "llama.feed_forward_length", "llama.attention.head_count",
         "llama.attention.head_count_kv", "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon",
         "llama.vocab_size", "llama.rope.dimension_count", "llama.attention.key_length", "tokenizer.ggml.model",
         "tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "general.file_type",
         "llama.rope.scaling.type", "llama.rope.scaling.factor", "tokenizer.ggml.bos_token_id"]
_TENSORS = ["token_embd.weight", "output_norm.weight", "output.weight", "rope_freqs.weight", "blk.0.attn_q.weight",
            "blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.0.attn_output.weight", "blk.0.ffn_gate.weight",
            "blk.0.ffn_up.weight", "blk.0.ffn_down.weight", "blk.0.attn_norm.weight", "blk.0.ffn_norm.weight"]


def seeds():
    return list(gguf_seeds())


def _q(v: int) -> bytes:
    return (v & (2**64 - 1)).to_bytes(8, "little")


def _u32(v: int) -> bytes:
    return (v & (2**32 - 1)).to_bytes(4, "little")


_COUNT_LIE = st.one_of(st.none(), st.sampled_from(BOUNDARY))  # None: the true count


@st.composite
def _string(draw, pool=None):
    raw = draw(st.one_of(st.sampled_from(pool), st.text(max_size=12)) if pool else st.text(max_size=12))
    raw = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if draw(st.integers(0, 9)) == 5:
        raw = draw(st.binary(max_size=12))  # not UTF-8, maybe
    lie = draw(_COUNT_LIE) if draw(st.integers(0, 4)) == 2 else None
    return _q(len(raw) if lie is None else lie) + raw


def _scalar_value(t):
    code = _SCALAR[t]
    if code in ("<f", "<d"):
        return st.floats(allow_nan=True, allow_infinity=True, width=32 if code == "<f" else 64).map(
            lambda f: struct.pack(code, f))
    size = struct.calcsize(code)
    return st.one_of(st.sampled_from(BOUNDARY), st.integers(0, 300)).map(
        lambda v: (v & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))


@st.composite
def _value(draw, vtype, depth=0):
    """The encoding of one metadata value of type vtype (an array's elements all of one type)."""
    if vtype in _SCALAR:
        return draw(_scalar_value(vtype))
    if vtype == 8:
        return draw(_string(["llama", "gpt2", "smollm", "none", "llama3", "linear", "A B", "Ġ"]))
    if vtype == 9:
        etype = draw(st.sampled_from(list(_SCALAR) + [8] + ([9] if depth < 3 else [])))
        n = draw(st.integers(0, 6))
        body = b"".join(draw(_value(etype, depth + 1)) for _ in range(n))
        lie = draw(_COUNT_LIE) if draw(st.integers(0, 4)) == 2 else None
        return _u32(etype) + _q(n if lie is None else lie) + body
    return draw(st.binary(max_size=8))  # an unknown type: whatever follows


@st.composite
def generated_file(draw):
    kvs = []
    for _ in range(draw(st.integers(0, 8))):
        key = draw(_string(_KEYS))
        vtype = draw(st.sampled_from([13, 2**31, 2**32 - 1])) if draw(st.integers(0, 15)) == 7 else draw(
            st.sampled_from(list(_SCALAR) + [8, 9]))
        kvs.append(key + _u32(vtype) + draw(_value(vtype)))
    infos = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(_string(_TENSORS))
        n_dims = draw(st.sampled_from([0, 5, 2**32 - 1])) if draw(st.integers(0, 15)) == 7 else draw(st.integers(1, 4))
        dims = b"".join(_q(draw(st.one_of(st.sampled_from([1, 2, 4, 8, 16, 32, 48, 64]), st.sampled_from(BOUNDARY))))
                        for _ in range(min(n_dims, 6)))
        gtype = draw(st.one_of(st.sampled_from([0, 1, 2, 3, 8, 30, 12, 41]), st.sampled_from(BOUNDARY)))
        offset = draw(st.one_of(st.sampled_from([0, 32, 64, 128, 256]), st.sampled_from(BOUNDARY)))
        infos.append(name + _u32(n_dims) + dims + _u32(gtype) + _q(offset))
    n_kv = draw(st.sampled_from(BOUNDARY)) if draw(st.integers(0, 7)) == 3 else len(kvs)
    n_tensors = draw(st.sampled_from(BOUNDARY)) if draw(st.integers(0, 7)) == 3 else len(infos)
    version = draw(st.sampled_from([1, 4, 2**24 * 3])) if draw(st.integers(0, 15)) == 7 else draw(st.sampled_from([2, 3]))
    head = b"GGUF" + _u32(version) + _q(n_tensors) + _q(n_kv) + b"".join(kvs) + b"".join(infos)
    head += b"\0" * (-len(head) % 32)
    data = draw(st.one_of(st.binary(max_size=64), st.integers(0, 4096).map(lambda n: bytes(range(256)) * (n // 256))))
    raw = head + data
    return Input(raw, f"generated GGUF {raw[:400]!r}{'...' if len(raw) > 400 else ''}")


def inputs(seed_list):
    m = mutations(seed_list)
    return st.one_of(m, m, m, generated_file())


def execute(data: bytes):
    path = os.path.join(scratch_dir(), "fuzz.gguf")
    write_atomic(path, data)
    ck = open_checkpoint(path)
    if ck.tokenizer is not None:
        tok, _ = from_spec(ck.tokenizer)
        if tok is not None:
            tok.decode(tok.encode("Hello, world! ABC A"))
    run_model(ck)
