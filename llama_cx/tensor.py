"""Tensor views: (dtype, shape, strides, byte offset) over a buffer that is usually one mmap of a model file.

No data is copied or touched when a view is made; `memoryview()` gives the raw bytes of a contiguous view
(for numpy in tests, or the compiled kernels), still zero-copy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

# dtype name -> (bytes per element, struct/numpy-ish code used in error messages)
DTYPE_SIZE = {"bf16": 2, "f16": 2, "f32": 4}


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
        return DTYPE_SIZE[self.dtype]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize

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
