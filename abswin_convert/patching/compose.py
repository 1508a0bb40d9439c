"""The absolute-win maths of ``maths/absolute_win.py`` as differentiable torch operations on ``[H, W, C]`` grids.

Twins of ``window_means``, ``split``, ``tile``, ``compose`` and the ViTDet recipe, so that a patched model computes
its embedding from its current parameters, with gradients, inside a compiled graph. Run in float64 and rounded
once by the caller, they give what ``convert`` writes (tests/test_patching.py holds them to the numpy maths).
The resize is ``F.interpolate`` bicubic with ``align_corners=False``, which ``maths/resize.py`` reproduces.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..maths.resize import Resize, Size


def resize(grid: torch.Tensor, size: Size, how: Resize) -> torch.Tensor:
    """``how.apply`` on a torch ``[H, W, C]`` grid; the same size is the grid itself."""
    if tuple(grid.shape[:2]) == tuple(size):
        return grid
    nchw = grid.permute(2, 0, 1).unsqueeze(0)
    resized = F.interpolate(nchw, size=tuple(size), mode="bicubic", align_corners=False, antialias=how.antialias)
    return resized[0].permute(1, 2, 0)


def tile(window: torch.Tensor, size: Size) -> torch.Tensor:
    """``[wh, ww, C]`` tiled over ``size``, anchored top-left, partial tiles cropped."""
    reps = (math.ceil(size[0] / window.shape[0]), math.ceil(size[1] / window.shape[1]), 1)
    return window.repeat(reps)[: size[0], : size[1]]


def window_means(grid: torch.Tensor, window: Size) -> torch.Tensor:
    """The mean over all tiles at each in-window position; tiles cut by the bottom/right edge count where they exist."""
    (h, w, c), (wh, ww) = grid.shape, window
    padded = F.pad(grid, (0, 0, 0, -w % ww, 0, -h % wh))  # zeros beyond the edge add nothing to the sums
    sums = padded.reshape(padded.shape[0] // wh, wh, padded.shape[1] // ww, ww, c).sum(dim=(0, 2))
    rows = [len(range(i, h, wh)) for i in range(wh)]  # how many tiles reach each in-window row, column
    cols = [len(range(j, w, ww)) for j in range(ww)]
    counts = torch.tensor(rows, dtype=grid.dtype, device=grid.device)[:, None] * torch.tensor(
        cols, dtype=grid.dtype, device=grid.device)[None, :]
    return sums / counts[..., None]


def split(grid: torch.Tensor, window: Size) -> tuple[torch.Tensor, torch.Tensor]:
    """Window part ``W`` and global part ``G = grid - tile(W)``."""
    window_part = window_means(grid, window)
    return window_part, grid - tile(window_part, (grid.shape[0], grid.shape[1]))


def compose(window: torch.Tensor, global_: torch.Tensor, size: Size, how: Resize) -> torch.Tensor:
    """``resize(G, size) + tile(W, size)``."""
    return resize(global_, size, how) + tile(window, size)


def recipe_window(grid: torch.Tensor, window: Size, how: Resize) -> torch.Tensor:
    """The ViTDet recipe's window part: the pretrained grid itself, resized to the window when the sizes differ."""
    return resize(grid, window, how)
