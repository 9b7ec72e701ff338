"""Tokenizers: byte-level BPE over three vocabulary formats, SentencePiece BPE, and the chat formats built on them.

    tokenizer.py        the Tokenizer (text <-> ids; _bpe.pyx is its compiled core, _bpe_py.py the Python twin)
    tiktoken_format.py  Meta's Llama 3 tokenizer.model
    gpt2_bpe.py         GGUF byte-level BPE ("gpt2") vocabularies
    spm.py              SentencePieceTokenizer: Llama 2's tokenizer.model (_protobuf.py reads it), GGUF "llama"
    hf_json.py          Hugging Face tokenizer.json (+ tokenizer_config.json, generation_config.json)
    chat_format.py      Llama 3 and ChatML conversations as token ids, and which format fits a tokenizer
    chat_llama2.py      Llama 2's [INST] <<SYS>> conversations
"""
from __future__ import annotations

from ..errors import LlamaCxError
from .hf_json import load_hf_tokenizer
from .spm import SentencePieceTokenizer
from .tokenizer import StreamDecoder, Tokenizer

__all__ = ["Tokenizer", "SentencePieceTokenizer", "StreamDecoder", "from_spec"]


def from_spec(spec) -> "tuple[Tokenizer | SentencePieceTokenizer | None, str | None]":
    """(tokenizer, note) for a checkpoint's TokenizerSpec (llama_cx.formats.checkpoint): the one place a model's
    tokenizer is built. A spec that is not `required` and cannot be built gives (None, the reason) instead."""
    try:
        if spec.kind == "tiktoken":
            return Tokenizer.from_file(spec.path), None
        if spec.kind == "spm":
            return SentencePieceTokenizer.from_file(spec.path), None
        if spec.kind == "gguf":
            return Tokenizer.from_gguf_metadata(spec.metadata, source=spec.source), None
        if spec.kind == "gguf-spm":
            return SentencePieceTokenizer.from_gguf_metadata(spec.metadata, source=spec.source), None
        if spec.kind == "hf_json":
            return load_hf_tokenizer(spec.path), None
        raise LlamaCxError(f"{spec.source}: tokenizer kind {spec.kind!r} is not supported")
    except LlamaCxError as e:
        if spec.required:
            raise
        msg = str(e)
        return None, "no tokenizer: " + (msg[len(spec.source) + 2:] if msg.startswith(spec.source + ": ") else msg)
