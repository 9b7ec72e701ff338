"""Meta's Llama 3 `tokenizer.model` (tiktoken format): one `base64(token bytes) rank` line per token, ranks 0..n-1,
then the 256 special tokens of Meta's llama3/tokenizer.py. Semantics follow Meta's tokenizer (llama-models 0.3.0)."""
from __future__ import annotations

import base64
import binascii
from typing import Dict, List

from ..errors import FormatError, brief

# Meta's llama_models/llama3/tokenizer.py (llama-models 0.3.0): 256 special tokens after the base vocabulary.
LLAMA3_NUM_RESERVED_SPECIAL_TOKENS = 256
LLAMA3_SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",  # end of message
    "<|eot_id|>",  # end of turn
    "<|python_tag|>",
    "<|image|>",
]
LLAMA3_SPECIAL_TOKENS += [
    f"<|reserved_special_token_{2 + i}|>" for i in range(LLAMA3_NUM_RESERVED_SPECIAL_TOKENS - len(LLAMA3_SPECIAL_TOKENS))
]
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)



def llama3_vocab(path: str) -> dict:
    """Tokenizer arguments (see Tokenizer.__init__) for Meta's Llama 3 tokenizer.model at `path`."""
    base = _read_tiktoken_file(path)
    n = len(base)
    special = {name: n + i for i, name in enumerate(LLAMA3_SPECIAL_TOKENS)}
    return dict(
        token_bytes=base + [None] * len(special), special_tokens=special, merges=None, pattern="llama3",
        ignore_merges=True, meta_slicing=True, bos_id=special["<|begin_of_text|>"],
        eos_id=special["<|end_of_text|>"],
        stop_ids=[special["<|end_of_text|>"], special["<|eom_id|>"], special["<|eot_id|>"]],
        pad_id=special["<|finetune_right_pad_id|>"], source=path, add_bos=True,
    )


def _read_tiktoken_file(path: str) -> List[bytes]:
    """Token bytes by rank from a tiktoken file; FormatError naming the file and line for anything malformed."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FormatError(f"{path}: tokenizer file not found") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read the tokenizer file ({e.strerror or e})") from None
    by_rank: Dict[int, bytes] = {}
    line_of_rank: Dict[int, int] = {}
    line_of_token: Dict[bytes, int] = {}
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise FormatError(f"{path}:{lineno}: expected '<base64 token> <rank>', got {brief(raw.decode('latin-1'))}")
        b64, rank_text = parts
        try:
            token = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise FormatError(f"{path}:{lineno}: token {brief(b64.decode('latin-1'))} is not valid base64") from None
        if not token:
            raise FormatError(f"{path}:{lineno}: empty token")
        if not rank_text.isdigit():
            raise FormatError(f"{path}:{lineno}: rank {brief(rank_text.decode('latin-1'))} is not a non-negative integer")
        if len(rank_text) > 18:  # int() refuses > 4300 digits with a ValueError; no vocabulary has 10^18 tokens
            raise FormatError(f"{path}:{lineno}: rank {brief(rank_text.decode('latin-1'))} is too large")
        rank = int(rank_text)
        if rank in by_rank:
            raise FormatError(f"{path}:{lineno}: rank {rank} already given on line {line_of_rank[rank]}")
        if token in line_of_token:
            raise FormatError(f"{path}:{lineno}: token {brief(token)} already given on line {line_of_token[token]}")
        by_rank[rank] = token
        line_of_rank[rank] = lineno
        line_of_token[token] = lineno
    n = len(by_rank)
    if n == 0:
        raise FormatError(f"{path}: no tokens (empty tokenizer file)")
    if max(by_rank) != n - 1:
        rank = min(r for r in by_rank if r >= n)
        raise FormatError(f"{path}:{line_of_rank[rank]}: rank {rank} leaves a gap; the {n} ranks must be 0..{n - 1}")
    for b in range(256):
        if bytes([b]) not in line_of_token:
            raise FormatError(f"{path}: no token for the byte 0x{b:02x} (byte-level BPE needs all 256 single bytes)")
    return [by_rank[r] for r in range(n)]
