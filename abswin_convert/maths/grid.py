"""Layouts of position tensors in checkpoints, and the canonical ``[H, W, C]`` grid they convert to.

- ``flat``:     ``[1, H*W, C]``, raster order, no prefix tokens (Hiera)
- ``flat_cls``: ``[1, P + H*W, C]``, P prefix tokens first (ViT, MAE, ViTDet: P = 1)
- ``nhwc``:     ``[1, H, W, C]`` (SAM)
- ``nchw``:     ``[1, C, H, W]`` (SAM2, timm abswin)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import AbswinError
from ..vocabulary import LAYOUTS
from .resize import Size

MAX_SIDE = 1 << 20  # pixels (or tokens) a side: far past any image, far below what overflows a float


@dataclass
class PositionGrid:
    """A position embedding as a ``[H, W, C]`` grid plus its prefix tokens (``[P, C]``, maybe empty)."""

    grid: np.ndarray  # float64
    prefix: np.ndarray

    @property
    def size(self) -> Size:
        return (int(self.grid.shape[0]), int(self.grid.shape[1]))


def grid_size_of(shape: tuple[int, ...], layout: str, prefix_tokens: int = 0, hw: Size | None = None) -> Size:
    """The ``(H, W)`` a tensor of ``shape`` holds in ``layout``; square unless ``hw`` says otherwise."""
    if layout not in LAYOUTS:
        raise AbswinError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if len(shape) != (3 if layout.startswith("flat") else 4) or shape[0] != 1:
        raise AbswinError(f"a {layout} position tensor has shape {_layout_shape(layout)}, found {list(shape)}")
    if layout == "nhwc":
        return (shape[1], shape[2])
    if layout == "nchw":
        return (shape[2], shape[3])
    tokens = shape[1] - (prefix_tokens if layout == "flat_cls" else 0)
    if hw is not None:
        if hw[0] * hw[1] != tokens:
            raise AbswinError(f"{tokens} position tokens do not form a {hw[0]}x{hw[1]} grid")
        return hw
    side = math.isqrt(max(tokens, 0))
    if tokens <= 0 or side * side != tokens:
        raise AbswinError(
            f"{tokens} position tokens do not form a square grid; the grid size must come from the model config"
        )
    return (side, side)


def _layout_shape(layout: str) -> str:
    return {"flat": "[1, H*W, C]", "flat_cls": "[1, 1+H*W, C]", "nhwc": "[1, H, W, C]", "nchw": "[1, C, H, W]"}[layout]


def to_grid(values: np.ndarray, layout: str, prefix_tokens: int = 0, hw: Size | None = None) -> PositionGrid:
    """Read position values (any float array) in ``layout`` into a float64 grid (and its prefix tokens)."""
    h, w = grid_size_of(tuple(values.shape), layout, prefix_tokens, hw)
    t = np.asarray(values, dtype=np.float64)
    if layout == "nhwc":
        return PositionGrid(t[0], np.zeros((0, t.shape[-1])))
    if layout == "nchw":
        return PositionGrid(t[0].transpose(1, 2, 0), np.zeros((0, t.shape[1])))
    prefix = prefix_tokens if layout == "flat_cls" else 0
    return PositionGrid(t[0, prefix:].reshape(h, w, -1), t[0, :prefix])


def layout_buffer(layout: str, size: Size, prefix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A float64 tensor in ``layout`` for a ``size`` grid, its ``prefix`` rows filled in, and the ``[h, w, C]`` view
    of it where the grid goes: a grid computed into the view needs no second copy."""
    h, w = size
    channels = prefix.shape[-1]
    if layout == "nhwc":
        tensor = np.empty((1, h, w, channels))
        return tensor, tensor[0]
    if layout == "nchw":
        tensor = np.empty((1, channels, h, w))
        return tensor, tensor[0].transpose(1, 2, 0)
    rows = len(prefix) if layout == "flat_cls" else 0
    tensor = np.empty((1, rows + h * w, channels))
    tensor[0, :rows] = prefix[:rows]
    return tensor, tensor[0, rows:].reshape(h, w, channels)


def from_grid(pos: PositionGrid, layout: str) -> np.ndarray:
    """Write a grid back into ``layout`` (float64; the caller rounds once to the checkpoint's dtype)."""
    prefix = np.asarray(pos.prefix, dtype=np.float64).reshape(-1, pos.grid.shape[-1])
    tensor, view = layout_buffer(layout, pos.size, prefix)
    view[...] = pos.grid
    return tensor


def parse_size(text: str) -> Size:
    """``"448"`` -> ``(448, 448)``; ``"448x640"`` -> ``(448, 640)`` (height x width)."""
    parts = text.lower().replace(",", "x").split("x")
    shown = text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"
    try:
        values = tuple(int(p) for p in parts)
    except ValueError as exc:
        raise AbswinError(f"cannot read size {shown!r}; write N or HxW, e.g. 448 or 448x640") from exc
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise AbswinError(f"cannot read size {shown!r}; write N or HxW, e.g. 448 or 448x640")
    return checked_size((values[0], values[1]), shown)


def checked_size(size: Size, shown: str) -> Size:
    """``size`` when no side is past ``MAX_SIDE``: a larger number is no image (and overflows the arithmetic that
    would say how much memory it takes)."""
    if max(size) > MAX_SIDE:
        raise AbswinError(f"size {shown} has a side over {MAX_SIDE:,} pixels; no image is that large")
    return size


def as_size(value: int | str | Size | None) -> Size | None:
    """``448``, ``"448x640"``, ``(448, 640)``; None or ``"full"`` stay None (the full grid)."""
    if value is None or value == "full":
        return None
    if isinstance(value, str):
        return parse_size(value)
    size = (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
    return checked_size(size, str(value)[:40])


def format_size(size: Size) -> str:
    return f"{size[0]}x{size[1]}"
