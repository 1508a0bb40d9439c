"""The resize a runtime applies to a position grid, as a value.

A decomposition is exact at the native size only when it uses the same resize as the model that loads it:
timm's Hiera abswin resizes with antialiased bicubic, SAM2 / detectron2 / transformers with plain bicubic.
All of them use ``align_corners=False``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

Size = tuple[int, int]


@dataclass(frozen=True)
class Resize:
    """Bicubic resize with ``align_corners=False``, with or without antialiasing."""

    antialias: bool

    @property
    def name(self) -> str:
        return "bicubic-antialias" if self.antialias else "bicubic"

    def apply(self, grid: torch.Tensor, size: Size) -> torch.Tensor:
        """Resize a ``[H, W, C]`` grid to ``[h, w, C]`` exactly as the runtime does (in float32)."""
        nchw = grid.permute(2, 0, 1).unsqueeze(0).float()
        out = F.interpolate(nchw, size=tuple(size), mode="bicubic", align_corners=False, antialias=self.antialias)
        return out[0].permute(1, 2, 0)

    def matrix(self, n_in: int, n_out: int) -> torch.Tensor:
        """The 1-D operator ``[n_out, n_in]``: column k is the resize of the k-th one-hot signal.

        Bicubic resizing is separable, so the 2-D operator is ``R_h (x) R_w`` (checked in the tests).
        """
        # A few identical columns, not one: the antialiased kernel mishandles a width-1 axis.
        basis = torch.eye(n_in, dtype=torch.float32).reshape(n_in, 1, n_in, 1).repeat(1, 1, 1, 4)
        out = F.interpolate(basis, size=(n_out, 4), mode="bicubic", align_corners=False, antialias=self.antialias)
        return out[:, 0, :, 0].T.double()


BICUBIC = Resize(antialias=False)
BICUBIC_ANTIALIAS = Resize(antialias=True)

