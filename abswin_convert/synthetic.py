"""Position grids with a known structure, for the shipped example and the tests.

A learned Hiera embedding is mostly window-periodic (the paper's finding); we plant that on purpose:
a random window pattern tiled over the grid, plus a smooth global field, plus a little noise.
"""

from __future__ import annotations

import math

import torch

from .maths.absolute_win import tile
from .maths.resize import BICUBIC, Size


def structured_grid(size: Size, channels: int, window: Size, seed: int = 0, noise: float = 0.05) -> torch.Tensor:
    """A ``[H, W, C]`` grid: tiled window pattern + smooth global part + noise (std about 0.02 overall)."""
    gen = torch.Generator().manual_seed(seed)
    pattern = torch.randn(*window, channels, generator=gen)
    coarse = torch.randn(max(2, math.ceil(size[0] / 16)), max(2, math.ceil(size[1] / 16)), channels, generator=gen)
    smooth = BICUBIC.apply(coarse, size)
    grid = tile(pattern, size) + 0.5 * smooth + noise * torch.randn(*size, channels, generator=gen)
    return 0.02 * grid
