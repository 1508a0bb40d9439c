"""Tensors without torch: a tensor in memory (``RawTensor``) and the two ways a file holds one.

Elements are kept raw, as the file stores them (``dtypes``: BF16 as ``uint16`` bits, F8 as ``uint8``), so that a
tensor read and written back is the same bytes. Maths reads ``float64()`` and writes ``RawTensor.encode``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import AbswinError
from .dtypes import DtypeError, from_float64, itemsize, raw_dtype, to_float64


@dataclass(frozen=True)
class RawTensor:
    """A tensor in memory: its safetensors dtype name and its raw elements."""

    dtype: str
    raw: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.raw.shape)

    @property
    def nbytes(self) -> int:
        return int(self.raw.nbytes)

    def read(self) -> RawTensor:
        return self

    def float64(self) -> np.ndarray:
        """The values as float64 (exact for every float dtype here)."""
        return to_float64(self.raw, self.dtype)

    @classmethod
    def encode(cls, values: np.ndarray, dtype: str) -> RawTensor:
        """float64 ``values`` rounded once to ``dtype`` (as torch's ``.to(dtype)`` rounds)."""
        try:
            return cls(dtype, np.ascontiguousarray(from_float64(values, dtype)))
        except DtypeError as exc:
            raise AbswinError(f"computed values cannot be stored as {dtype}: {exc}") from exc


@dataclass(frozen=True, slots=True)  # slots: a header may describe two million of them
class FileTensor:
    """A tensor whose bytes are one contiguous range of a file (safetensors, or an uncompressed torch file)."""

    path: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    def read(self) -> RawTensor:
        return RawTensor(self.dtype, _read_range(self.path, self.start, self.nbytes, self.dtype).reshape(self.shape))


@dataclass(frozen=True)
class StridedTensor:
    """A view into a torch storage that is not one contiguous range (a transposed or sliced tensor was saved)."""

    path: Path
    dtype: str
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements, as torch counts them
    start: int  # absolute offset of the view's first element
    span: int  # bytes from ``start`` to the end of its last element

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * itemsize(self.dtype)

    def read(self) -> RawTensor:
        flat = _read_range(self.path, self.start, self.span, self.dtype)
        size = itemsize(self.dtype)
        view = np.lib.stride_tricks.as_strided(flat, self.shape, tuple(s * size for s in self.strides), writeable=False)
        return RawTensor(self.dtype, np.ascontiguousarray(view))


class StoredTensor(Protocol):
    """What a checkpoint holds for each tensor: its dtype name and shape up front, its elements when read."""

    @property
    def dtype(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    def read(self) -> RawTensor: ...


def _read_range(path: Path, start: int, nbytes: int, dtype: str) -> np.ndarray:
    """``nbytes`` of ``path`` from ``start``, as raw elements of ``dtype``."""
    data = np.empty(nbytes, dtype=np.uint8)  # read straight into the array: one copy of the bytes, not two
    with open(path, "rb") as f:
        f.seek(start)
        done = f.readinto(data.data)
    if done != nbytes:
        raise AbswinError(f"{path.name}: file ended while reading a tensor; it is truncated")
    return data.view(raw_dtype(dtype))
