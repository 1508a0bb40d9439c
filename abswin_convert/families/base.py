"""What every family shares: the ``Family`` interface, the detection record, the request, and the steps of a
conversion (read the position grid, split it, fit the global part, bake it for a new size).

A family answers four questions: is this checkpoint mine (``detect``), where are its position tensors and how are
they laid out (the ``Detection``), what resize does its runtime apply (``Detection.resize``), and which tensor
edits and config change go with a new size (``plan``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import AbswinError
from ..io.checkpoint import Checkpoint
from ..io.provenance import ONE_WINDOW
from ..io.tensors import RawTensor
from ..maths import absolute_win as aw
from ..maths.grid import PositionGrid, as_size, format_size, layout_buffer, to_grid
from ..maths.resize import Resize, Size
from ..plan import Plan
from ..vocabulary import BAKED, SAM2_TRUNK, SAM2_WINDOW_KEY, TIMM_ABSWIN, TIMM_WINDOW_KEY
from . import window_change

if TYPE_CHECKING:
    from .overrides import Overrides
    from .window_change import WindowChange

# The Hub library that runs each target other than ``baked``, and each source spelling whose runtime loads a baked
# output as it is; any other output is run by its family's own library.
TARGET_LIBRARIES = {TIMM_ABSWIN: "timm", SAM2_TRUNK: "sam2"}
SPELLING_LIBRARIES = {"timm": "timm", TIMM_ABSWIN: "timm", "transformers": "transformers"}
TARGET_TASKS = {SAM2_TRUNK: "mask-generation"}  # a target whose models do another task than the family's own
UNKNOWN_STRIDE = 0  # a patch embedding that does not show its patch size (a Linear): --patch-stride must say it


def holds_window_part(ckpt: Checkpoint) -> bool:
    """Whether the checkpoint is already split into absolute-win parts (a separate window tensor)."""
    return any(key.endswith((TIMM_WINDOW_KEY, SAM2_WINDOW_KEY)) for key in ckpt.keys())


@dataclass(frozen=True)
class Detection:
    """What a family recognised in a checkpoint."""

    family: str  # "hiera", "sam", ...
    spelling: str  # how the source names its tensors within its family: "official", "timm", "transformers", ...
    pos_key: str  # the position tensor that carries the window pattern (the global part of a split checkpoint)
    layout: str  # see grid.LAYOUTS
    grid: Size  # token grid the model runs at, at its native input size
    window: Size  # window in tokens
    patch_stride: int
    resize: Resize  # how this family's absolute-win runtime resizes the global part
    targets: tuple[str, ...]
    prefix_tokens: int = 0
    pads_windows: bool = False  # the runtime pads the grid to whole windows (SAM, ViTDet): any whole patch count works
    window_key: str | None = None  # the window part of an already-split (absolute-win) checkpoint
    key_prefix: str = ""  # where the model's own names start (SAM2 trunk, transformers' ``hiera.``)
    global_blocks: tuple[int, ...] = ()  # blocks with global attention whose relative-position tables follow the grid
    rel_pos_tables: int = 0
    recipe: str | None = None  # how a family without a window pattern of its own gets one (ViTDet)
    global_attention: bool = False  # a plain ViT: every block attends over the whole grid, no window pattern
    tile_requested: bool = False  # the user asked for the ViTDet recipe (--recipe tile, or a --window on a plain ViT)

    @property
    def tiles(self) -> int:
        """How many windows cover the native grid; window energy is defined only from two on."""
        return -(-self.grid[0] // self.window[0]) * -(-self.grid[1] // self.window[1])

    @property
    def native_input(self) -> Size:
        return (self.grid[0] * self.patch_stride, self.grid[1] * self.patch_stride)

    def details(self, ckpt: Checkpoint) -> dict[str, str | int]:
        """The family-specific facts, as ``inspect`` reports them."""
        found: dict[str, str | int] = {}
        if self.window_key is not None:
            found["window_key"] = self.window_key
            found["global_grid"] = format_size(to_grid_size(ckpt, self.pos_key))
        if self.key_prefix:
            found["prefix"] = self.key_prefix
        if self.rel_pos_tables:
            found["global_blocks"] = str(list(self.global_blocks))
            found["rel_pos_tables"] = self.rel_pos_tables
        if self.recipe:
            found["recipe"] = self.recipe
        return found


@dataclass(frozen=True)
class ConvertRequest:
    """What the user asked for."""

    img_size: Size
    target: str = BAKED
    global_size: Size | None = None  # None: the full grid (exact)
    window_change: WindowChange | None = None  # --window-size: the one change to what the model computes

    @classmethod
    def parse(cls, img_size: int | str | Size, target: str = BAKED, global_size: int | str | Size | None = None,
              window_change: WindowChange | None = None) -> ConvertRequest:
        """As a caller writes it: sizes as ``448``, ``"448x640"`` or ``(448, 640)``; ``global_size`` also ``"full"``."""
        size = as_size(img_size)
        if size is None:
            raise AbswinError("the input size to convert for must be a size such as 448 or 448x640, not 'full'")
        return cls(size, target, as_size(global_size), window_change)


Planner = Callable[[Checkpoint, Detection, ConvertRequest], Plan]
Detector = Callable[[Checkpoint, "Overrides"], Detection | None]  # the overrides: what the user said of the tensor


@dataclass(frozen=True)
class ExtraTarget:
    """A target one family's checkpoints can become beside their own (a Hiera image checkpoint as a SAM2 trunk)."""

    name: str
    applies: Callable[[Detection], bool]
    plan: Planner


