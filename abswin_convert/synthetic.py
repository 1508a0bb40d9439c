"""Position grids with a known structure, for the shipped example and the tests.

A learned Hiera embedding is mostly window-periodic (the paper's finding); we plant that on purpose:
a random window pattern tiled over the grid, plus a smooth global field, plus a little noise.
"""

from __future__ import annotations

import math

import numpy as np

from .maths.absolute_win import tile
from .maths.resize import BICUBIC, Size


def structured_grid(size: Size, channels: int, window: Size, seed: int = 0, noise: float = 0.05) -> np.ndarray:
    """A ``[H, W, C]`` float32 grid: tiled window pattern + smooth global part + noise (std about 0.02 overall)."""
    rng = np.random.default_rng(seed)
    pattern = rng.standard_normal((*window, channels))
    coarse = rng.standard_normal((max(2, math.ceil(size[0] / 16)), max(2, math.ceil(size[1] / 16)), channels))
    smooth = BICUBIC.apply(coarse, size)
    grid = tile(pattern, size) + 0.5 * smooth + noise * rng.standard_normal((*size, channels))
    return (0.02 * grid).astype(np.float32)
