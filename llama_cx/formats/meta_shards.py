"""Meta checkpoints split over several files (consolidated.00.pth ... consolidated.NN.pth), as Meta's
model-parallel code (fairscale) saves them: shard k holds rank k's slice of every parallel layer.

    column-parallel (output rows split, dim 0): wq, wk, wv, w1, w3, output; tok_embeddings in Llama 3
                                                 (VocabParallelEmbedding)
    row-parallel (input columns split, dim 1):  wo, w2; tok_embeddings in Llama 2 (ParallelEmbedding)
    replicated (the same in every shard):        attention_norm, ffn_norm, norm (and Llama 2's rope.freqs)

The embedding's split is read off its shard shape: (vocab/n, dim) is Llama 3's, (vocab, dim/n) Llama 2's.

Each split tensor is concatenated into one contiguous buffer at load, so the engine sees exactly what a
single-file checkpoint gives: the weights then live in anonymous memory (about the size of the shard files,
e.g. 141 GB for Llama 3 70B bf16), not in the page cache of mapped files. The copy-free alternative (a
row-split matrix as a list of row blocks, a column-split one as a sum of partial products) needs the forward
pass to take several pointers per matrix; it waits for the forward-pass refactor. Replicated norms stay
zero-copy views of shard 0, after checking every shard holds the same bytes.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

from ..config import ModelConfig
from ..errors import FormatError, LlamaCxError, brief_name
from ..tensor import Tensor, contiguous_strides, weight_buffer
from ._meta_pth import (IGNORED, LAYER_RE, SHARD_RE, TOKENIZER_MISSING, TorchFile, contiguous_copy, fmt, params_config,
                        tokenizer_spec)
from ._unpickle import TensorRef
from .checkpoint import Checkpoint, MappedFile, expected_shapes

_DIM0 = ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1", "feed_forward.w3")
_DIM1 = ("attention.wo", "feed_forward.w2")


def shard_names(directory: str) -> List[str]:
    """consolidated.NN.pth in the directory, by number; one line if the numbering has a gap."""
    found = {int(m.group(1)): n for n, m in ((n, SHARD_RE.match(n)) for n in os.listdir(directory)) if m}
    if not found:
        return []
    gaps = [k for k in range(max(found) + 1) if k not in found]
    if gaps or len(found) != max(found) + 1:
        k = gaps[0] if gaps else 0
        raise FormatError(f"{directory}: missing shard consolidated.{k:02d}.pth (found {len(found)} shards: "
                          f"{', '.join(found[i] for i in sorted(found))})")
    return [found[k] for k in range(len(found))]


def _split_dim(name: str, shard_shape: Tuple[int, ...], n: int, config: ModelConfig) -> Optional[int]:
    """The dimension Meta's model-parallel layer splits `name` along, or None when it is replicated."""
    if name in ("norm.weight", "rope.freqs") or name.endswith(("attention_norm.weight", "ffn_norm.weight")):
        return None
    if name == "output.weight":
        return 0
    if name == "tok_embeddings.weight":
        if len(shard_shape) == 2 and shard_shape[1] == config.dim:
            return 0  # Llama 3: VocabParallelEmbedding
        if len(shard_shape) == 2 and shard_shape[1] * n == config.dim:
            return 1  # Llama 2: ParallelEmbedding (split along the embedding dimension)
        return 0  # wrong either way: the shape check names it
    m = LAYER_RE.match(name)
    rest = name[m.end():-len(".weight")] if m and name.endswith(".weight") else ""
    if rest in _DIM0:
        return 0
    if rest in _DIM1:
        return 1
    return None


