"""What every family shares: the detection record, the request, and the decompose/bake steps."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

from .. import absolute_win as aw
from ..checkpoint import Checkpoint
from ..errors import AbswinError
from ..grid import PositionGrid, format_size, from_grid, to_grid
from ..plan import Plan
from ..resize import Resize, Size

TARGETS = ("baked", "timm-abswin", "sam2")


@dataclass(frozen=True)
class Detection:
    """What a family recognised in a checkpoint."""

    family: str  # "hiera", "sam", ...
    format: str  # "official", "timm", "transformers", ...
    pos_key: str  # the position tensor that carries the window pattern
    layout: str  # see grid.LAYOUTS
    grid: Size  # token grid of that tensor
    window: Size  # window in tokens
    patch_stride: int
    resize: Resize  # how this family's absolute-win runtime resizes the global part
    targets: tuple[str, ...]
    prefix_tokens: int = 0
    details: dict = field(default_factory=dict)  # family-specific facts (stage depths, video keys, ...)
    pads_windows: bool = False  # the runtime pads the grid to whole windows (SAM, ViTDet): any whole patch count works

    @property
    def native_input(self) -> Size:
        return (self.grid[0] * self.patch_stride, self.grid[1] * self.patch_stride)


@dataclass(frozen=True)
class ConvertRequest:
    """What the user asked for."""

    img_size: Size
    target: str = "baked"
    global_size: Size | None = None  # None: the full grid (exact)


@dataclass
class Decomposition:
    """A position grid as window part + fitted global part, with how well that fits."""

    window: torch.Tensor  # [wh, ww, C]
    global_: torch.Tensor  # [gh, gw, C]
    residual: float  # relative residual of the global fit at the native size
    energy: float  # normalised window energy of the source grid


class Family(Protocol):
    name: str

    def detect(self, ckpt: Checkpoint) -> Detection | None: ...

    def plan(self, ckpt: Checkpoint, det: Detection, request: ConvertRequest) -> Plan: ...


def read_position(ckpt: Checkpoint, det: Detection) -> PositionGrid:
    """The detected position tensor as a float32 grid; NaN or Inf is refused."""
    tensor = ckpt.tensor(det.pos_key)
    if not torch.isfinite(tensor.float()).all():
        raise AbswinError(f"{det.pos_key} holds NaN or Inf values; refusing to convert a broken embedding")
    return to_grid(tensor, det.layout, det.prefix_tokens, det.grid)


def decompose(grid: torch.Tensor, det: Detection, global_size: Size | None) -> Decomposition:
    """Split into window + global, and fit the global part to ``global_size`` through the runtime's resize."""
    window, global_ = aw.split(grid, det.window)
    fitted, residual = aw.fit_global(global_, global_size or det.grid, det.resize)
    return Decomposition(window, fitted, residual, aw.normalized_window_energy(grid, det.window))


def read_window(ckpt: Checkpoint, det: Detection) -> torch.Tensor | None:
    """The window part ``[wh, ww, C]`` of an already-split checkpoint (``details['window_key']``), else None."""
    key = det.details.get("window_key")
    if key is None:
        return None
    return read_position(ckpt, replace(det, pos_key=key, layout="nchw")).grid


def native_grid(ckpt: Checkpoint, det: Detection) -> torch.Tensor:
    """The embedding the model adds at its native size: split checkpoints are composed as their runtime does."""
    grid = read_position(ckpt, det).grid
    window = read_window(ckpt, det)
    return grid if window is None else aw.compose(window, grid, det.grid, det.resize)


def refit_split(window: torch.Tensor, global_: torch.Tensor, det: Detection, global_size: Size | None) -> Decomposition:
    """Parts of an already-split checkpoint. Asked for another global size, the global part is refitted to its
    own resize at the native grid and the learned window part is kept, so the same size gives back the same parts."""
    residual = 0.0
    if global_size and tuple(global_size) != tuple(global_.shape[:2]):
        global_, residual = aw.fit_global(det.resize.apply(global_, det.grid), global_size, det.resize)
    composed = aw.compose(window, global_, det.grid, det.resize)
    return Decomposition(window, global_, residual, aw.normalized_window_energy(composed, det.window))


def output_grid(det: Detection, img_size: Size) -> Size:
    """Token grid at ``img_size``: a whole number of windows of patches, or of patches when the runtime pads."""
    if det.pads_windows:
        step = det.patch_stride, det.patch_stride
        why = f"patch stride {det.patch_stride}; windows are padded, so any whole number of patches works"
    else:
        step = det.patch_stride * det.window[0], det.patch_stride * det.window[1]
        why = f"patch stride {det.patch_stride} x window {format_size(det.window)}"
    if img_size[0] % step[0] or img_size[1] % step[1]:
        raise AbswinError(
            f"--img-size {format_size(img_size)} is not a multiple of {step[0]}x{step[1]} ({why}); "
            f"try {format_size(_round_up(img_size, step))}"
        )
    return (img_size[0] // det.patch_stride, img_size[1] // det.patch_stride)


def _round_up(size: Size, step: Size) -> Size:
    return (-(-size[0] // step[0]) * step[0], -(-size[1] // step[1]) * step[1])


def bake(parts: Decomposition, det: Detection, prefix: torch.Tensor, size: Size, layout: str | None = None) -> torch.Tensor:
    """The composed embedding at ``size`` in ``layout`` (the family's own by default), float32."""
    grid = aw.compose(parts.window, parts.global_, size, det.resize)
    return from_grid(PositionGrid(grid, prefix), layout or det.layout)


def nchw(grid: torch.Tensor) -> torch.Tensor:
    """``[H, W, C]`` -> ``[1, C, H, W]``, the layout of split absolute-win parameters."""
    return grid.permute(2, 0, 1).unsqueeze(0).contiguous()


def decomposition_stats(det: Detection, parts: Decomposition, request: ConvertRequest) -> dict[str, str]:
    """Provenance entries every conversion records."""
    return {
        "family": det.family,
        "format": det.format,
        "target": request.target,
        "position_key": det.pos_key,
        "native_input": format_size(det.native_input),
        "img_size": format_size(request.img_size),
        "window": format_size(det.window),
        "global_size": format_size(tuple(parts.global_.shape[:2])),
        "resize": det.resize.name,
        "residual": f"{parts.residual:.6g}",
        "window_energy": f"{parts.energy:.6g}",
    }
