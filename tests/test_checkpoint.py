"""Meta checkpoints written by real torch.save load as zero-copy views equal, bit for bit, to torch.load."""
import collections
import gc
import os
import struct
import sys
import zipfile

import numpy as np
import pytest
import torch

from _ckpt import SMALL, random_state_dict, write_checkpoint
from llama_cx.formats import Checkpoint, open_checkpoint
from llama_cx.config import ModelConfig

_UINT = {"bf16": np.uint16, "f16": np.uint16, "f32": np.uint32}
_TORCH_INT = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}


def torch_bits(t: torch.Tensor) -> np.ndarray:
    """The raw bits of a torch tensor, row-major, as unsigned ints (independent of llama_cx)."""
    t = t.detach().contiguous()
    return t.view(_TORCH_INT[t.dtype]).numpy().view(np.uint16 if t.element_size() == 2 else np.uint32).ravel()


def our_bits(t) -> np.ndarray:
    return np.frombuffer(t.memoryview(), _UINT[t.dtype])


def assert_same_as_torch(ck: Checkpoint, pth: str, ignored=(), weights_only=True):
    """Every tensor torch.load finds (less `ignored`) was loaded, with torch's shape, dtype and bits."""
    ref = torch.load(pth, weights_only=weights_only)
    ref = {n: t for n, t in ref.items() if n not in ignored and n != "rope.freqs"}
    assert set(ck.tensors) == set(ref)
    for name, t in ref.items():
        ours = ck.tensors[name]
        assert ours.shape == tuple(t.shape), name
        assert ours.dtype == {torch.bfloat16: "bf16", torch.float16: "f16", torch.float32: "f32"}[t.dtype]
        np.testing.assert_array_equal(our_bits(ours), torch_bits(t), err_msg=name)


def rewrite_central(src, dst, zip64=False, override=None):
    """Copy torch archive `src` to `dst` with a central directory written here (checked by Python's zipfile).

    zip64=True puts every size/offset in ZIP64 extra fields (0xFFFFFFFF in the 32-bit fields), as torch does for
    members past 4 GiB. `override` maps member name -> dict(offset=, size=, method=) to forge bad entries.
    """
    with zipfile.ZipFile(src) as z:
        infos, start = z.infolist(), z.start_dir
    with open(src, "rb") as f:
        body = f.read(start)
    cd = bytearray()
    for info in infos:
        e = dict(offset=info.header_offset, size=info.file_size, method=info.compress_type)
        e.update((override or {}).get(info.filename, {}))
        name = info.filename.encode()
        if zip64:
            extra = struct.pack("<HHQQQ", 1, 24, e["size"], e["size"], e["offset"])
            csize = usize = off = 0xFFFFFFFF
        else:
            extra, csize, usize, off = b"", e["size"], e["size"], e["offset"]
        cd += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 45, 45, info.flag_bits, e["method"], 0, 0,
                          info.CRC, csize, usize, len(name), len(extra), 0, 0, 0, 0, off) + name + extra
    n = len(infos)
    tail = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, len(cd), start)
    tail += struct.pack("<4sIQI", b"PK\x06\x07", 0, start + len(cd), 1)
    tail += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, *((0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF) if zip64 else (n, n, len(cd), start)), 0)
    with open(dst, "wb") as f:
        f.write(body + cd + tail)


@pytest.mark.parametrize("dtype", ["bf16", "f16", "f32"])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("n_kv_heads", [4, 2], ids=["mha", "gqa"])
def test_torch_save_roundtrip(tmp_path, dtype, tied, n_kv_heads):
    params, _ = write_checkpoint(tmp_path, dtype=dtype, tied=tied, n_kv_heads=n_kv_heads, seed=n_kv_heads)
    pth = str(tmp_path / "consolidated.00.pth")
    ck = open_checkpoint(tmp_path)
    assert_same_as_torch(ck, pth)
    assert ck.format == "meta" and ck.path == pth
    assert ck.config == ModelConfig.from_params(params)
    assert ck.config.n_kv_heads == n_kv_heads
    assert ck.metadata["dtype"] == dtype
    assert ck.metadata["tied_embeddings"] is tied
    assert ("output.weight" in ck.tensors) is not tied
    assert ck.file_size == os.path.getsize(pth)
    assert ck.tokenizer is None
    assert ck.metadata["n_params"] == ck.config.n_params(tied)
    # zero-copy: every tensor is a view of the one mmap kept alive by the checkpoint
    assert len(ck.files) == 1 and not ck.buffers
    assert all(t.buffer is ck.files[0].mapping for t in ck.tensors.values())


def test_pth_path_and_tokenizer(tmp_path):
    tok = tmp_path / "tok.model"
    tok.write_bytes(b"IQ== 0\n")
    d = tmp_path / "ckpt"
    write_checkpoint(d, tokenizer=str(tok))
    pth = str(d / "consolidated.00.pth")
    ck = open_checkpoint(pth)
    assert ck.tokenizer.kind == "tiktoken" and ck.tokenizer.path == str(d / "tokenizer.model")
    assert_same_as_torch(ck, pth)
    assert open_checkpoint(str(d)).tokenizer.path == str(d / "tokenizer.model")


