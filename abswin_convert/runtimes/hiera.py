"""The official ``hiera-transformer`` package: its hub-mixin ``config.json`` holds the constructor's arguments."""

from __future__ import annotations

import warnings
from types import ModuleType

import torch

from ..errors import AbswinError


def is_hiera_config(config: dict) -> bool:
    return "embed_dim" in config and "stages" in config


def create(config: dict, img_size: int) -> torch.nn.Module:
    """``hiera.Hiera`` for square ``img_size`` images, random weights."""
    hiera = import_hiera()

    if len(config.get("input_size", (224, 224))) != 2:
        raise AbswinError("this official Hiera config is for video; eval and finetune take image classifiers")
    try:
        return hiera.Hiera(**{**config, "input_size": (img_size, img_size)})
    except (RuntimeError, AssertionError, TypeError) as exc:
        raise AbswinError(f"official Hiera cannot be built at {img_size} px ({exc})") from exc


def import_hiera() -> ModuleType:
    """The ``hiera`` package, without the FutureWarning timm raises at its import of ``timm.models.layers`` (the
    package's, not the user's, to fix)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Importing from timm.models.layers is deprecated", FutureWarning)
        import hiera
    return hiera
