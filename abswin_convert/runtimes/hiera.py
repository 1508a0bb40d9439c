"""The official ``hiera-transformer`` package: its hub-mixin ``config.json`` holds the constructor's arguments."""

from __future__ import annotations

import torch

from ..errors import AbswinError


def is_hiera_config(config: dict) -> bool:
    return "embed_dim" in config and "stages" in config


def create(config: dict, img_size: int) -> torch.nn.Module:
    """``hiera.Hiera`` for square ``img_size`` images, random weights."""
    import hiera

    if len(config.get("input_size", (224, 224))) != 2:
        raise AbswinError("this official Hiera config is for video; eval and finetune take image classifiers")
    try:
        return hiera.Hiera(**{**config, "input_size": (img_size, img_size)})
    except (RuntimeError, AssertionError, TypeError) as exc:
        raise AbswinError(f"official Hiera cannot be built at {img_size} px ({exc})") from exc