def test_shared_storage_offsets_and_strides(tmp_path):
    """Tensors saved as slices of fused matrices: storage offsets (wq/wk/wv rows of one qkv) and strides
    (w1/w3 as transposed column blocks of one (dim, 2*hidden) matrix) must be honoured."""
    params = dict(SMALL)
    sd = random_state_dict(params, dtype="bf16", seed=3)
    c = ModelConfig.from_params(params)
    for i in range(c.n_layers):
        p = f"layers.{i}."
        qkv = torch.randn(c.q_dim + 2 * c.kv_dim, c.dim).to(torch.bfloat16)
        sd[p + "attention.wq.weight"] = qkv[: c.q_dim]
        sd[p + "attention.wk.weight"] = qkv[c.q_dim : c.q_dim + c.kv_dim]
        sd[p + "attention.wv.weight"] = qkv[c.q_dim + c.kv_dim :]
        w13 = torch.randn(c.dim, 2 * c.hidden_dim).to(torch.bfloat16)
        sd[p + "feed_forward.w1.weight"] = w13[:, : c.hidden_dim].t()  # (hidden, dim), strides (1, 2*hidden)
        sd[p + "feed_forward.w3.weight"] = w13[:, c.hidden_dim :].t()
        assert not sd[p + "feed_forward.w3.weight"].is_contiguous()
    write_checkpoint(tmp_path, state_dict=sd)
    pth = str(tmp_path / "consolidated.00.pth")
    with zipfile.ZipFile(pth) as z:  # the sharing really is in the file: one storage per fused matrix
        n_storages = sum("/data/" in n for n in z.namelist())
    assert n_storages == len(sd) - 3 * c.n_layers  # qkv: 3 -> 1, w13: 2 -> 1

    ck = open_checkpoint(tmp_path)
    assert_same_as_torch(ck, pth)
    wq, wk = ck.tensors["layers.0.attention.wq.weight"], ck.tensors["layers.0.attention.wk.weight"]
    assert wq.buffer is wk.buffer is ck.files[0].mapping  # offset views stay zero-copy
    assert wk.offset == wq.offset + c.q_dim * c.dim * 2
    assert sum("copied non-contiguous tensor" in n for n in ck.notes) == 2 * c.n_layers


def test_ordered_dict_metadata_parameters_and_extras(tmp_path):
    """model.state_dict() style: OrderedDict with _metadata, nn.Parameter values, Llama 2's rope.freqs and
    unknown extras (noted, not loaded), a non-tensor entry."""
    sd = collections.OrderedDict(random_state_dict(SMALL, dtype="f16", seed=5))
    sd["tok_embeddings.weight"] = torch.nn.Parameter(sd["tok_embeddings.weight"], requires_grad=False)
    sd["norm.weight"] = torch.nn.Parameter(sd["norm.weight"])
    sd["rope.freqs"] = torch.randn(8).to(torch.float16)
    sd["lora.a"] = torch.randn(3, 3).to(torch.float16)
    sd["step"] = 7
    sd._metadata = collections.OrderedDict({"": {"version": 1}, "layers.0": {"version": 2}})
    write_checkpoint(tmp_path, state_dict=sd)
    ck = open_checkpoint(tmp_path)
    assert_same_as_torch(ck, str(tmp_path / "consolidated.00.pth"), ignored={"lora.a", "step"})
    notes = "\n".join(ck.notes)
    assert "rope.freqs" in notes and "lora.a" in notes and "'step'" in notes
    assert "lora.a" not in ck.tensors and "rope.freqs" not in ck.tensors


def test_pickle_protocol_4(tmp_path):
    """torch.save(..., pickle_protocol=4) uses FRAME, MEMOIZE, SHORT_BINUNICODE, STACK_GLOBAL."""
    params = dict(SMALL)
    sd = random_state_dict(params, dtype="bf16", seed=9)
    write_checkpoint(tmp_path, state_dict={})
    pth = str(tmp_path / "consolidated.00.pth")
    torch.save(sd, pth, pickle_protocol=4)
    with zipfile.ZipFile(pth) as z:
        assert b"\x95" == z.read("consolidated.00/data.pkl")[2:3]  # FRAME: protocol 4 really was used
    # torch's own weights_only unpickler refuses FRAME; the data is ours, so the full unpickler is fine
    assert_same_as_torch(open_checkpoint(tmp_path), pth, weights_only=False)


