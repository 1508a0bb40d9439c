"""What the user says about a checkpoint: ``--key``, ``--layout``, ``--window``, ``--patch-stride``, ``--recipe``."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import AbswinError
from ..maths.grid import parse_size
from ..maths.resize import Size
from .base import Detection, require_window_within_grid

TILE = "tile"  # the ViTDet recipe: the pretrained grid tiled into the windows of a ViTDet backbone
RECIPES = (None, TILE)


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
        return require_window_within_grid(det)
