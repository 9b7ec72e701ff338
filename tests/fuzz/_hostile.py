"""Builders of hostile files whose cost grows with a size parameter (issue 21): the regression tests
(tests/test_hardening.py) build one of each, `scripts/fuzz.py --check bounds` builds a series of sizes and
measures time and peak memory against each."""
from __future__ import annotations

import base64
import json
import os
import struct

_M64 = (1 << 64) - 1


def stored_zip(path, members):
    """A STORED zip as torch.save lays it out; a member given as an int is that many bytes of sparse hole."""
    with open(path, "wb") as f:
        central = []
        for name, data in members:
            nb, off = name.encode(), f.tell()
            size = data if isinstance(data, int) else len(data)
            f.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, size, size, len(nb), 0) + nb)
            if isinstance(data, int):
                f.seek(size, os.SEEK_CUR)
            else:
                f.write(data)
            central.append((nb, size, off))
        cd_off = f.tell()
        for nb, size, off in central:
            f.write(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, size, size, len(nb), 0,
                                0, 0, 0, 0, off) + nb)
        f.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(central), len(central), f.tell() - cd_off,
                            cd_off, 0))


def meta_dir(directory, pkl: bytes = b"\x80\x02}.", params=None, members=None) -> str:
    """A Meta checkpoint directory: params.json + a consolidated.00.pth holding `pkl` (and `members`)."""
    from _ckpt import SMALL

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "params.json"), "w") as f:
        json.dump(params or SMALL, f)
    parts = {"archive/data.pkl": pkl, "archive/byteorder": b"little"}
    parts.update(members or {})
    stored_zip(os.path.join(directory, "consolidated.00.pth"), list(parts.items()))
    return str(directory)


def dag_pickle(levels: int, as_state_key: bool = False) -> bytes:
    """A dict (or OrderedDict state dict) whose key is a tuple DAG: each level is (previous, previous) through the
    memo, so `levels` levels cost ~8 bytes each and hold 2^levels leaves."""
    b = bytearray(b"\x80\x02")
    b += b"ccollections\nOrderedDict\n)R" if as_state_key else b"}"
    b += b"X\x01\x00\x00\x00xq\x000"
    for i in range(levels):
        b += b"h%ch%c\x86q%c" % (i, i, i + 1) + (b"0" if i < levels - 1 else b"")
    b += b"K\x01s."
    return bytes(b)


def flood_pickle(n_bytes: int, unit: bytes = b"]") -> bytes:
    """n_bytes of one opcode pattern inside a list (EMPTY_LIST: ']', appended lists: ']a', dicts: '}')."""
    return b"\x80\x02]" + unit * (n_bytes // len(unit)) + b"."


def _unshift(y: int, s: int) -> int:
    x = y
    for _ in range(64 // s + 1):
        x = y ^ (x >> s)
    return x


def forged_8_byte_tokens(n: int, bucket_bits: int = 20):
    """n distinct 8-byte tokens that the compiled tokenizer's first (fixed, invertible) hash sent to one bucket of
    any table of up to 2^bucket_bits slots: the mixer inverted on hashes whose low bits are all zero."""
    h0 = 0x9E3779B97F4A7C15 ^ ((8 * 0xFF51AFD7ED558CCD) & _M64)
    inv_a, inv_b = pow(0xBF58476D1CE4E5B9, -1, 1 << 64), pow(0x94D049BB133111EB, -1, 1 << 64)
    out = []
    for k in range(1, n + 1):
        h = k << bucket_bits
        h = h ^ (h >> 32)
        h = _unshift((h * inv_a) & _M64, 29)
        h = _unshift((h * inv_b) & _M64, 31)
        h = (h * inv_a) & _M64
        out.append((h ^ h0).to_bytes(8, "little"))
    return out


def forged_tiktoken_file(path, n: int) -> str:
    tokens = [bytes([b]) for b in range(256)] + forged_8_byte_tokens(n)
    with open(path, "wb") as f:
        f.write(b"".join(base64.b64encode(t) + b" %d\n" % i for i, t in enumerate(tokens)))
    return str(path)


def tiny_chatml_gguf(path, template=None, name=None, extra=()) -> str:
    """A tiny random llama GGUF with a byte-level vocabulary (256 bytes, "ab", <|im_start|>, <|im_end|>).
    template: a str, or (value, GGUFValueType) for a template of another type."""
    import gguf

    from _ckpt import SMALL, random_state_dict
    from _gguf_files import write_llama_gguf
    from llama_cx.tokenizers.gpt2_bpe import _BYTE_OF_CHAR

    V = gguf.GGUFValueType
    tokens = sorted(_BYTE_OF_CHAR, key=_BYTE_OF_CHAR.get) + ["ab", "<|im_start|>", "<|im_end|>"]
    params = dict(SMALL, vocab_size=len(tokens))
    meta = [("tokenizer.ggml.model", "gpt2", V.STRING), ("tokenizer.ggml.tokens", tokens, V.ARRAY),
            ("tokenizer.ggml.token_type", [1] * 257 + [3, 3], V.ARRAY), ("tokenizer.ggml.merges", ["a b"], V.ARRAY)]
    if template is not None:
        meta.append(("tokenizer.chat_template", *template) if isinstance(template, tuple)
                    else ("tokenizer.chat_template", template, V.STRING))
    if name is not None:
        meta.append(("general.name", name, V.STRING))
    write_llama_gguf(str(path), params, random_state_dict(params, dtype="f32", seed=2),
                     extra_metadata=meta + list(extra))
    return str(path)


def chatml_openings(n_bytes: int) -> str:
    """A chat template of repeated ChatML system openings and no close (the regex's worst case)."""
    unit = "<|im_start|>system\n"
    return unit * max(1, n_bytes // len(unit))


def sparse_gguf_array(path, count: int, etype: int = 0) -> str:
    """A GGUF v3 whose one metadata entry is an array of `count` elements of type `etype` (0 = uint8) stored as a
    sparse hole: the file is as long as the array claims, and costs nothing on disk."""
    key = b"hostile.array"
    sizes = {0: 1, 4: 4, 8: 8}  # uint8, uint32, string (an empty string is its 8-byte length)
    with open(path, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key)
        f.write(struct.pack("<IIQ", 9, etype, count))
        f.truncate(f.tell() + count * sizes[etype])
    return str(path)


def sparse_zip_directory(path, n_bytes: int) -> str:
    """A torch-like zip whose central directory claims n_bytes, stored as a sparse hole before the end record."""
    with open(path, "wb") as f:
        name = b"archive/data.pkl"
        f.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 4, 4, len(name), 0) + name + b"\x80\x02}.")
        cd_off = f.tell()
        f.seek(n_bytes, os.SEEK_CUR)
        f.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, n_bytes, cd_off, 0))
    return str(path)