def load(directory: str, shards: List[str], rope_scale_factor: Optional[float] = None, weights: bool = True) -> Checkpoint:
    """A Checkpoint from params.json + consolidated.00.pth ... consolidated.NN.pth, split tensors joined
    (weights=False: shapes and dtypes checked, nothing joined or compared; the joined tensors are records)."""
    params_path = os.path.join(directory, "params.json")
    if not os.path.lexists(params_path):  # a FIFO etc.: refused by name when opened
        raise FormatError(f"{directory}: no params.json (expected a Meta checkpoint directory: params.json, "
                          f"consolidated.00.pth ..., tokenizer.model)")
    tokenizer, notes = tokenizer_spec(directory)
    config = params_config(params_path, tokenizer, rope_scale_factor)
    n = len(shards)
    files = [TorchFile(os.path.join(directory, s)) for s in shards]
    refs: List[Dict[str, object]] = []
    for tf in files:
        r = {}
        for name, value in tf.state_dict.items():
            if name in IGNORED:
                continue
            if not isinstance(value, TensorRef):
                notes.append(f"ignored non-tensor entry {name!r} in {os.path.basename(tf.path)}")
            else:
                r[name] = value
        refs.append(r)
    for name in IGNORED:
        if name in files[0].state_dict:
            notes.append(IGNORED[name])
    names = list(refs[0])
    for k in range(1, n):
        if set(refs[k]) != set(names):
            odd = sorted(set(refs[k]) ^ set(names))[0]
            has, lacks = (shards[0], shards[k]) if odd in refs[0] else (shards[k], shards[0])
            raise FormatError(f"{directory}: tensor {brief_name(odd)} is in {has} but not in {lacks}")

    # Bound the work by what the files hold before sizing anything from params.json's n_layers.
    layers = {int(m.group(1)) for m in map(LAYER_RE.match, names) if m}
    if config.n_layers > len(layers):
        first = min(set(range(len(layers) + 1)) - layers)
        raise FormatError(f"{files[0].path}: missing tensor layers.{first}.attention.wq.weight (params.json says "
                          f"n_layers={config.n_layers} but the checkpoint has {len(layers)} layers)")
    tied = "output.weight" not in names
    shapes = expected_shapes(config, tied)
    extra = [x for x in names if x not in shapes]
    if extra:
        shown = ", ".join(extra[:8]) + (f" (+{len(extra) - 8} more)" if len(extra) > 8 else "")
        notes.append(f"ignored {len(extra)} unexpected tensor(s): {shown}")
    missing = [x for x in shapes if x not in names]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FormatError(f"{files[0].path}: missing tensor {missing[0]} (expected shape {fmt(shapes[missing[0]])}){more}")

    # Every shard's piece of a tensor has the same shape; joined, it has the shape params.json implies.
    dims: Dict[str, Optional[int]] = {}
    for name, want in shapes.items():
        shape0 = refs[0][name].shape
        for k in range(1, n):
            if refs[k][name].shape != shape0:
                raise FormatError(f"{files[k].path}: tensor {name} has shape {fmt(refs[k][name].shape)} but "
                                  f"{shards[0]} has {fmt(shape0)} (shards of a model-parallel checkpoint match)")
        d = _split_dim(name, shape0, n, config)
        joined = shape0 if d is None or len(shape0) != 2 else tuple(s * n if i == d else s for i, s in enumerate(shape0))
        if joined != want:
            how = "replicated" if d is None else f"{n} shards joined along dim {d}"
            raise FormatError(f"{files[0].path}: tensor {name} is {fmt(joined)} ({how}), expected {fmt(want)} "
                              f"from params.json")
        dims[name] = d

    pieces: Dict[str, List[Tensor]] = {}
    dtype, first = None, None
    for name in shapes:
        pieces[name] = []
        for k, tf in enumerate(files):
            t = tf.tensor(name, refs[k][name])
            if dtype is None:
                dtype, first = t.dtype, name
            elif t.dtype != dtype:
                raise FormatError(f"{tf.path}: mixed dtypes: {first} is {dtype} but {name} is {t.dtype}")
            if not t.is_contiguous and weights:
                t = contiguous_copy(t)
            pieces[name].append(t)

    total = sum(sum(t.nbytes for t in pieces[x]) for x in shapes if dims[x] is not None)
    emb = "dim 0 (Llama 3)" if dims["tok_embeddings.weight"] == 0 else "dim 1 (Llama 2)"
    if not weights:  # header only: what load would make, without its memory
        tensors = {name: pieces[name][0] if dims[name] is None else
                   Tensor(dtype, want, contiguous_strides(want), 0, None, name) for name, want in shapes.items()}
        notes.append(f"{n} model-parallel shards, joined into one buffer at load ({total / 2**20:.1f} MiB of memory; "
                     f"tok_embeddings split along {emb})")
        return _checkpoint(directory, shards, files, config, tensors, None, tokenizer, dtype, tied, params_path, notes,
                           has_weights=False)
    try:
        buf = weight_buffer(total)
    except MemoryError:
        raise LlamaCxError(f"{directory}: not enough memory to join {n} shards ({total / 2**30:.1f} GiB)") from None
    tensors: Dict[str, Tensor] = {}
    at = 0
    with memoryview(buf) as dst:
        for name, want in shapes.items():
            ps = pieces[name]
            if dims[name] is None:
                _check_replicated(name, ps, files)
                tensors[name] = ps[0]
                continue
            _join(ps, dims[name], dst, at)
            tensors[name] = Tensor(dtype, want, contiguous_strides(want), at, buf, name)
            at += tensors[name].nbytes
    notes.append(f"{n} model-parallel shards joined into one buffer at load ({total / 2**20:.1f} MiB of memory; "
                 f"tok_embeddings split along {emb})")
    return _checkpoint(directory, shards, files, config, tensors, buf, tokenizer, dtype, tied, params_path, notes)


