"""Tokenizer file formats beyond Meta tiktoken and GGUF metadata (see llama_cx/tokenizer.py for the shared BPE)."""