@dataclass(frozen=True)
class Family:
    """A checkpoint family, as the registry holds it: how it recognises and converts a checkpoint, and what runs
    its outputs (the model card, the vocabulary and verify ask it)."""

    name: str
    detect: Detector
    plan: Planner
    library: str  # the Hub library of the family's own runtime
    task: str | None  # the Hub task (pipeline tag) of its models; None: we cannot tell
    extra_targets: tuple[ExtraTarget, ...] = ()
    auto_detected: bool = True  # False: chosen only when named (the generic family)

    def extra_target(self, det: Detection, name: str) -> ExtraTarget | None:
        """The extra target ``name`` when it applies to ``det``."""
        return next((t for t in self.extra_targets if t.name == name and t.applies(det)), None)

    def runtime_library(self, spelling: str, target: str) -> str:
        """The Hub library that loads an output: the target's runtime, else the source format's, else the family's."""
        return TARGET_LIBRARIES.get(target) or SPELLING_LIBRARIES.get(spelling) or self.library

    def runtime_task(self, target: str) -> str | None:
        return TARGET_TASKS.get(target) or self.task


def from_checkpoint_alone(detect: Callable[[Checkpoint], Detection | None]) -> Detector:
    """A family's detect that reads the checkpoint only; the registry puts the user's overrides in afterwards."""
    return lambda ckpt, _overrides: detect(ckpt)


@dataclass
class Decomposition:
    """A position grid as window part + fitted global part, with how well that fits."""

    window: np.ndarray  # [wh, ww, C], float64
    global_: np.ndarray  # [gh, gw, C], float64
    residual: float  # relative residual of the global fit at the native size
    energy: float  # normalised window energy of the source grid


# --- checks every family makes -------------------------------------------------------------------------------


def require_target(det: Detection, target: str) -> None:
    if target not in det.targets:
        raise AbswinError(
            f"target {target!r} is not available for {det.family} ({det.spelling}); use one of {', '.join(det.targets)}"
        )


def require_square(img_size: Size, runtime: str) -> None:
    """Runtimes whose image size is one int build square grids only."""
    if img_size[0] != img_size[1]:
        raise AbswinError(
            f"{runtime} builds square models only (its image size is one int); "
            f"pass a square --img-size such as {max(img_size)}, not {format_size(img_size)}"
        )


def require_window_within_grid(det: Detection) -> Detection:
    """A window is never larger than the grid: at a model's own size a conversion must change nothing."""
    if det.window[0] > det.grid[0] or det.window[1] > det.grid[1]:
        raise AbswinError(
            f"window {format_size(det.window)} is larger than the {format_size(det.grid)} token grid of "
            f"{det.family} ({det.spelling}); pass --window {format_size(det.grid)} or smaller"
        )
    return det


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


def size_arg(img_size: Size) -> str:
    """``img_size`` as a model constructor takes it: ``1024``, or ``(512, 768)`` when not square."""
    return str(img_size[0]) if img_size[0] == img_size[1] else f"({img_size[0]}, {img_size[1]})"


# --- reading and splitting ------------------------------------------------------------------------------------


def to_grid_size(ckpt: Checkpoint, key: str) -> Size:
    """The ``(H, W)`` of an NCHW absolute-win part."""
    shape = ckpt.shape(key)
    return (shape[-2], shape[-1])


def read_position(ckpt: Checkpoint, det: Detection, key: str | None = None, layout: str | None = None) -> PositionGrid:
    """The detected position tensor (or the split part ``key`` in ``layout``) as a float64 grid; NaN/Inf refused."""
    key = key or det.pos_key
    values = ckpt.tensor(key).float64()
    if not np.isfinite(values).all():
        raise AbswinError(f"{key} holds NaN or Inf values; refusing to convert a broken embedding")
    if layout is not None:
        return to_grid(values, layout)
    return to_grid(values, det.layout, det.prefix_tokens, det.grid)


