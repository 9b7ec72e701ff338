"""Pure-Python twin of the compiled BPE core (`_bpe.pyx`): same constructor, same results, about 20x slower.

It is the reference the compiled core is tested against and the fallback when the extension is not built.

Two ways to rank a merge, one algorithm (repeatedly merge the adjacent pair of lowest rank, leftmost first):
- tiktoken files (`merges=None`): the rank of a pair is the rank (= id) of the concatenated bytes as a token,
  as in tiktoken's `_byte_pair_merge`;
- GGUF / Hugging Face "gpt2" vocabularies (`merges=[(left_id, right_id), ...]` in priority order): the rank of a
  pair is its index in the merge list, as in tokenizers' `BPE` and llama.cpp's `llm_tokenizer_bpe`.
"""
from __future__ import annotations

import heapq
from typing import Dict, List, Optional, Sequence, Tuple

from . import _pretokenize

_CACHE_LIMIT = 1 << 16
NO_MERGE = 1 << 62  # the rank of a pair that is not a merge
SHORT_PIECE = 64  # longer pieces merge with the heap (as in _bpe.pyx)


class Core:
    """Encodes ordinary text (no special tokens) to ids.

    token_bytes: the bytes of each id that merging may produce (None for ids it must never produce: special
        tokens); every single byte must be one of them.
    merges: None (rank by token id) or the merge list as id pairs, best first.
    pattern: a `_pretokenize.PATTERNS` name.
    ignore_merges: a piece that is a whole token is that token, without merging (tiktoken always does this).
    """

    def __init__(self, token_bytes: Sequence[Optional[bytes]], merges: Optional[Sequence[Tuple[int, int]]],
                 pattern: str, ignore_merges: bool):
        if pattern not in _pretokenize.PATTERNS:
            raise ValueError(f"unknown pre-tokenizer pattern {pattern!r}")
        self.pattern = pattern
        self.ignore_merges = ignore_merges or merges is None
        self.encoder: Dict[bytes, int] = {}
        for i, b in enumerate(token_bytes):
            if b is not None:
                self.encoder.setdefault(b, i)
        # a byte without a token (possible with merges only, e.g. SmolLM2 has none for 0x04) is dropped from the
        # piece before merging, as Hugging Face tokenizers do (its BPE has no unk token there)
        self.byte_ids = [self.encoder.get(bytes([b])) for b in range(256)]
        if merges is None and None in self.byte_ids:
            raise ValueError(f"no token for the byte 0x{self.byte_ids.index(None):02x}")
        self.pairs: Optional[Dict[Tuple[int, int], Tuple[int, int]]] = None
        if merges is not None:
            self.pairs = {}
            for rank, (a, b) in enumerate(merges):
                self.pairs.setdefault((a, b), (rank, self.encoder[token_bytes[a] + token_bytes[b]]))
        self.cache: Dict[str, List[int]] = {}

    def encode_ordinary(self, text: str, meta_slicing: bool) -> List[int]:
        """The ids of text (no special tokens); meta_slicing: encode long text in Meta's slices
        (`_pretokenize.meta_slices`), as Meta's Llama 3 tokenizer does."""
        text.encode("utf-8")  # lone surrogates raise UnicodeEncodeError, as in the compiled core
        out: List[int] = []
        slices = _pretokenize.meta_slices(text) if meta_slicing else (text,)
        for s in slices:
            for piece in _pretokenize.split(s, self.pattern):
                ids = self.cache.get(piece)
                if ids is None:
                    ids = self.encode_piece(piece.encode("utf-8"))
                    if len(self.cache) >= _CACHE_LIMIT:
                        self.cache.clear()
                    self.cache[piece] = ids
                out.extend(ids)
        return out

    def encode_piece(self, piece: bytes) -> List[int]:
        if self.ignore_merges:
            token = self.encoder.get(piece)
            if token is not None:
                return [token]
        # part i is piece[starts[i]:starts[i+1]]
        starts = [i for i, b in enumerate(piece) if self.byte_ids[b] is not None] + [len(piece)]
        ids = [self.byte_ids[b] for b in piece if self.byte_ids[b] is not None]
        if len(ids) <= SHORT_PIECE:
            return self._merge_linear(piece, starts, ids)
        return self._merge_heap(piece, starts, ids)

    def _merge_linear(self, piece: bytes, starts: List[int], ids: List[int]) -> List[int]:
        """tiktoken's _byte_pair_merge: join the leftmost pair of lowest rank until no pair joins."""
        # ranks[i], merged[i]: rank and resulting id of joining parts i and i+1 (NO_MERGE: they do not join)
        ranks, merged = [], []
        for i in range(len(ids) - 1):
            r, m = self._join(piece, starts[i], starts[i + 2], ids[i], ids[i + 1])
            ranks.append(r)
            merged.append(m)
        while ranks:
            best = min(ranks)
            if best == NO_MERGE:
                break
            i = ranks.index(best)  # leftmost of the best
            ids[i] = merged[i]
            del ids[i + 1], starts[i + 1], ranks[i], merged[i]
            if i < len(ranks):
                ranks[i], merged[i] = self._join(piece, starts[i], starts[i + 2], ids[i], ids[i + 1])
            if i > 0:
                ranks[i - 1], merged[i - 1] = self._join(piece, starts[i - 1], starts[i + 1], ids[i - 1], ids[i])
        return ids

    def _merge_heap(self, piece: bytes, starts: List[int], ids: List[int]) -> List[int]:
        """The same joins in O(n log n) for long pieces: parts in a linked list, candidates in a heap keyed
        (rank, left part); an entry is stale once either part changed (versions)."""
        m = len(ids)
        nxt = list(range(1, m + 1))
        prv = list(range(-1, m - 1))
        ver = [0] * m
        heap = []
        for i in range(m - 1):
            r, g = self._join(piece, starts[i], starts[i + 2], ids[i], ids[i + 1])
            if r != NO_MERGE:
                heap.append((r, i, i + 1, 0, 0, g))
        heapq.heapify(heap)
        while heap:
            _, a, b, va, vb, g = heapq.heappop(heap)
            if ver[a] != va or nxt[a] != b or ver[b] != vb:
                continue
            ids[a] = g
            ver[a] += 1
            ver[b] += 1
            nxt[a] = nxt[b]
            if nxt[a] < m:
                prv[nxt[a]] = a
            if prv[a] >= 0:
                j = prv[a]
                r, g = self._join(piece, starts[j], starts[nxt[a]], ids[j], ids[a])
                if r != NO_MERGE:
                    heapq.heappush(heap, (r, j, a, ver[j], ver[a], g))
            if nxt[a] < m:
                j = nxt[a]
                r, g = self._join(piece, starts[a], starts[nxt[j]], ids[a], ids[j])
                if r != NO_MERGE:
                    heapq.heappush(heap, (r, a, j, ver[a], ver[j], g))
        out, i = [], 0
        while i < m:
            out.append(ids[i])
            i = nxt[i]
        return out

    def _join(self, piece: bytes, lo: int, hi: int, left: int, right: int) -> Tuple[int, int]:
        """(rank, id) of joining the adjacent parts left = piece[lo:?] and right = piece[?:hi]."""
        if self.pairs is None:
            token = self.encoder.get(piece[lo:hi])
            return (NO_MERGE, -1) if token is None else (token, token)
        return self.pairs.get((left, right), (NO_MERGE, -1))
