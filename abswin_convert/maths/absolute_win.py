"""Absolute-win maths on canonical ``[H, W, C]`` grids, in numpy float64 (the caller rounds once at the end).

    pos(h, w) = resize(G, h x w) + tile(W, h x w)

``W`` is one window in size and tiled (anchored top-left, ceil count of tiles, cropped);
``G`` is the global part, resized to the token grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from .resize import Resize, Size


def _f64(grid: np.ndarray) -> np.ndarray:
    return np.asarray(grid, dtype=np.float64)


def grid_size(grid: np.ndarray) -> Size:
    """The ``(H, W)`` of a ``[H, W, C]`` grid."""
    return (int(grid.shape[0]), int(grid.shape[1]))


def tile(window: np.ndarray, size: Size) -> np.ndarray:
    """Tile a ``[wh, ww, C]`` window over ``size``, anchored top-left; partial tiles are cropped."""
    window = np.asarray(window)
    wh, ww = window.shape[:2]
    reps = (math.ceil(size[0] / wh), math.ceil(size[1] / ww), 1)
    return np.tile(window, reps)[: size[0], : size[1]]


def _tile_stacks(grid: np.ndarray, window: Size) -> Iterator[tuple[np.ndarray, Size]]:
    """The tiles of a ``[H, W, C]`` grid, one column of tiles at a time, as views ``[n, rows, cols, C]`` into it: the
    column's full tiles stacked, then its tile cut by the bottom edge; each with the ``(rows, cols)`` of the window
    it covers. One numpy operation per view replaces a loop over the tiles (and numpy updates these views in place
    without a temporary copy, which it makes for a single 5-D view of every tile)."""
    h, _, c = grid.shape
    wh, ww = window
    full_h = (h // wh) * wh
    for left in range(0, grid.shape[1], ww):
        column = grid[:, left : left + ww]
        cols = column.shape[1]
        if full_h:
            yield column[:full_h].reshape(h // wh, wh, cols, c), (wh, cols)  # splits an axis: always a view
        if full_h < h:
            yield column[full_h:][None], (h - full_h, cols)


def add_tiled(out: np.ndarray, window: np.ndarray) -> np.ndarray:
    """``out += tile(window, out's size)``, in place, without making the tiled copy; returns ``out``."""
    for tiles, (rows, cols) in _tile_stacks(out, window.shape[:2]):
        tiles += window[:rows, :cols]
    return out


def window_means(grid: np.ndarray, window: Size) -> np.ndarray:
    """``W[i, j]``: the mean over all tiles of the grid at in-window position ``(i, j)``; tiles cut by the
    bottom/right edge count where they exist (a masked mean). Positions no tile reaches (a window larger than the
    grid) are NaN."""
    sums = np.zeros((*window, grid.shape[2]))
    counts = np.zeros((*window, 1))
    for tiles, (rows, cols) in _tile_stacks(grid, window):
        sums[:rows, :cols] += tiles.sum(axis=0)
        counts[:rows, :cols] += tiles.shape[0]
    with np.errstate(invalid="ignore"):
        return sums / counts


def split(grid: np.ndarray, window: Size) -> tuple[np.ndarray, np.ndarray]:
    """Split a grid into its window part ``W`` (``window_means``) and global part ``G`` with ``G + tile(W) == grid``.
    One copy of the grid is made (``G``)."""
    grid = _f64(grid)
    win = window_means(grid, window)
    return win, add_tiled(grid.copy(), -win)


def compose(window: np.ndarray, global_: np.ndarray, size: Size, resize: Resize, out: np.ndarray | None = None) -> np.ndarray:
    """The embedding at ``size``: ``resize(G) + tile(W)``, written into ``out`` (a ``[h, w, C]`` float64 array, e.g. a
    view of the output tensor) when given."""
    return add_tiled(resize.apply(global_, size, out=out), _f64(window))


def naive(grid: np.ndarray, size: Size, resize: Resize) -> np.ndarray:
    """What every loader does today: resize the whole grid, window pattern included."""
    return resize.apply(grid, size)


def relative_error(approx: np.ndarray, exact: np.ndarray) -> float:
    """``||approx - exact|| / ||exact||`` (Frobenius), 0 when both are zero."""
    norm = float(np.linalg.norm(_f64(exact)))
    diff = float(np.linalg.norm(_f64(approx) - _f64(exact)))
    if norm == 0:
        return 0.0 if diff == 0 else math.inf
    return diff / norm


def fit_global(global_: np.ndarray, size: Size, resize: Resize) -> tuple[np.ndarray, float]:
    """Least-squares fit of a ``size`` grid whose resize to ``global_``'s size best matches ``global_``.

    The resize is ``R_h X R_w^T`` per channel, so the solution is ``pinv(R_h) G pinv(R_w)^T``.
    Returns the fitted grid (float64) and the relative residual; the same size returns ``G`` itself, residual 0.
    """
    global_ = _f64(global_)
    h, w, _ = global_.shape
    if tuple(size) == (h, w):
        return global_, 0.0  # the same array: callers never write into a fitted part
    pinv_h = np.linalg.pinv(resize.matrix(size[0], h))  # [size0, h]
    pinv_w = np.linalg.pinv(resize.matrix(size[1], w))  # [size1, w]
    rows = np.tensordot(pinv_h, global_, axes=(1, 0))  # [size0, w, C]
    fitted = np.ascontiguousarray(np.tensordot(rows, pinv_w, axes=(1, 1)).transpose(0, 2, 1))
    return fitted, relative_error(resize.apply(fitted, (h, w)), global_)


def window_energy(grid: np.ndarray, window: Size, means: np.ndarray | None = None) -> float:
    """Share of the mean-removed grid's energy that its tiled window part explains, in [0, 1].

    The window part of the mean-removed grid is ``window_means(grid) - mean``, tiled ``n_ij`` times at position
    ``(i, j)``: its energy is summed per position, without making the tiled copy. ``means``: ``window_means(grid)``
    when the caller has it already.
    """
    grid = _f64(grid)
    h, w = grid.shape[:2]
    mean = grid.mean(axis=(0, 1))
    rows_at_once = max(1, 2**20 // max(1, grid[0].size))  # about 8 MB of temporaries at a time
    total = sum(_sum_of_squares(grid[r : r + rows_at_once] - mean) for r in range(0, h, rows_at_once))
    if total == 0:
        return 0.0
    wh, ww = window
    rows = np.bincount(np.arange(h) % wh, minlength=wh)[:wh]  # how many tiles cover each in-window row, column
    cols = np.bincount(np.arange(w) % ww, minlength=ww)[:ww]
    means = window_means(grid, window) if means is None else means
    centred = np.nan_to_num(means - mean)  # unreached positions are tiled zero times
    return float((np.outer(rows, cols)[..., None] * np.square(centred)).sum()) / total


def _sum_of_squares(values: np.ndarray) -> float:
    return float(np.vdot(values, values))  # one pass, no squared copy


def chance_share(size: Size, window: Size) -> float:
    """Expected ``window_energy`` of an unstructured grid: one over the number of tiles."""
    return (window[0] * window[1]) / (size[0] * size[1])


def normalized_window_energy(grid: np.ndarray, window: Size, means: np.ndarray | None = None) -> float:
    """``window_energy`` read against noise: 0 for no structure, 1 for a perfectly periodic grid."""
    grid = np.asarray(grid)
    chance = chance_share(grid.shape[:2], window)
    constant = bool((grid == grid.reshape(-1, grid.shape[-1])[0]).all())
    if chance >= 1 or constant:  # one window, or nothing but a constant: no pattern to speak of
        return 0.0
    return (window_energy(grid, window, means) - chance) / (1 - chance)


def periodicity_verdict(normalized: float) -> str:
    """What a normalised window energy means for naive interpolation, in words (``inspect`` and its plot)."""
    if normalized > 0.2:
        return "window-periodic, naive interpolation will break it"
    if normalized > 0.05:
        return "partly window-periodic"
    return "no window pattern to speak of"
