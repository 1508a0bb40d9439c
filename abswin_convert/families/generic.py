"""A family we do not know: the user names the position tensor (``--key``), its layout and the window.

Also home of the split-and-bake recipe the families without a recipe of their own share: split the grid into its
window-periodic part and a global part, resize the global part (plain bicubic unless the family says otherwise),
tile the window part (anchored top-left, partial tiles cropped) and write the result back under the same key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..checkpoint import Checkpoint
from ..errors import AbswinError
from ..grid import LAYOUTS, format_size, grid_size_of, parse_size
from ..plan import Plan
from ..resize import BICUBIC, Size
from . import base
from .base import ConvertRequest, Detection

name = "generic"


@dataclass(frozen=True)
class Overrides:
    """What the user said about a checkpoint: ``--key``, ``--layout``, ``--window``, ``--patch-stride``."""

    key: str | None = None
    layout: str | None = None
    window: Size | None = None
    patch_stride: int | None = None

    @classmethod
    def parse(cls, key: str | None = None, layout: str | None = None, window: str | Size | None = None,
              patch_stride: int | None = None) -> Overrides:
        """From CLI strings: ``window`` as ``N`` or ``HxW``."""
        if isinstance(window, str):
            window = parse_size(window)
        if patch_stride is not None and patch_stride <= 0:
            raise AbswinError(f"--patch-stride must be a positive number of pixels, found {patch_stride}")
        return cls(key, layout, window, patch_stride)

    @property
    def names_tensor(self) -> bool:
        """The user describes the position tensor itself: only the generic family reads it that way."""
        return self.key is not None or self.layout is not None

    def apply(self, det: Detection) -> Detection:
        """A detected family's findings with the user's window and patch stride put in."""
        return replace(det, window=self.window or det.window, patch_stride=self.patch_stride or det.patch_stride)


def detect(ckpt: Checkpoint, overrides: Overrides | None = None) -> Detection:
    """The position tensor the user named, read as they said. Never guesses: auto-detection skips this family."""
    overrides = overrides or Overrides()
    missing = [flag for flag, value in (("--key", overrides.key), ("--layout", overrides.layout),
                                        ("--window", overrides.window)) if value is None]
    if missing:
        raise AbswinError(f"a checkpoint of a family we do not know needs --key, --layout and --window; missing {', '.join(missing)}")
    if overrides.key not in ckpt:
        raise AbswinError(f"--key {overrides.key!r} is not in {ckpt.path.name}; {position_candidates(ckpt)}")
    if overrides.layout not in LAYOUTS:
        raise AbswinError(f"unknown layout {overrides.layout!r}; use one of {', '.join(LAYOUTS)}")
    prefix = 1 if overrides.layout == "flat_cls" else 0
    grid = grid_size_of(ckpt.shape(overrides.key), overrides.layout, prefix)
    stride = overrides.patch_stride or _patch_stride(ckpt)
    # We cannot know whether the runtime pads to whole windows, so the output grid must be whole windows.
    return Detection(name, "override", overrides.key, overrides.layout, grid, overrides.window, stride, BICUBIC,
                     ("baked",), prefix_tokens=prefix)


def _patch_stride(ckpt: Checkpoint) -> int:
    """The kernel of the patch embedding (a ViT's stride), when there is exactly one square patch conv."""
    kernels = {ckpt.shape(k)[-1] for k in ckpt.keys()
               if "patch" in k and k.endswith("weight") and len(ckpt.shape(k)) == 4 and ckpt.shape(k)[-1] == ckpt.shape(k)[-2]}
    if len(kernels) != 1:
        raise AbswinError("cannot read the patch stride from the checkpoint; pass --patch-stride (e.g. 16)")
    return kernels.pop()


def position_candidates(ckpt: Checkpoint, limit: int = 6) -> str:
    """A short list of the tensors that look like position embeddings, for error messages."""
    found = [f"{k} {list(ckpt.shape(k))}" for k in ckpt.keys() if "pos" in k.lower() and len(ckpt.shape(k)) >= 3]
    if not found:
        return "no tensor looks like a position embedding"
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    return f"tensors that look like position embeddings: {', '.join(found[:limit])}{more}"


def require_target(det: Detection, target: str) -> None:
    if target not in det.targets:
        raise AbswinError(f"target {target!r} is not available for {det.family} ({det.format}); use {', '.join(det.targets)}")


def require_square(det: Detection, img_size: Size, runtime: str) -> None:
    """Runtimes whose image size is one int build square grids only."""
    if img_size[0] != img_size[1]:
        raise AbswinError(
            f"{runtime} builds square models only (its image size is one int); "
            f"pass a square --img-size such as {max(img_size)}, not {format_size(img_size)}"
        )


def size_arg(img_size: Size) -> str:
    """``img_size`` as a model constructor takes it: ``1024``, or ``(512, 768)`` when not square."""
    return str(img_size[0]) if img_size[0] == img_size[1] else f"({img_size[0]}, {img_size[1]})"


def baked_plan(ckpt: Checkpoint, det: Detection, request: ConvertRequest) -> Plan:
    """Split, fit the global part, and bake the embedding for ``request.img_size`` under the same key."""
    require_target(det, request.target)
    out_grid = base.output_grid(det, request.img_size)
    pos = base.read_position(ckpt, det)
    parts = base.decompose(pos.grid, det, request.global_size)
    result = Plan(stats=base.decomposition_stats(det, parts, request))
    result.replace[det.pos_key] = base.bake(parts, det, pos.prefix, out_grid).to(ckpt.dtype(det.pos_key))
    return result


def plan(ckpt: Checkpoint, det: Detection, request: ConvertRequest) -> Plan:
    """The embedding baked for the new size; nothing else in the checkpoint is touched."""
    result = baked_plan(ckpt, det, request)
    result.notes.append(
        f"only {det.pos_key} was rewritten ({det.layout}, window {format_size(det.window)}, tiles anchored top-left); "
        "build the model for the new input size and load with strict=True"
    )
    return result