def _checkpoint(directory, shards, files, config, tensors, buf, tokenizer, dtype, tied, params_path, notes,
                has_weights=True):
    n = len(shards)
    return Checkpoint(
        path=files[0].path, format="meta", config=config, tensors=tensors,
        files=[MappedFile(tf.path, tf.size, tf.mm) for tf in files], buffers=[buf] if buf is not None else [],
        has_weights=has_weights,
        tokenizer=tokenizer,
        metadata={"dtype": dtype, "tied_embeddings": tied, "n_params": sum(t.numel for t in tensors.values()),
                  "params_path": params_path},
        notes=notes,
        format_description=f"params.json + {n} model-parallel shards ({shards[0]} ... {shards[-1]}), read without torch",
        tokenizer_missing=TOKENIZER_MISSING,
        display_name=os.path.basename(os.path.abspath(directory)),
    )


def _check_replicated(name: str, pieces: List[Tensor], files) -> None:
    with pieces[0].memoryview() as a:
        for k in range(1, len(pieces)):
            with pieces[k].memoryview() as b:
                if a != b:
                    raise FormatError(f"{files[k].path}: tensor {name} differs from the one in "
                                      f"{os.path.basename(files[0].path)} (replicated tensors must be equal in every shard)")


def _join(pieces: List[Tensor], dim: int, dst: memoryview, at: int) -> None:
    """Write the concatenation of equal-shaped (rows, cols) pieces along `dim` into dst[at:], row-major."""
    if dim == 0:  # row blocks, one after another
        for t in pieces:
            with t.memoryview() as src:
                dst[at : at + t.nbytes] = src
            at += t.nbytes
        return
    # dim 1: output row r is row r of every piece side by side (the slow part: rows x shards slice copies)
    rows, cols = pieces[0].shape
    piece_row = cols * pieces[0].itemsize
    out_row = piece_row * len(pieces)
    srcs = [t.memoryview() for t in pieces]
    try:
        for k, src in enumerate(srcs):
            d = at + k * piece_row
            for r in range(rows):
                dst[d : d + piece_row] = src[r * piece_row : (r + 1) * piece_row]
                d += out_row
    finally:
        for s in srcs:
            s.release()
