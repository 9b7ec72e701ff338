"""Multi-shard Meta checkpoints (consolidated.00.pth ... .NN.pth): a random checkpoint written with torch.save is
split the way Meta's model-parallel code saves it, and must give exactly the logits of the unsplit one."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

import llama_cx
from _ckpt import SMALL, write_checkpoint
from llama_cx.errors import FormatError
from llama_cx.formats import open_checkpoint

# fairscale's layer kinds in Meta's llama/model.py: ColumnParallelLinear splits the output rows (dim 0),
# RowParallelLinear the input columns (dim 1); norms are plain modules, the same in every rank.
_DIM0 = ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1", "feed_forward.w3")
_DIM1 = ("attention.wo", "feed_forward.w2")


def split_dim(name: str, llama2: bool):
    if name == "tok_embeddings.weight":
        return 1 if llama2 else 0  # Llama 2: ParallelEmbedding; Llama 3: VocabParallelEmbedding
    if name == "output.weight":
        return 0
    for kinds, d in ((_DIM0, 0), (_DIM1, 1)):
        if any(name.endswith(f".{k}.weight") for k in kinds):
            return d
    return None  # norms, rope.freqs


def write_sharded(src_dir, dst_dir, n: int, llama2: bool = False):
    """Split the single-file checkpoint in src_dir into n model-parallel shards in dst_dir (what rank k of
    Meta's training saves: its own slice of every parallel weight, clones so each file holds only its slice)."""
    sd = torch.load(os.path.join(src_dir, "consolidated.00.pth"))
    os.makedirs(dst_dir, exist_ok=True)
    for k in range(n):
        part = {}
        for name, t in sd.items():
            d = split_dim(name, llama2)
            part[name] = t.clone() if d is None else t.chunk(n, dim=d)[k].clone()
        torch.save(part, os.path.join(dst_dir, f"consolidated.{k:02d}.pth"))
    shutil.copy(os.path.join(src_dir, "params.json"), os.path.join(dst_dir, "params.json"))


LLAMA2 = dict(SMALL, rope_theta=10000.0, vocab_size=256)  # vocab and dim divisible by 4 for every split


def _reference(tmp_path, llama2, dtype="bf16", tied=False):
    d = tmp_path / "single"
    params, sd = write_checkpoint(d, params=LLAMA2 if llama2 else dict(SMALL, vocab_size=256), dtype=dtype,
                                  tied=tied, seed=3)
    if llama2:  # Llama 2 checkpoints carry Meta's precomputed RoPE table; it is ignored
        sd["rope.freqs"] = torch.randn(8)
        torch.save(sd, d / "consolidated.00.pth")
    return d


IDS = [1, 7, 200, 31, 5, 99, 150, 2, 64, 255, 0, 17]


@pytest.mark.parametrize("n", [1, 2])
def test_header_only_open_joins_nothing(tmp_path, n):
    """open_checkpoint(weights=False), for `llama-cx info`: shapes and dtypes as a load makes them, no memory made."""
    single = _reference(tmp_path, llama2=False)
    d = single
    if n > 1:
        d = tmp_path / f"mp{n}"
        write_sharded(single, d, n)
    full, head = open_checkpoint(str(d)), open_checkpoint(str(d), weights=False)
    assert not head.has_weights and head.buffers == [] and len(full.buffers) == (n > 1)
    assert head.config == full.config and head.metadata == full.metadata and len(head.notes) == len(full.notes)
    mapped = {id(f.mapping) for f in head.files}
    for name, t in full.tensors.items():
        h = head.tensors[name]
        assert (h.dtype, h.shape) == (t.dtype, t.shape), name
        assert h.buffer is None or id(h.buffer) in mapped, name  # a record, or a view of a shard file


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("llama2", [False, True], ids=["llama3", "llama2"])
def test_sharded_logits_equal_unsplit(tmp_path, n, llama2):
    single = _reference(tmp_path, llama2)
    sharded = tmp_path / f"mp{n}"
    write_sharded(single, sharded, n, llama2)
    assert sorted(os.listdir(sharded)) == [f"consolidated.{k:02d}.pth" for k in range(n)] + ["params.json"]
    a, b = llama_cx.load(str(single)), llama_cx.load(str(sharded))
    for name, t in a.checkpoint.tensors.items():  # the joined bytes are the original bytes
        assert bytes(t.memoryview()) == bytes(b.checkpoint.tensors[name].memoryview()), name
    la, lb = np.array(a.logits(IDS)), np.array(b.logits(IDS))
    assert np.array_equal(la, lb)
    note = [x for x in b.notes if "model-parallel shards joined" in x]
    assert note and f"{n} model-parallel" in note[0] and ("dim 1 (Llama 2)" if llama2 else "dim 0 (Llama 3)") in note[0]
    assert b.checkpoint.format_description.startswith(f"params.json + {n} model-parallel shards")
    if llama2:
        assert any("rope.freqs" in x for x in b.notes)
    # a shard path opens the whole set, as a single .pth opens its directory
    c = open_checkpoint(str(sharded / "consolidated.00.pth"))
    assert c.config == b.config and set(c.tensors) == set(b.checkpoint.tensors)


def test_sharded_tied_f32(tmp_path):
    single = tmp_path / "single"
    write_checkpoint(single, params=dict(SMALL, vocab_size=256), dtype="f32", tied=True, seed=4)
    write_sharded(single, tmp_path / "mp2", 2)
    a, b = llama_cx.load(str(single)), llama_cx.load(str(tmp_path / "mp2"))
    assert b.tied_embeddings and b.checkpoint.metadata["dtype"] == "f32"
    assert np.array_equal(np.array(a.logits(IDS)), np.array(b.logits(IDS)))


def _error(path) -> str:
    with pytest.raises(FormatError) as e:
        open_checkpoint(str(path))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.fixture
def mp4(tmp_path):
    single = _reference(tmp_path, False)
    write_sharded(single, tmp_path / "mp4", 4)
    return tmp_path / "mp4"


def test_missing_shard(mp4):
    os.remove(mp4 / "consolidated.02.pth")
    assert _error(mp4) == (f"{mp4}: missing shard consolidated.02.pth (found 3 shards: consolidated.00.pth, "
                           f"consolidated.01.pth, consolidated.03.pth)")
    os.remove(mp4 / "consolidated.00.pth")
    assert "missing shard consolidated.00.pth" in _error(mp4)


def test_shard_with_a_different_shape(mp4):
    sd = torch.load(mp4 / "consolidated.03.pth")
    sd["layers.1.feed_forward.w2.weight"] = sd["layers.1.feed_forward.w2.weight"][:, :-1].clone()
    torch.save(sd, mp4 / "consolidated.03.pth")
    assert _error(mp4) == (f"{mp4 / 'consolidated.03.pth'}: tensor layers.1.feed_forward.w2.weight has shape (64, 47) "
                           f"but consolidated.00.pth has (64, 48) (shards of a model-parallel checkpoint match)")


def test_shards_that_do_not_join_to_the_params_shape(tmp_path):
    single = _reference(tmp_path, False)
    write_sharded(single, tmp_path / "mp2", 2)
    os.rename(tmp_path / "mp2" / "consolidated.01.pth", tmp_path / "mp2" / "consolidated.02.pth")
    shutil.copy(tmp_path / "mp2" / "consolidated.00.pth", tmp_path / "mp2" / "consolidated.01.pth")
    # three shards of a 2-way split: every split tensor joins to 1.5x its size
    msg = _error(tmp_path / "mp2")
    assert "tensor tok_embeddings.weight is (384, 64) (3 shards joined along dim 0), expected (256, 64)" in msg


def test_replicated_norm_differs(mp4):
    sd = torch.load(mp4 / "consolidated.01.pth")
    sd["norm.weight"] = sd["norm.weight"] + 1
    torch.save(sd, mp4 / "consolidated.01.pth")
    assert _error(mp4) == (f"{mp4 / 'consolidated.01.pth'}: tensor norm.weight differs from the one in "
                           f"consolidated.00.pth (replicated tensors must be equal in every shard)")


def test_shard_missing_a_tensor(mp4):
    sd = torch.load(mp4 / "consolidated.02.pth")
    del sd["layers.0.attention.wk.weight"]
    torch.save(sd, mp4 / "consolidated.02.pth")
    assert _error(mp4) == (f"{mp4}: tensor layers.0.attention.wk.weight is in consolidated.00.pth but not in "
                           f"consolidated.02.pth")


def test_shards_with_mixed_dtypes(mp4):
    sd = torch.load(mp4 / "consolidated.01.pth")
    sd["layers.0.attention.wq.weight"] = sd["layers.0.attention.wq.weight"].float()
    torch.save(sd, mp4 / "consolidated.01.pth")
    assert "mixed dtypes" in _error(mp4)
