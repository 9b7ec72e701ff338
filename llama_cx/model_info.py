"""A checkpoint opened for its description only: config, metadata, tokenizer, chat format and tensor records,
from the header and metadata. Nothing is dequantized and no compiled model is built, so `llama-cx info` on
the 98 MB demo GGUF stays far below the 400 MB a full load of it takes (its Q4_1 weights become bf16).

    info = llama_cx.model_info.open_info("SmolLM2-135M-Instruct.Q4_1.gguf")
    info.config, info.tokenizer, info.chat_format, info.notes, info.weight_bytes_per_token
`Model` has the same attributes, so code that only describes a model takes either.
"""
from __future__ import annotations

import os

from .checkpoint import Checkpoint, load_checkpoint

_ITEMSIZE_IN_KERNELS = {"bf16": 2, "f32": 4, "f16": 4}  # f16 matrices are widened to f32 at load


def tokenizer_and_chat_format(ck: Checkpoint):
    """The checkpoint's tokenizer (from its file or its metadata) and the chat format it implies, or Nones."""
    tokenizer = ck.tokenizer
    if tokenizer is None and ck.tokenizer_path:
        from .tokenizer import Tokenizer

        tokenizer = Tokenizer.from_file(ck.tokenizer_path)
    chat_format = None
    if tokenizer is not None:
        from .chat_format import chat_format_for

        chat_format = chat_format_for(tokenizer, ck.metadata.get("tokenizer.chat_template"))
    return tokenizer, chat_format


def weight_bytes_per_token(ck: Checkpoint) -> int:
    """Bytes of weights a decoded token streams, as the kernels hold them: every matrix once, the output
    projection included (of the embedding table one row is read, which is neglected)."""
    t = ck.tensors
    mats = [n for n in t if n != "tok_embeddings.weight" and len(t[n].shape) == 2]
    total = sum(t[n].numel * _ITEMSIZE_IN_KERNELS[t[n].dtype] for n in mats)
    if "output.weight" not in t:  # tied: the output projection reads the embedding table
        emb = t["tok_embeddings.weight"]
        total += emb.numel * _ITEMSIZE_IN_KERNELS[emb.dtype]
    return total


class ModelInfo:
    """What `open_info` read: the checkpoint's records and what a loaded Model would say about itself."""

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        self.config = checkpoint.config
        self.notes = list(checkpoint.notes)
        self.tokenizer, self.chat_format = tokenizer_and_chat_format(checkpoint)
        self.weight_bytes_per_token = weight_bytes_per_token(checkpoint)


def open_info(path) -> ModelInfo:
    """Open a model file or directory for its description only (see the module notes)."""
    from .runtime import check_environment

    check_environment()
    return ModelInfo(load_checkpoint(os.fspath(path), weights=False))
