"""The runtimes' resizes as numpy operators (float64), matching ``torch.nn.functional.interpolate``.

Bicubic and linear resizing with ``align_corners=False`` are linear and separable, so a resize of an ``[H, W, C]``
grid to ``[h, w, C]`` is ``R_h @ grid @ R_w^T`` per channel, with ``R`` the 1-D operator ``[n_out, n_in]``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

Size = tuple[int, int]

_A_PLAIN = -0.75  # torch's upsample_bicubic2d (as OpenCV)
_A_ANTIALIAS = -0.5  # torch's antialiased kernel follows PIL (Keys' a = -0.5)


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel, zero outside ``|x| < 2``."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _read_only(matrix: np.ndarray) -> np.ndarray:
    matrix.setflags(write=False)  # cached and shared: nobody may change it
    return matrix


def _check_sizes(n_in: int, n_out: int) -> None:
    if n_in < 1 or n_out < 1:
        raise ValueError(f"resize sizes must be positive, got {n_in} -> {n_out}")


@functools.cache  # read-only results: a zoo resizes the same sizes again and again
def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Plain bicubic (a = -0.75): 4 taps around the source point, indices clamped to the border."""
    _check_sizes(n_in, n_out)
    scale = n_in / n_out
    # torch does not clamp the source coordinate for cubic; the taps' indices are clamped instead
    src = (np.arange(n_out) + 0.5) * scale - 0.5
    base = np.floor(src)
    t = src - base
    out = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    for offset in (-1, 0, 1, 2):
        weight = _cubic(t - offset, _A_PLAIN)
        index = np.clip(base.astype(np.int64) + offset, 0, n_in - 1)
        np.add.at(out, (rows, index), weight)  # clamped taps can land on the same input twice
    return _read_only(out)


@functools.cache
def antialias_bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Antialiased bicubic (a = -0.5): support widened by the scale when downsampling, weights normalised."""
    _check_sizes(n_in, n_out)
    scale = n_in / n_out
    support = 2.0 * scale if scale >= 1.0 else 2.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    out = np.zeros((n_out, n_in))
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)  # int() truncates toward zero, as torch's cast does
        hi = min(int(center + support + 0.5), n_in)
        j = np.arange(lo, hi)
        weights = _cubic((j - center + 0.5) * invscale, _A_ANTIALIAS)
        total = weights.sum()
        out[i, lo:hi] = weights / total if total != 0 else weights
    return _read_only(out)


@functools.cache
def linear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``F.interpolate(mode="linear", align_corners=False)`` as ``[n_out, n_in]``: 2 taps, source clamped at 0."""
    _check_sizes(n_in, n_out)
    return _two_taps(np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0), n_in)


@functools.cache
def linear_matrix_aligned(n_in: int, n_out: int) -> np.ndarray:
    """``F.interpolate(mode="linear", align_corners=True)`` as ``[n_out, n_in]``: the end points map onto each other."""
    _check_sizes(n_in, n_out)
    step = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    return _two_taps(np.arange(n_out) * step, n_in)


def _two_taps(src: np.ndarray, n_in: int) -> np.ndarray:
    """Linear interpolation at source positions ``src`` (one per output row) as a read-only ``[len(src), n_in]``."""
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    out = np.zeros((len(src), n_in))
    rows = np.arange(len(src))
    np.add.at(out, (rows, i0), 1.0 - lam)
    np.add.at(out, (rows, i1), lam)
    return _read_only(out)


@dataclass(frozen=True)
class Resize:
    """Bicubic resize with ``align_corners=False``, with or without antialiasing, in float64."""

    antialias: bool

    @property
    def name(self) -> str:
        return "bicubic-antialias" if self.antialias else "bicubic"

    def matrix(self, n_in: int, n_out: int) -> np.ndarray:
        """The 1-D operator ``[n_out, n_in]`` (float64)."""
        return antialias_bicubic_matrix(n_in, n_out) if self.antialias else bicubic_matrix(n_in, n_out)

    def apply(self, grid: np.ndarray, size: Size, out: np.ndarray | None = None) -> np.ndarray:
        """Resize a ``[H, W, C]`` grid to ``[h, w, C]`` in float64: ``R_h @ grid @ R_w^T`` per channel, written into
        ``out`` when given. The same size is a copy (both operators are then exactly the identity)."""
        h, w = (int(n) for n in size)
        grid = np.asarray(grid, dtype=np.float64)
        if grid.ndim != 3:
            raise ValueError(f"a grid is [H, W, C], got shape {list(grid.shape)}")
        if out is None:
            out = np.empty((h, w, grid.shape[2]))
        if (h, w) == grid.shape[:2]:
            out[...] = grid
            return out
        rows = np.tensordot(self.matrix(grid.shape[0], h), grid, axes=(1, 0))  # [h, W, C]
        return np.matmul(self.matrix(grid.shape[1], w), rows, out=out)  # [w, W] @ [h][W, C] -> [h, w, C]


BICUBIC = Resize(antialias=False)
BICUBIC_ANTIALIAS = Resize(antialias=True)


def resize_table(table: np.ndarray, length: int, align_corners: bool = False) -> np.ndarray:
    """A ``[L, D]`` relative-position table resized linearly to ``[length, D]`` (float64): as ``get_rel_pos`` does
    (``align_corners=False``), or with the end rows kept on the end rows (``align_corners=True``)."""
    table = np.asarray(table, dtype=np.float64)
    if table.shape[0] == length:
        return table.copy()
    matrix = linear_matrix_aligned if align_corners else linear_matrix
    return matrix(table.shape[0], length) @ table


__all__ = ["BICUBIC", "BICUBIC_ANTIALIAS", "Resize", "Size", "linear_matrix", "linear_matrix_aligned", "resize_table"]
