"""Tensor views: (dtype, shape, strides, byte offset) over a buffer that is usually one mmap of a model file.

No data is copied or touched when a view is made; `memoryview()` gives the raw bytes of a contiguous view
(for numpy in tests, or the compiled kernels), still zero-copy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from . import dtypes


def contiguous_strides(shape: Tuple[int, ...]) -> Tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


@dataclass(frozen=True)
class Tensor:
    """A typed, shaped view into `buffer` starting at byte `offset` (strides in elements, like torch)."""

    dtype: str
    shape: Tuple[int, ...]
    strides: Tuple[int, ...]
    offset: int  # byte offset of element [0, 0, ...] inside `buffer`
    buffer: object  # an mmap, bytes or bytearray (anything exporting the buffer protocol)
    name: str = ""

    @property
    def itemsize(self) -> int:
        return dtypes.BY_NAME[self.dtype].itemsize

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return dtypes.BY_NAME[self.dtype].nbytes(self.numel)  # block types: whole blocks of each row

    @property
    def is_contiguous(self) -> bool:
        return self.numel == 0 or all(
            s == c for d, s, c in zip(self.shape, self.strides, contiguous_strides(self.shape)) if d != 1
        )

    def memoryview(self) -> memoryview:
        """The bytes of this (contiguous) tensor, zero-copy."""
        if not self.is_contiguous:
            raise ValueError(f"tensor {self.name or '?'} is not contiguous (strides {self.strides})")
        return memoryview(self.buffer).cast("B")[self.offset : self.offset + self.nbytes]

    def __repr__(self) -> str:
        return f"Tensor({self.name!r}, {self.dtype}, shape={self.shape}, offset={self.offset})"


def _ask_for_huge_pages(mm) -> bool:
    """Ask for transparent huge pages for this mapping (Linux MADV_HUGEPAGE, a hint); False where that
    cannot be asked (no such advice on this platform, or refused)."""
    import mmap

    if not (hasattr(mmap, "MADV_HUGEPAGE") and len(mm)):
        return False
    try:
        mm.madvise(mmap.MADV_HUGEPAGE)
    except (OSError, ValueError):
        return False
    return True


def map_model_file(fileno: int):
    """A read-only mmap of a whole model file, with huge pages asked for. Pages the file's page cache does not
    hold yet are then read in large folios, which the kernel can map with 2 MiB entries: SmolLM2 decode, 1
    thread, 91-92 -> 97-104 tok/s once its file had been read in through such a mapping (53 instead of 4 MB
    PMD-mapped), in every later process too. A file already in the page cache keeps the pages it has."""
    import mmap

    mm = mmap.mmap(fileno, 0, access=mmap.ACCESS_READ)
    _ask_for_huge_pages(mm)
    return mm


def weight_buffer(nbytes: int):
    """A zeroed, writable buffer for weights made at load time (joined shards, load(huge_pages=True)):
    anonymous memory with transparent huge pages requested (Linux MADV_HUGEPAGE), since the kernels stream
    these bytes every token and 2 MiB pages measured faster reads than 4 KiB ones. Else a bytearray."""
    import mmap

    if nbytes > 0 and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        except (OSError, ValueError):
            return bytearray(nbytes)
        if _ask_for_huge_pages(buf):
            return buf
        buf.close()
    return bytearray(nbytes)


def copy_to_weight_buffer(tensors: dict, files, min_bytes: int = 1 << 20) -> "tuple[dict, object]":
    """(tensors, buffer): every contiguous tensor that views one of `files` (MappedFile records: path and mapping)
    read from its file into one weight_buffer (64-byte aligned each; file reads, not copies out of the mapping,
    which would fault in every 4 KiB page first), the others kept as they are. Views of the same bytes (tied
    embeddings) stay shared. The buffer is None (nothing copied) below min_bytes in all."""
    by_mapping = {id(f.mapping): f for f in files}

    def source(t):
        f = by_mapping.get(id(t.buffer))
        return f if f is not None and f.mapping is t.buffer and t.is_contiguous else None

    spans = {}  # (file, offset, nbytes) -> offset in the new buffer
    total = 0
    for t in tensors.values():
        f = source(t)
        if f is not None and (f.path, t.offset, t.nbytes) not in spans:
            spans[(f.path, t.offset, t.nbytes)] = total
            total += (t.nbytes + 63) // 64 * 64
    if not spans or total < min_bytes:
        return dict(tensors), None
    buf = weight_buffer(total)
    with memoryview(buf) as dst:
        for path in {p for p, _, _ in spans}:
            with open(path, "rb") as fh:
                for (p, off, n), at in spans.items():
                    if p != path:
                        continue
                    fh.seek(off)
                    got = 0
                    while got < n:
                        k = fh.readinto(dst[at + got : at + n])
                        if not k:
                            raise OSError("the file is shorter than its tensors (changed while loading?)")
                        got += k
    out = {}
    for name, t in tensors.items():
        f = source(t)
        at = spans[(f.path, t.offset, t.nbytes)] if f is not None else None
        out[name] = t if at is None else Tensor(t.dtype, t.shape, t.strides, at, buf, t.name)
    return out, buf
