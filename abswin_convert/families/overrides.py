"""What the user says about a checkpoint: ``--key``, ``--layout``, ``--window``, ``--patch-stride``."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import AbswinError
from ..maths.grid import parse_size
from ..maths.resize import Size
from .base import Detection


@dataclass(frozen=True)
class Overrides:
    """``key``/``layout`` describe the position tensor of a family we do not know (the generic family reads it);
    ``window`` and ``patch_stride`` correct what a detected family found."""

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
