"""Checks of what was written against the real upstream runtime (timm), and against the source itself.

These need timm (an optional dependency, installed by the ``test`` extra); the maths check needs nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .absolute_win import compose
from .checkpoint import Checkpoint, open_checkpoint
from .errors import AbswinError
from .families import hiera
from .families.base import read_position, read_window


def native_error(source: Checkpoint, source_det: hiera.Detection, output: Path) -> float:
    """Max abs difference between the source embedding and the written window + global parts composed
    at the native size: 0 (to float precision) when the conversion is exact there."""
    out = open_checkpoint(output)
    out_det = hiera.detect(out)
    if out_det is None or out_det.format != "timm-abswin":
        raise AbswinError(f"{output} holds no split absolute-win embedding to check")
    window, global_ = read_window(out, out_det), read_position(out, out_det).grid
    composed = compose(window, global_, source_det.grid, out_det.resize)
    return float((composed - read_position(source, source_det).grid).abs().max())


def load_state(path: Path) -> dict[str, torch.Tensor]:
    ckpt = open_checkpoint(path)
    return {k: ckpt.tensor(k) for k in ckpt.keys()}


def timm_model(architecture: str, model_args: dict, state: dict[str, torch.Tensor] | None = None, **size_args) -> torch.nn.Module:
    """Build a timm model (random weights) and, when given, load ``state`` with ``strict=True``."""
    import timm

    model = timm.create_model(architecture, pretrained=False, **model_args, **size_args)
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model.eval()


@torch.no_grad()
def max_logit_difference(a: torch.nn.Module, b: torch.nn.Module, img_size: int, seed: int = 0, channels: int = 3) -> float:
    """Max abs difference of two models' outputs on the same random batch."""
    x = torch.randn(2, channels, img_size, img_size, generator=torch.Generator().manual_seed(seed))
    return float((a(x) - b(x)).abs().max())