def read_window(ckpt: Checkpoint, det: Detection) -> np.ndarray | None:
    """The window part ``[wh, ww, C]`` of an already-split checkpoint, else None."""
    if det.window_key is None:
        return None
    return read_position(ckpt, det, det.window_key, "nchw").grid


def native_grid(ckpt: Checkpoint, det: Detection) -> np.ndarray:
    """The embedding the model adds at its native size: split checkpoints are composed as their runtime does."""
    grid = read_position(ckpt, det).grid
    window = read_window(ckpt, det)
    return grid if window is None else aw.compose(window, grid, det.grid, det.resize)


def decompose(grid: np.ndarray, det: Detection, global_size: Size | None) -> Decomposition:
    """Split into window + global, and fit the global part to ``global_size`` through the runtime's resize."""
    window, global_ = aw.split(grid, det.window)
    fitted, residual = aw.fit_global(global_, global_size or det.grid, det.resize)
    return Decomposition(window, fitted, residual, aw.normalized_window_energy(grid, det.window, means=window))


def refit_split(window: np.ndarray, global_: np.ndarray, det: Detection, global_size: Size | None) -> Decomposition:
    """Parts of an already-split checkpoint. Asked for another global size, the global part is refitted to its
    own resize at the native grid and the learned window part is kept, so the same size gives back the same parts."""
    residual = 0.0
    if global_size and tuple(global_size) != tuple(global_.shape[:2]):
        global_, residual = aw.fit_global(det.resize.apply(global_, det.grid), global_size, det.resize)
    composed = aw.compose(window, global_, det.grid, det.resize)
    return Decomposition(window, global_, residual, aw.normalized_window_energy(composed, det.window))


def read_parts(ckpt: Checkpoint, det: Detection, global_size: Size | None) -> tuple[Decomposition, np.ndarray]:
    """Window + global parts and the prefix tokens: split from one embedding, or read from a split checkpoint."""
    window = read_window(ckpt, det)
    pos = read_position(ckpt, det)
    if window is None:
        return decompose(pos.grid, det, global_size), pos.prefix
    return refit_split(window, pos.grid, det, global_size), pos.prefix


# --- writing --------------------------------------------------------------------------------------------------


def bake(parts: Decomposition, det: Detection, prefix: np.ndarray, size: Size, layout: str | None = None) -> np.ndarray:
    """The composed embedding at ``size`` in ``layout`` (the family's own by default), float64."""
    tensor, grid = layout_buffer(layout or det.layout, size, prefix)
    aw.compose(parts.window, parts.global_, size, det.resize, out=grid)  # computed in place: no second copy
    return tensor


def nchw(grid: np.ndarray) -> np.ndarray:
    """``[H, W, C]`` -> ``[1, C, H, W]``, the layout of split absolute-win parameters."""
    return np.ascontiguousarray(grid.transpose(2, 0, 1)[None])


def decomposition_stats(det: Detection, parts: Decomposition, request: ConvertRequest) -> dict[str, str]:
    """Provenance entries every conversion records."""
    return {
        "family": det.family,
        "format": det.spelling,
        "target": request.target,
        "position_key": det.pos_key,
        "native_input": format_size(det.native_input),
        "img_size": format_size(request.img_size),
        "window": format_size(det.window),
        "global_size": format_size(aw.grid_size(parts.global_)),
        "resize": det.resize.name,
        "residual": f"{parts.residual:.6g}",
        "window_energy": f"{parts.energy:.6g}" if det.tiles >= 2 else ONE_WINDOW,
    }


def is_identity(det: Detection, out_grid: Size, request: ConvertRequest) -> bool:
    """Whether baking for ``out_grid`` gives back the source embedding: one embedding (not split) baked at its own
    grid with its global part at its own size, its window part not re-windowed. The source tensor then passes
    through as it is, the same bits: the float64 split and sum would round (a row of float32-max values moves the
    values beside it)."""
    native = tuple(det.grid)
    rewindowed = window_change.rewindowed_part(request.window_change)
    return (det.window_key is None and not rewindowed and tuple(out_grid) == native
            and tuple(request.global_size or native) == native)


def baked_plan(ckpt: Checkpoint, det: Detection, request: ConvertRequest) -> Plan:
    """Split, fit the global part, and bake the embedding for ``request.img_size`` under the same key."""
    require_target(det, request.target)
    out_grid = output_grid(det, request.img_size)
    parts, prefix = read_parts(ckpt, det, request.global_size)  # the source grid is freed once split
    parts = window_change.rewindowed(parts, det, request.window_change)
    result = Plan(stats=decomposition_stats(det, parts, request))
    if not is_identity(det, out_grid, request):
        result.replace[det.pos_key] = RawTensor.encode(bake(parts, det, prefix, out_grid), ckpt.dtype(det.pos_key))
    return result