def test_zip64_central_directory(tmp_path):
    """Sizes and offsets in ZIP64 extra fields (as torch writes them past 4 GiB) and 0xFFFF.. EOCD sentinels."""
    write_checkpoint(tmp_path / "a", dtype="bf16", seed=11)
    src = str(tmp_path / "a" / "consolidated.00.pth")
    os.makedirs(tmp_path / "b")
    dst = str(tmp_path / "b" / "consolidated.00.pth")
    rewrite_central(src, dst, zip64=True)
    (tmp_path / "b" / "params.json").write_bytes((tmp_path / "a" / "params.json").read_bytes())
    with zipfile.ZipFile(src) as za, zipfile.ZipFile(dst) as zb:  # the forged archive is a valid zip
        assert za.namelist() == zb.namelist()
        assert all(za.read(n) == zb.read(n) for n in za.namelist())
    with open(dst, "rb") as f:
        assert f.read()[-22:][8:10] == b"\xff\xff"
    assert_same_as_torch(open_checkpoint(dst), src)


def test_hidden_dim_from_ffn_multiplier(tmp_path):
    """params.json's ffn_dim_multiplier sizes the FFN (Llama 3 8B-style); the loader agrees with the file."""
    params = dict(SMALL, dim=128, n_heads=4, n_kv_heads=1, multiple_of=64, ffn_dim_multiplier=1.3)
    write_checkpoint(tmp_path, params=params, dtype="bf16")
    ck = open_checkpoint(tmp_path)
    assert ck.tensors["layers.0.feed_forward.w1.weight"].shape == (ck.config.hidden_dim, 128)
    assert ck.config.hidden_dim == 64 * -(-int(1.3 * int(2 * 4 * 128 / 3)) // 64)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_load_does_not_read_weights(tmp_path):
    """Loading a ~45 MB checkpoint maps it without faulting in weight pages; touching a tensor does."""
    params = dict(SMALL, dim=512, n_layers=4, n_heads=8, n_kv_heads=4, vocab_size=20000, multiple_of=256)
    write_checkpoint(tmp_path, params=params, dtype="bf16", tied=True, scale=0.02)
    size = os.path.getsize(tmp_path / "consolidated.00.pth")
    assert size > 40e6
    open_checkpoint(tmp_path)  # warm up imports and caches
    gc.collect()
    before = _rss()
    ck = open_checkpoint(tmp_path)
    after = _rss()
    assert after - before < size / 50, f"resident memory grew by {after - before} bytes for a {size}-byte file"
    # The measurement can see weights being read: summing the embeddings faults their pages in.
    emb = ck.tensors["tok_embeddings.weight"]
    assert np.frombuffer(emb.memoryview(), np.uint16).astype(np.uint64).sum() > 0
    assert _rss() - after > emb.nbytes // 2



@pytest.mark.parametrize("tied", [False, True])
def test_huge_pages_reads_every_weight_exactly(tmp_path, tied):
    """load(huge_pages=True): the weights are read from the file into one anonymous buffer (tied embeddings
    stay one tensor), byte for byte the mapped ones, and the logits do not change."""
    import llama_cx

    d = tmp_path / "m"
    write_checkpoint(d, params=dict(SMALL, dim=128, vocab_size=4096), tied=tied, seed=4)
    mapped, copied = llama_cx.load(str(d)), llama_cx.load(str(d), huge_pages=True)
    assert any("read into anonymous memory" in n for n in copied.checkpoint.notes), copied.checkpoint.notes
    buffers = {id(t.buffer) for t in copied.checkpoint.tensors.values()}
    assert len(buffers) == 1 and id(copied.checkpoint.files[0].mapping) not in buffers
    for name, t in copied.checkpoint.tensors.items():
        assert t.offset % 64 == 0
        assert bytes(t.memoryview()) == bytes(mapped.checkpoint.tensors[name].memoryview()), name
    ids = list(range(5, 40))
    a = np.asarray(mapped.new_context(64).forward(ids, all_logits=True))
    b = np.asarray(copied.new_context(64).forward(ids, all_logits=True))
    assert np.array_equal(a, b)


def test_huge_pages_skips_tiny_models_and_reads_the_file(tmp_path):
    from llama_cx.tensor import copy_to_weight_buffer

    d = tmp_path / "m"
    write_checkpoint(d, params=SMALL, seed=4)
    ck = open_checkpoint(str(d))
    same, buf = copy_to_weight_buffer(ck.tensors, ck.files)  # under 1 MiB: left mapped
    assert buf is None and all(same[n] is ck.tensors[n] for n in same)
    out, buf = copy_to_weight_buffer(ck.tensors, ck.files, min_bytes=0)
    assert buf is not None and all(bytes(out[n].memoryview()) == bytes(ck.tensors[n].memoryview()) for n in out)
    # a file cut short after its directory was read: a clear error, not garbage weights
    with open(ck.path, "r+b") as f:
        f.truncate(ck.file_size // 2)
    with pytest.raises(OSError, match="shorter than its tensors"):
        copy_to_weight_buffer(ck.tensors, ck.files, min_bytes=0)
