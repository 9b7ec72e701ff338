"""What every checkpoint loader returns: one `Checkpoint` record, with tensors under Meta's names.

Meta's names are the schema every format is mapped onto (`expected_shapes`): tok_embeddings.weight,
layers.{i}.attention.wq.weight, ..., norm.weight, output.weight (absent when tied to the embeddings).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..config import ModelConfig
from ..tensor import Tensor


@dataclass
class MappedFile:
    path: str
    size: int  # bytes
    mapping: object  # the read-only mmap (tensor.map_model_file) that zero-copy tensors view


@dataclass
class TokenizerSpec:
    """Where a checkpoint's tokenizer comes from; llama_cx.tokenizers.from_spec builds it."""

    # 'tiktoken' (Meta's Llama 3 tokenizer.model) | 'spm' (Meta's Llama 2 tokenizer.model, SentencePiece)
    # | 'gguf' (tokenizer.ggml.* metadata, byte-level BPE) | 'gguf-spm' (tokenizer.ggml.* metadata, model "llama")
    # | 'hf_json' (Hugging Face tokenizer.json)
    kind: str
    source: str  # the file it is read from, for messages
    path: Optional[str] = None  # 'tiktoken', 'spm': the tokenizer.model file; 'hf_json': the directory of tokenizer.json
    metadata: Optional[dict] = None  # kinds 'gguf', 'gguf-spm': the file's whole metadata
    required: bool = True  # False: a tokenizer that cannot be built leaves a note, the weights still run on ids

    @property
    def description(self) -> str:
        return _TOKENIZER_KINDS.get(self.kind, self.kind)


_TOKENIZER_KINDS = {"tiktoken": "tiktoken (Meta tokenizer.model)", "spm": "SentencePiece BPE (Meta tokenizer.model)",
                    "gguf": "byte-level BPE (GGUF)", "gguf-spm": "SentencePiece BPE (GGUF 'llama' vocabulary)",
                    "hf_json": "tokenizer.json (byte-level BPE)"}


@dataclass
class Checkpoint:
    path: str  # what was opened (the .pth, the .gguf, ...)
    format: str  # 'meta' | 'gguf' | 'hf'
    config: ModelConfig
    tensors: Dict[str, Tensor]  # Meta names (output.weight absent when tied to tok_embeddings.weight)
    files: List[MappedFile]  # the model files, mapped once; tensors view them
    tokenizer: Optional[TokenizerSpec] = None
    metadata: dict = field(default_factory=dict)  # facts for `llama-cx info` (dtype, tied_embeddings, ...)
    notes: List[str] = field(default_factory=list)  # what the loader did that a user should know
    buffers: list = field(default_factory=list)  # memory made at load that tensors point into (joined shards, reordered rows)
    format_description: str = ""  # the format in words, for `llama-cx info` ("GGUF v3, MOSTLY_Q4_1")
    display_name: str = ""  # the model's name as the loader sees it (GGUF general.name, a Meta directory's name)
    tokenizer_missing: str = "no tokenizer found"  # what a checkpoint without a tokenizer lacks, for messages
    # sampling settings the file recommends (SamplingParams field names: GGUF general.sampling.*), unchecked
    sampling: dict = field(default_factory=dict)
    # False: opened with weights=False (header and metadata only): tensors are records whose buffer may be None
    # (nothing dequantized, joined or reordered), for describing the model, never for running it
    has_weights: bool = True

    @property
    def file_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def name(self) -> str:
        """A short name for the model: what its loader calls it, else the file's name."""
        return self.display_name or os.path.basename(self.path)


def expected_shapes(config: ModelConfig, tied: bool) -> Dict[str, Tuple[int, ...]]:
    """Every Meta tensor name the config implies, with its shape (torch Linear weights are (out, in))."""
    c = config
    shapes = {"tok_embeddings.weight": (c.vocab_size, c.dim)}
    for i in range(c.n_layers):
        p = f"layers.{i}."
        shapes[p + "attention.wq.weight"] = (c.q_dim, c.dim)
        shapes[p + "attention.wk.weight"] = (c.kv_dim, c.dim)
        shapes[p + "attention.wv.weight"] = (c.kv_dim, c.dim)
        shapes[p + "attention.wo.weight"] = (c.dim, c.q_dim)
        shapes[p + "feed_forward.w1.weight"] = (c.hidden_dim, c.dim)
        shapes[p + "feed_forward.w2.weight"] = (c.dim, c.hidden_dim)
        shapes[p + "feed_forward.w3.weight"] = (c.hidden_dim, c.dim)
        shapes[p + "attention_norm.weight"] = (c.dim,)
        shapes[p + "ffn_norm.weight"] = (c.dim,)
    shapes["norm.weight"] = (c.dim,)
    if not tied:
        shapes["output.weight"] = (c.vocab_size, c.dim)
    return shapes
