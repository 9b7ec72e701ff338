"""Limits: sizes and offsets near 2^64 in .pth and GGUF files, context and token-id limits of the model, the
KV cache's size and allocation, and zero-copy loading of GGUF weights.

Every limit is checked before any work: a refused call leaves the context exactly as it was.
(Sampling and generation arguments are tested with the sampler, tests/test_sampling.py.)
"""
import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict

import pytest
import torch

import llama_cx
from _ckpt import random_state_dict, write_checkpoint
from fuzz._corpus import zip64_central
from fuzz._engine import deadline
from llama_cx.formats import open_checkpoint
from llama_cx.config import ffn_hidden_dim
from llama_cx.errors import ContextLengthError, FormatError, LlamaCxError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, multiple_of=16, ffn_dim_multiplier=None,
            norm_eps=1e-5, rope_theta=500000.0, use_scaled_rope=False)
KV_DIM = 16  # n_kv_heads * head_dim
HIDDEN = ffn_hidden_dim(32, 16, None)  # 96


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, msg
    return msg


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("limits")
    write_checkpoint(d, params=dict(TINY, max_seq_len=32), seed=3)
    return llama_cx.load(str(d))


@pytest.fixture(scope="module")
def unbounded(tmp_path_factory):
    """The same tiny model, but its params.json allows a context of 2^64 - 1 positions (as a hostile GGUF's
    llama.context_length can)."""
    d = tmp_path_factory.mktemp("unbounded")
    write_checkpoint(d, params=dict(TINY, max_seq_len=2**64 - 1), seed=3)
    return llama_cx.load(str(d))


def logits_after(model, *calls):
    """Logits (as bytes) of the last call of a fresh context fed `calls` one forward() each."""
    ctx = model.new_context(16)
    for ids in calls:
        out = ctx.forward(ids)
    return bytes(out)


# ---- context length ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("all_logits", [False, True])
def test_prompt_longer_than_context(model, all_logits):
    ctx = model.new_context(8)
    with pytest.raises(ContextLengthError) as e:
        ctx.forward(list(range(9)), all_logits=all_logits)
    assert "9 tokens do not fit" in one_line(e)
    assert ctx.pos == 0 and ctx.tokens == []

    ctx.forward([1, 2, 3])
    with pytest.raises(ContextLengthError) as e:
        ctx.forward([4, 5, 6, 7, 8, 9], all_logits=all_logits)
    assert one_line(e) == "6 tokens do not fit: 3 of 8 context positions are in use"
    assert ctx.pos == 3 and ctx.tokens == [1, 2, 3]
    # the context still works, and gives what a context that never saw the refused call gives
    assert bytes(ctx.forward([4])) == logits_after(model, [1, 2, 3], [4])
    ctx.forward([5, 6, 7, 8])  # fills it exactly
    assert ctx.pos == 8
    with pytest.raises(ContextLengthError):
        ctx.forward([1])
    assert ctx.pos == 8


@pytest.mark.parametrize("n_ctx", [0, -1, -(2**63), 33, 2**31, 2**63, 2**64, 1.5, 8.0, "8", True, [8]])
def test_bad_context_lengths(model, n_ctx):
    with pytest.raises(ContextLengthError) as e:
        model.new_context(n_ctx)
    msg = one_line(e)
    assert "context length" in msg


def test_context_length_bounds(model):
    assert model.new_context().n_ctx == 32  # default: min(max_seq_len, 4096)
    assert model.new_context(32).n_ctx == 32 and model.new_context(1).n_ctx == 1
    with pytest.raises(ContextLengthError) as e:
        model.new_context(33)
    assert one_line(e) == "context length 33 exceeds the model's maximum 32"


# ---- token ids --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [64, -1, 2**31, 2**31 - 1, 2**32, 2**63, 2**64, -(2**63)])
@pytest.mark.parametrize("where", ["alone", "last of several", "prefill after decode"])
def test_token_ids_out_of_range(model, bad, where):
    ctx = model.new_context(16)
    ctx.forward([5, 6])
    ids = {"alone": [bad], "last of several": [1, 2, 3, bad], "prefill after decode": [7] * 5 + [bad] + [7]}[where]
    with pytest.raises(LlamaCxError) as e:
        ctx.forward(ids)
    assert f"token id {bad} out of range [0, 64)" in one_line(e)
    assert ctx.pos == 2 and ctx.tokens == [5, 6]
    assert bytes(ctx.forward([7])) == logits_after(model, [5, 6], [7])


