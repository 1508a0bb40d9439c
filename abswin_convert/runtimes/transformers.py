"""transformers: a ``config.json`` with ``model_type``, built through the Auto classes."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import AbswinError


def is_transformers_config(config: dict) -> bool:
    return "model_type" in config


def create_classifier(config: dict, img_size: int) -> tuple[torch.nn.Module, Any]:
    """An image classifier for square ``img_size`` images (random weights) and the config it was built from."""
    from transformers import AutoConfig, AutoModelForImageClassification

    try:
        hf_config = AutoConfig.for_model(**{**config, "image_size": [img_size, img_size]})
        return AutoModelForImageClassification.from_config(hf_config), hf_config
    except (ValueError, KeyError, TypeError) as exc:
        raise AbswinError(f"transformers cannot build an image classifier from this config.json ({exc})") from exc
