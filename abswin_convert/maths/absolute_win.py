"""Absolute-win maths on canonical ``[H, W, C]`` grids, in numpy float64 (the caller rounds once at the end).

    pos(h, w) = resize(G, h x w) + tile(W, h x w)

``W`` is one window in size and tiled (anchored top-left, ceil count of tiles, cropped);
``G`` is the global part, resized to the token grid.
"""

from __future__ import annotations

import math

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


def split(grid: np.ndarray, window: Size) -> tuple[np.ndarray, np.ndarray]:
    """Split a grid into its window part ``W`` and global part ``G`` with ``G + tile(W) == grid``.

    ``W[i, j]`` is the mean over all tiles at in-window position ``(i, j)``; tiles cut by the bottom/right edge
    count where they exist (a masked mean).
    """
    grid = _f64(grid)
    h, w, c = grid.shape
    wh, ww = window
    nh, nw = math.ceil(h / wh), math.ceil(w / ww)
    padded = np.zeros((nh * wh, nw * ww, c))
    padded[:h, :w] = grid
    present = np.zeros((nh * wh, nw * ww, 1))
    present[:h, :w] = 1
    sums = padded.reshape(nh, wh, nw, ww, c).sum(axis=(0, 2))
    counts = present.reshape(nh, wh, nw, ww, 1).sum(axis=(0, 2))
    with np.errstate(invalid="ignore"):  # positions no tile reaches (window larger than the grid) stay NaN
        win = sums / counts
    return win, grid - tile(win, (h, w))


def compose(window: np.ndarray, global_: np.ndarray, size: Size, resize: Resize) -> np.ndarray:
    """The embedding at ``size``: ``resize(G) + tile(W)``."""
    return resize.apply(global_, size) + tile(_f64(window), size)


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
        return global_.copy(), 0.0
    pinv_h = np.linalg.pinv(resize.matrix(size[0], h))  # [size0, h]
    pinv_w = np.linalg.pinv(resize.matrix(size[1], w))  # [size1, w]
    rows = np.tensordot(pinv_h, global_, axes=(1, 0))  # [size0, w, C]
    fitted = np.ascontiguousarray(np.tensordot(rows, pinv_w, axes=(1, 1)).transpose(0, 2, 1))
    return fitted, relative_error(resize.apply(fitted, (h, w)), global_)


def window_energy(grid: np.ndarray, window: Size) -> float:
    """Share of the mean-removed grid's energy that its tiled window part explains, in [0, 1]."""
    grid = _f64(grid)
    centred = grid - grid.mean(axis=(0, 1), keepdims=True)
    total = float(np.square(centred).sum())
    if total == 0:
        return 0.0
    win, _ = split(centred, window)
    return float(np.square(tile(win, grid.shape[:2])).sum()) / total


def chance_share(size: Size, window: Size) -> float:
    """Expected ``window_energy`` of an unstructured grid: one over the number of tiles."""
    return (window[0] * window[1]) / (size[0] * size[1])


def normalized_window_energy(grid: np.ndarray, window: Size) -> float:
    """``window_energy`` read against noise: 0 for no structure, 1 for a perfectly periodic grid."""
    grid = np.asarray(grid)
    chance = chance_share(grid.shape[:2], window)
    constant = bool((grid == grid.reshape(-1, grid.shape[-1])[0]).all())
    if chance >= 1 or constant:  # one window, or nothing but a constant: no pattern to speak of
        return 0.0
    return (window_energy(grid, window) - chance) / (1 - chance)


def periodicity_verdict(normalized: float) -> str:
    """What a normalised window energy means for naive interpolation, in words (``inspect`` and its plot)."""
    if normalized > 0.2:
        return "window-periodic, naive interpolation will break it"
    if normalized > 0.05:
        return "partly window-periodic"
    return "no window pattern to speak of"