def test_empty_forward_and_bad_rewind(model):
    ctx = model.new_context(8)
    with pytest.raises(LlamaCxError):
        ctx.forward([])
    ctx.forward([1, 2])
    for n in (-1, 3, 2**64):
        with pytest.raises(LlamaCxError):
            ctx.rewind(n)
    assert ctx.tokens == [1, 2]
    with pytest.raises(LlamaCxError):
        model.logits([])


# ---- KV cache: size known before allocation, absurd sizes refused ------------------------------------------
def _state_bytes(cfg, n_ctx, batch, n_threads, act_bytes):
    """Every buffer of lcx_state_new (csrc/model/state.c), counted again here with Python integers."""
    widest = max(cfg.dim, cfg.q_dim, cfg.hidden_dim)
    act = batch * (cfg.dim + 2 * cfg.q_dim + 2 * cfg.hidden_dim + cfg.head_dim)
    private = n_threads * batch * cfg.dim  # each thread's normalised x, f32 and act_type
    kv = 2 * cfg.n_layers * n_ctx * cfg.kv_dim
    qb, kc = llama_cx._kernels.ATT_QB, llama_cx._kernels.DEC_KC
    parts = -(-n_ctx // kc) * cfg.n_heads * (cfg.head_dim + 1) + n_threads * cfg.q_dim  # decode attention
    # each thread's one-token input quantized for block-type weights: 2 slots of the largest activation blocks
    # (q8_0: 34 bytes per 32, q8_K: 292 per 256) of the widest input, in 64-byte units
    xq = -(-max(-(-widest // 32) * 34, -(-widest // 256) * 292) // 64) * 64
    return (4 * (act + private + kv + n_threads * qb * n_ctx + parts) + act_bytes * private
            + act_bytes * n_threads * widest + batch * (8 + act_bytes * widest) + n_threads * 2 * xq)


@pytest.mark.parametrize("n_ctx,batch,threads", [(1, 1, 1), (8, 8, 2), (100, 64, 7), (4096, 128, 16)])
def test_state_bytes_counts_every_buffer(model, n_ctx, batch, threads):
    """The size checked against the memory limit before allocating (the C formula, asked by Context) is every
    buffer of the C state, the per-thread ones and the bf16 copies of a bf16 model's activations included."""
    assert model._c.state_bytes(n_ctx, batch, threads) == _state_bytes(model.config, n_ctx, batch, threads, 2)


def test_state_bytes_counts_the_kv_cache(model):
    """state_bytes (known before the buffers are allocated) covers the KV cache: 2 (K, V) x layers x
    positions x kv_dim float32, plus activations and scratch that do not grow faster than per position."""
    a, b = model.new_context(8), model.new_context(32)
    kv_per_pos = 2 * TINY["n_layers"] * KV_DIM * 4
    assert a.state_bytes >= 8 * kv_per_pos and b.state_bytes >= 32 * kv_per_pos
    # both above max_batch (8 < 128 is not): compare two contexts with the same batch size
    c, d = model.new_context(16), model.new_context(24)
    assert c.max_batch == c.n_ctx and d.max_batch == d.n_ctx  # (prefill block = n_ctx below 128)
    assert b.state_bytes - a.state_bytes >= 24 * kv_per_pos


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemTotal")


def test_context_larger_than_memory_is_refused(unbounded):
    """A KV cache of twice the machine's memory must be refused with a clear error, before allocation.
    (calloc alone does not fail here: each of K and V is below physical memory, and Linux overcommits
    lazily, so without a check the process is OOM-killed later, while the cache fills.)"""
    per_pos = 2 * TINY["n_layers"] * KV_DIM * 4
    n_ctx = 2 * _mem_total() // per_pos
    with pytest.raises(ContextLengthError) as e:
        unbounded.new_context(n_ctx)
    assert "MiB" in one_line(e) or "GiB" in one_line(e)


@pytest.mark.parametrize("n_ctx", [2**40, 2**50])
def test_absurd_context_is_refused(unbounded, n_ctx):
    with pytest.raises(ContextLengthError) as e:
        unbounded.new_context(n_ctx)
    assert str(n_ctx) in one_line(e)


@pytest.mark.parametrize("n_ctx", [2**63 - 1, 2**63, 2**64 - 1])
def test_context_beyond_int64_is_refused(unbounded, n_ctx):
    # used to escape as OverflowError from the int64_t conversion of the compiled layer
    with pytest.raises(ContextLengthError):
        unbounded.new_context(n_ctx)


@pytest.mark.parametrize("threads,n_ctx", [(8, 2**61), (16, 2**60), (2, 2**62)])
def test_kv_cache_size_overflow_is_refused(tmp_path, threads, n_ctx):
    """n_ctx x kv_dim x layers (and threads x n_ctx scratch) overflow 64 bits: the sizes must be refused,
    not wrapped to tiny buffers that the first forward() overruns (heap corruption; found here: with 8
    threads and n_ctx 2^61 the state was 'allocated' as a few hundred bytes). Run in a subprocess so a
    regression fails this test instead of crashing the run."""
    d = tmp_path / "m"
    write_checkpoint(d, params=dict(TINY, max_seq_len=2**64 - 1), seed=3)
    code = (
        "import llama_cx\n"
        f"m = llama_cx.load({str(d)!r})\n"
        f"llama_cx.set_num_threads({threads})\n"
        "try:\n"
        f"    ctx = m.new_context({n_ctx})\n"
        "    ctx.forward([1, 2, 3])\n"
        "    print('accepted', ctx.state_bytes)\n"
        "except llama_cx.ContextLengthError as e:\n"
        "    print('refused:', e)\n"
    )
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and r.stdout.startswith("refused:"), (r.returncode, r.stdout, r.stderr[:1500], r.stderr[-1500:])


# ---- 64-bit sizes and offsets in .pth files ------------------------------------------------------------------
class _Storage:
    def __init__(self, key, numel, storage_type):
        self.key, self.numel, self.storage_type = key, numel, storage_type


class _Tensor:
    """Pickles as torch pickles a tensor: _rebuild_tensor_v2(storage, offset, size, stride, False, {})."""

    def __init__(self, key, numel, offset, size, stride, storage_type):
        self.storage = _Storage(key, numel, storage_type)
        self.args = (offset, tuple(size), tuple(stride), False, OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (self.storage,) + self.args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


@pytest.fixture
def pth_dir(tmp_path):
    d = tmp_path / "ckpt"
    write_checkpoint(d, params=TINY, seed=4)
    return d


def _forge(pth_dir, name, **changes):
    """Re-write data.pkl of the checkpoint in `pth_dir` with tensor `name`'s fields replaced."""
    pth = str(pth_dir / "consolidated.00.pth")
    sd = torch.load(pth, weights_only=True)
    fakes = {}
    for key, (n, t) in enumerate(sd.items()):
        f = dict(key=str(key), numel=t.numel(), offset=0, size=t.shape, stride=t.stride(),
                 storage_type=torch.BFloat16Storage)
        if n == name:
            f.update(changes)
        fakes[n] = _Tensor(**f)
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(fakes)
    with zipfile.ZipFile(pth) as z:
        members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    with zipfile.ZipFile(pth, "w") as z:
        for member, data in members:
            z.writestr(member, buf.getvalue() if member.endswith("/data.pkl") else data)


W = "layers.1.feed_forward.w2.weight"  # (32, HIDDEN)


@pytest.mark.parametrize("changes,message", [
    (dict(numel=2**62), "declares 4611686018427387904 elements (9223372036854775808 bytes) but its zip member holds"),
    (dict(numel=2**63 - 1), "declares 9223372036854775807 elements"),
    (dict(numel=2**64 - 1), "declares 18446744073709551615 elements"),
    (dict(offset=2**64 - 1), "storage offset 18446744073709551615) reaches element"),
    (dict(offset=2**63), "reaches element"),
    (dict(offset=2**64 - 32 * HIDDEN + 1), "reaches element 18446744073709551616 "),  # offset + size = 2^64 + 1
    (dict(stride=(2**63, 1)), f"reaches element {31 * 2**63 + HIDDEN - 1} "),
    (dict(stride=(2**64 - 1, 2**64 - 1)), "reaches element"),
    (dict(stride=(HIDDEN, 2**58)), "reaches element"),
])
def test_pth_tensor_extent_near_2_64(pth_dir, changes, message):
    _forge(pth_dir, W, **changes)
    with pytest.raises(FormatError) as e:
        open_checkpoint(pth_dir)
    msg = one_line(e)
    assert message in msg and W in msg, msg


@pytest.mark.parametrize("shape", [(2**32, 2**32), (2**63, 2), (2**64 - 1, HIDDEN), (32, 2**64 - 1)])
def test_pth_shape_whose_product_overflows(pth_dir, shape):
    _forge(pth_dir, W, size=shape, stride=(shape[1], 1))
    with pytest.raises(FormatError) as e:
        open_checkpoint(pth_dir)
    assert f"tensor {W} has shape ({shape[0]}, {shape[1]}), expected (32, {HIDDEN})" in one_line(e)


def _central(data: bytes, index: int) -> int:
    """Offset of central directory entry `index`."""
    pos = -1
    for _ in range(index + 1):
        pos = data.index(b"PK\x01\x02", pos + 1)
    return pos


@pytest.mark.parametrize("field,value,message", [
    ("sizes", 2**64 - 1, "declares 18446744073709551615 bytes, more than the"),
    ("sizes", 2**63, "declares 9223372036854775808 bytes"),
    ("local", 2**64 - 1, "local header of member"),
    ("local", 2**64 - 30, "lies past the data area"),
    ("cd_offset", 2**64 - 1, "runs past its end record"),
    ("cd_size", 2**64 - 1, "runs past its end record"),
    ("entries", 2**64 - 1, "18446744073709551615 entries cannot fit"),
    ("entries", 2**32, "entries cannot fit"),
])
def test_zip64_fields_near_2_64(pth_dir, field, value, message):
    """A ZIP64 archive (sizes and offsets in 64-bit fields) whose numbers overflow when added."""
    pth = pth_dir / "consolidated.00.pth"
    data = bytearray(zip64_central(pth.read_bytes()))
    entry = _central(bytes(data), 3)
    name_len = struct.unpack_from("<H", data, entry + 28)[0]
    extra = entry + 46 + name_len + 4  # ZIP64 extra field body: usize, csize, local header offset
    z64 = struct.unpack_from("<Q", data, len(data) - 22 - 20 + 8)[0]  # from the locator
    where = {"sizes": [extra, extra + 8], "local": [extra + 16],
             "cd_offset": [z64 + 48], "cd_size": [z64 + 40], "entries": [z64 + 24, z64 + 32]}[field]
    for pos in where:
        struct.pack_into("<Q", data, pos, value)
    pth.write_bytes(bytes(data))
    with pytest.raises(FormatError) as e:
        open_checkpoint(pth_dir)
    assert message in one_line(e)


def test_zip64_rewrite_is_faithful(pth_dir):
    """(The archive above, untampered, loads the same tensors as the original.)"""
    pth = pth_dir / "consolidated.00.pth"
    before = {n: bytes(t.memoryview()) for n, t in open_checkpoint(pth_dir).tensors.items()}
    pth.write_bytes(zip64_central(pth.read_bytes()))
    after = {n: bytes(t.memoryview()) for n, t in open_checkpoint(pth_dir).tensors.items()}
    assert before == after and len(before) == 2 + 9 * TINY["n_layers"] + 1


# ---- GGUF: counts that would size work --------------------------------------------------------------------
def _gguf(tmp_path, **meta_changes):
    from _gguf_files import write_llama_gguf

    path = tmp_path / "m.gguf"
    write_llama_gguf(path, TINY, random_state_dict(TINY, dtype="f32", seed=5))
    data = bytearray(path.read_bytes())
    for key, value in meta_changes.items():
        raw = key.replace("__", ".").encode()
        at = data.index(struct.pack("<Q", len(raw)) + raw) + 8 + len(raw)
        vtype = struct.unpack_from("<I", data, at)[0]
        struct.pack_into({4: "<I", 10: "<Q"}[vtype], data, at + 4, value)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("key,value", [
    ("llama__block_count", 2**32 - 1),  # the layer loop must be bounded by the tensors in the file
    ("llama__block_count", 3),
    ("llama__embedding_length", 2**32 - 1),
    ("llama__feed_forward_length", 2**32 - 1),
    ("llama__attention__head_count", 2**32 - 1),
    ("llama__vocab_size", 2**32 - 1),
])
def test_gguf_llama_sizes_beyond_the_tensors(tmp_path, key, value):
    path = _gguf(tmp_path, **{key: value})
    with deadline(20), pytest.raises(FormatError) as e:
        open_checkpoint(path)
    assert str(path) in one_line(e)


def test_gguf_huge_context_length(tmp_path):
    path = _gguf(tmp_path, llama__context_length=2**32 - 1)
    m = llama_cx.load(path)
    assert m.config.max_seq_len == 2**32 - 1 and m.new_context().n_ctx == 4096


# ---- zero-copy GGUF weights ---------------------------------------------------------------------------------
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_gguf_f32_bf16_weights_are_not_copied(tmp_path):
    """F32 and BF16 tensors are views of the file's mapping: loading (and building the model) costs about
    the headers, not the weights; the first forward then touches them all (so the measurement can see them)."""
    from _gguf_files import write_llama_gguf
    from gguf import GGMLQuantizationType as Q

    params = dict(TINY, dim=512, n_heads=8, n_kv_heads=4, vocab_size=8192, multiple_of=256)
    path = tmp_path / "big.gguf"
    write_llama_gguf(path, params, random_state_dict(params, dtype="f32", seed=6),
                     qtype_of=lambda name, a: Q.F32 if a.ndim == 1 or "token_embd" in name else Q.BF16)
    size = path.stat().st_size
    assert size > 30 * 2**20

    before = _rss()
    m = llama_cx.load(path)
    loaded = _rss()
    mm = m.checkpoint.files[0].mapping
    for name, t in m.checkpoint.tensors.items():
        assert t.buffer is mm and t.dtype in ("f32", "bf16"), name
    assert {t.dtype for t in m.checkpoint.tensors.values()} == {"f32", "bf16"}
    assert loaded - before < 0.1 * size, (loaded - before, size)

    m.new_context(4).forward([1])
    assert _rss() - before > 0.5 * size  # every weight was read once


# ---- copies are bounded by the file ------------------------------------------------------------------------
def test_pth_zero_stride_tensors_are_refused(tmp_path):
    """Every tensor of a checkpoint a few KB large as a stride-0 view of one element: the loader copies
    non-contiguous views into memory, so without a check the copies would be as large as the model the
    params.json declares (here ~30 MB from a 4 KB file; with Llama-sized params, hundreds of GB)."""
    params = dict(TINY, dim=512, n_heads=8, n_kv_heads=4, vocab_size=4096, n_layers=1)
    d = tmp_path / "ckpt"
    write_checkpoint(d, params=params, state_dict={n: torch.zeros((1,) * t.dim(), dtype=torch.bfloat16).expand(t.shape)
                                                   for n, t in random_state_dict(params, tied=True).items()})
    assert (d / "consolidated.00.pth").stat().st_size < 16384  # torch.save keeps the expanded views as views
    with pytest.raises(FormatError) as e:
        open_checkpoint(d)
    assert "strides (0, 0)) reads some storage elements more than once" in one_line(e)


def test_pth_overlapping_strides_are_refused(pth_dir):
    _forge(pth_dir, W, stride=(1, 1))  # rows overlap: row i starts one element after row i - 1
    with pytest.raises(FormatError) as e:
        open_checkpoint(pth_dir)
    assert f"tensor {W} (shape (32, {HIDDEN}), strides (1, 1)) reads some storage elements more than once" in one_line(e)


def test_huge_pages_refuses_a_copy_larger_than_half_the_ram(tmp_path, monkeypatch):
    from llama_cx import model as model_mod

    d = tmp_path / "m"
    write_checkpoint(d, params=TINY, seed=3)
    monkeypatch.setattr(model_mod, "_memory_limit", lambda: 1000)  # a 1000-byte machine
    with pytest.raises(llama_cx.LlamaCxError, match="more than half of this machine's"):
        llama_cx.load(str(d), huge_pages=True)
    llama_cx.load(str(d))  # the mapped load does not copy, so it is fine
