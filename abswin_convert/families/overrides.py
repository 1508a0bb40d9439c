"""What the user says about a checkpoint: ``--key``, ``--layout``, ``--window``, ``--patch-stride``, ``--recipe``."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import AbswinError
from ..maths.grid import format_size, parse_size
from ..maths.resize import Size
from .base import UNKNOWN_STRIDE, Detection, require_window_within_grid

TILE = "tile"  # the ViTDet recipe: the pretrained grid tiled into the windows of a ViTDet backbone
RECIPES = (None, TILE)
RECIPE_FLAG = f"--recipe {TILE}"
RECIPE_HELP = "README: Which recipe for a plain ViT?"


@dataclass(frozen=True)
class Overrides:
    """``key``/``layout`` describe the position tensor of a family we do not know (the generic family reads it);
    ``window`` and ``patch_stride`` correct what a detected family found; ``recipe="tile"`` asks for the ViTDet
    recipe on a plain global-attention ViT (so does an explicit ``window``)."""

    key: str | None = None
    layout: str | None = None
    window: Size | None = None
    patch_stride: int | None = None
    recipe: str | None = None

    @classmethod
    def parse(cls, key: str | None = None, layout: str | None = None, window: str | Size | None = None,
              patch_stride: int | None = None, recipe: str | None = None) -> Overrides:
        """From CLI strings: ``window`` as ``N`` or ``HxW``."""
        if isinstance(window, str):
            window = parse_size(window)
        if patch_stride is not None and patch_stride <= 0:
            raise AbswinError(f"--patch-stride must be a positive number of pixels, found {patch_stride}")
        if recipe not in RECIPES:
            raise AbswinError(f"unknown --recipe {recipe!r}; the one recipe is {RECIPES[1]}")
        return cls(key, layout, window, patch_stride, recipe)

    @property
    def names_tensor(self) -> bool:
        """The user describes the position tensor itself: only the generic family reads it that way."""
        return self.key is not None or self.layout is not None

    def apply(self, det: Detection) -> Detection:
        """A detected family's findings with the user's window, patch stride and recipe put in. A window is never
        larger than the grid: a model's own size must stay a conversion that changes nothing."""
        if self.recipe is not None and det.recipe is None:
            raise AbswinError(
                f"--recipe {self.recipe} is for ViTs; {det.family} ({det.spelling}) has windows of its own, drop --recipe"
            )
        tiled = self.recipe == TILE or (det.global_attention and self.window is not None)
        det = replace(det, window=self.window or det.window, patch_stride=self.patch_stride or det.patch_stride,
                      tile_requested=tiled)
        if det.patch_stride == UNKNOWN_STRIDE:
            recipe = f", and {RECIPE_FLAG} to convert it ({RECIPE_HELP})" if det.global_attention and not tiled else ""
            raise AbswinError(
                f"{det.pos_key} is a plain ViT's embedding ({det.grid[0]}x{det.grid[1]} grid) whose patch embedding "
                f"does not show its patch size; pass --patch-stride PIXELS{recipe}"
            )
        return require_window_within_grid(det)


def refuse_plain(det: Detection) -> None:
    """A plain ViT attends globally: its runtime's own interpolation of the embedding is right for it. So is any grid
    that is one window, whoever named it: tiling it is the ViTDet recipe, which must be asked for."""
    if det.global_attention and not det.tile_requested:
        g = format_size(det.grid)
        described = det.spelling == "override"  # --key/--layout/--window: the user's window is the whole grid
        what = (f"a plain ViT (its {g} grid is one window)" if described
                else f"a plain global-attention ViT ({det.spelling}, {g} grid)")
        raise AbswinError(
            f"{det.pos_key} belongs to {what}: it has no window pattern to protect, and its runtime's own "
            f"interpolation is right for it; pass {RECIPE_FLAG} to tile the pretrained grid into the windows of a "
            f"ViTDet backbone ({RECIPE_HELP})"
        )
