"""Meta checkpoints: a directory (params.json + consolidated.00.pth [+ tokenizer.model]) becomes a
Checkpoint of zero-copy tensor views over one read-only mmap of the .pth. torch is not used: _meta_pth.py reads
the torch.save archive. A directory of several consolidated.NN.pth (model-parallel shards) goes to meta_shards.py.
"""
from __future__ import annotations

import os
from typing import Dict

from ..errors import FormatError
from ..tensor import Tensor
from . import meta_shards
from ._meta_pth import (IGNORED, LAYER_RE, SHARD_RE, TOKENIZER_MISSING, TorchFile, contiguous_copy, fmt, params_config,
                        tokenizer_spec)
from ._unpickle import TensorRef
from .checkpoint import Checkpoint, MappedFile, expected_shapes

DESCRIPTION = "params.json + consolidated .pth, read without torch"


def load(path: str, rope_scale_factor=None, weights: bool = True) -> Checkpoint:
    """A Meta checkpoint directory, or a consolidated.00.pth with params.json beside it (weights=False: no copies,
    see llama_cx.formats.open_checkpoint)."""
    if os.path.isdir(path):
        return _load_meta_dir(path, rope_scale_factor, weights)
    return _load_meta(os.path.dirname(os.path.abspath(path)), path, rope_scale_factor, weights)


def _load_meta_dir(directory: str, rope_scale_factor, weights: bool) -> Checkpoint:
    if sum(1 for n in os.listdir(directory) if SHARD_RE.match(n)) > 1:
        return meta_shards.load(directory, meta_shards.shard_names(directory), rope_scale_factor, weights)
    if not os.path.lexists(os.path.join(directory, "params.json")):  # a FIFO etc.: refused when opened
        raise FormatError(f"{directory}: no params.json (expected a Meta checkpoint directory: params.json, consolidated.00.pth, tokenizer.model)")
    pth = os.path.join(directory, "consolidated.00.pth")
    if not os.path.lexists(pth):
        raise FormatError(f"{directory}: no consolidated.00.pth (expected a Meta checkpoint directory: params.json, consolidated.00.pth, tokenizer.model)")
    return _load_meta(directory, pth, rope_scale_factor, weights)


def _load_meta(directory: str, pth: str, rope_scale_factor, weights: bool) -> Checkpoint:
    if SHARD_RE.match(os.path.basename(pth)) and sum(1 for n in os.listdir(directory) if SHARD_RE.match(n)) > 1:
        return _load_meta_dir(directory, rope_scale_factor, weights)  # one shard of several opens the whole set
    params_path = os.path.join(directory, "params.json")
    if not os.path.lexists(params_path):
        raise FormatError(f"{params_path}: file not found (a Meta .pth needs the params.json beside it)")
    tokenizer, notes = tokenizer_spec(directory)
    config = params_config(params_path, tokenizer, rope_scale_factor)

    tf = TorchFile(pth)
    refs: Dict[str, TensorRef] = {}
    for name, value in tf.state_dict.items():
        if name in IGNORED:
            notes.append(IGNORED[name])
        elif not isinstance(value, TensorRef):
            notes.append(f"ignored non-tensor entry {name!r} ({type(value).__name__})")
        else:
            refs[name] = value

    # Bound the work by what the file holds before sizing anything from params.json's n_layers.
    layers = {int(m.group(1)) for m in map(LAYER_RE.match, refs) if m}
    if config.n_layers > len(layers):
        first = min(set(range(len(layers) + 1)) - layers)
        raise FormatError(
            f"{pth}: missing tensor layers.{first}.attention.wq.weight (params.json says n_layers={config.n_layers} "
            f"but the checkpoint has {len(layers)} layers)"
        )
    tied = "output.weight" not in refs
    shapes = expected_shapes(config, tied)
    extra = [n for n in refs if n not in shapes]
    if extra:
        shown = ", ".join(extra[:8]) + (f" (+{len(extra) - 8} more)" if len(extra) > 8 else "")
        notes.append(f"ignored {len(extra)} unexpected tensor(s): {shown}")

    w1 = refs.get("layers.0.feed_forward.w1.weight")
    if w1 is not None and len(w1.shape) == 2 and w1.shape[0] != config.hidden_dim:
        raise FormatError(
            f"{pth}: FFN hidden_dim mismatch: params.json implies {config.hidden_dim} but "
            f"layers.0.feed_forward.w1.weight has {w1.shape[0]} rows"
        )
    missing = [n for n in shapes if n not in refs]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FormatError(f"{pth}: missing tensor {missing[0]} (expected shape {fmt(shapes[missing[0]])}){more}")
    for name, shape in shapes.items():
        if refs[name].shape != shape:
            raise FormatError(f"{pth}: tensor {name} has shape {fmt(refs[name].shape)}, expected {fmt(shape)} from params.json")

    dtype, first = None, None
    tensors: Dict[str, Tensor] = {}
    for name in shapes:
        t = tf.tensor(name, refs[name])
        if dtype is None:
            dtype, first = t.dtype, name
        elif t.dtype != dtype:
            raise FormatError(f"{pth}: mixed dtypes: {first} is {dtype} but {name} is {t.dtype}")
        if not t.is_contiguous and weights:
            t = contiguous_copy(t)
            notes.append(f"copied non-contiguous tensor {name} into memory")
        tensors[name] = t

    return Checkpoint(
        path=pth,
        format="meta",
        config=config,
        tensors=tensors,
        files=[MappedFile(pth, tf.size, tf.mm)],
        tokenizer=tokenizer,
        metadata={
            "dtype": dtype,
            "tied_embeddings": tied,
            "n_params": sum(t.numel for t in tensors.values()),
            "params_path": params_path,
        },
        notes=notes,
        format_description=DESCRIPTION,
        display_name=os.path.basename(os.path.abspath(directory)),
        tokenizer_missing=TOKENIZER_MISSING,
        has_weights=weights,
    )

