"""Tokenizers beside llama_cx.tokenizer's byte-level BPE: SentencePiece (Llama 2) and the Llama 2 chat format."""
