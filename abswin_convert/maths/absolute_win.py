"""Absolute-win maths on canonical ``[H, W, C]`` grids: pure functions, no layouts, no files.

    pos(h, w) = resize(G, h x w) + tile(W, h x w)

``W`` is one window in size and tiled (anchored top-left, ceil count of tiles, cropped);
``G`` is the global part, resized to the token grid.
"""

from __future__ import annotations

import math

import torch

from .resize import Resize, Size


def grid_size(grid: torch.Tensor) -> Size:
    """The ``(H, W)`` of a ``[H, W, C]`` grid."""
    return (int(grid.shape[0]), int(grid.shape[1]))


def tile(window: torch.Tensor, size: Size) -> torch.Tensor:
    """Tile a ``[wh, ww, C]`` window over ``size``, anchored top-left; partial tiles are cropped."""
    wh, ww = window.shape[:2]
    reps = (math.ceil(size[0] / wh), math.ceil(size[1] / ww), 1)
    return window.repeat(reps)[: size[0], : size[1]]


def split(grid: torch.Tensor, window: Size) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a grid into its window part ``W`` and global part ``G`` with ``G + tile(W) == grid``.

    ``W[i, j]`` is the mean over all tiles of the grid at in-window position ``(i, j)``; tiles cut by the
    bottom/right edge count where they exist (a masked mean).
    """
    grid = grid.float()
    h, w, c = grid.shape
    wh, ww = window
    nh, nw = math.ceil(h / wh), math.ceil(w / ww)
    padded = grid.new_zeros(nh * wh, nw * ww, c)
    padded[:h, :w] = grid
    present = grid.new_zeros(nh * wh, nw * ww, 1)
    present[:h, :w] = 1
    sums = padded.reshape(nh, wh, nw, ww, c).sum(dim=(0, 2))
    counts = present.reshape(nh, wh, nw, ww, 1).sum(dim=(0, 2))
    win = sums / counts
    return win, grid - tile(win, (h, w))


def compose(window: torch.Tensor, global_: torch.Tensor, size: Size, resize: Resize) -> torch.Tensor:
    """The embedding at ``size``: ``resize(G) + tile(W)``."""
    return resize.apply(global_, size) + tile(window.float(), size)


def naive(grid: torch.Tensor, size: Size, resize: Resize) -> torch.Tensor:
    """What every loader does today: resize the whole grid, window pattern included."""
    return resize.apply(grid, size)


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """``||approx - exact|| / ||exact||``, 0 when both are zero."""
    norm = exact.double().norm()
    diff = (approx.double() - exact.double()).norm()
    if norm == 0:
        return 0.0 if diff == 0 else math.inf
    return float(diff / norm)


def fit_global(global_: torch.Tensor, size: Size, resize: Resize) -> tuple[torch.Tensor, float]:
    """Least-squares fit of a ``size`` grid whose resize to ``global_``'s size best matches ``global_``.

    The resize is linear and separable, ``resize(X) = R_h X R_w^T`` per channel, so the least-squares
    solution is ``pinv(R_h) G pinv(R_w)^T``. Returns the fitted grid and the relative residual.
    """
    h, w = grid_size(global_)
    if tuple(size) == (h, w):
        return global_.float(), 0.0
    r_h = resize.matrix(size[0], h)
    r_w = resize.matrix(size[1], w)
    g = global_.double().permute(2, 0, 1).contiguous()  # [C, H, W]; a strided batch is 10-100x slower to multiply
    fitted = torch.linalg.pinv(r_h) @ g @ torch.linalg.pinv(r_w).T
    fitted = fitted.permute(1, 2, 0).float()
    return fitted, relative_error(resize.apply(fitted, (h, w)), global_)


def window_energy(grid: torch.Tensor, window: Size) -> float:
    """Share of the mean-removed grid's energy that its tiled window part explains, in [0, 1].

    High means the embedding is window-periodic and naive interpolation will break it. For a grid with no
    structure the share is about ``chance_share`` (see ``normalized_window_energy``).
    """
    centred = grid.double() - grid.double().mean(dim=(0, 1), keepdim=True)
    total = float(centred.pow(2).sum())
    if total == 0:
        return 0.0
    win, _ = split(centred, window)
    return float(tile(win.double(), grid_size(grid)).pow(2).sum()) / total


def chance_share(size: Size, window: Size) -> float:
    """Expected ``window_energy`` of an unstructured grid: one over the number of tiles."""
    return (window[0] * window[1]) / (size[0] * size[1])


def normalized_window_energy(grid: torch.Tensor, window: Size) -> float:
    """``window_energy`` read against noise: 0 for no structure, 1 for a perfectly periodic grid."""
    chance = chance_share(grid_size(grid), window)
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
