"""Build a classifier from a checkpoint's own family and config, at a requested input size.

The config beside the weights says which runtime to build:

- timm (``config.json`` as ``save_config_for_hf`` writes it: ``architecture``, ``num_classes``, ``model_args``,
  ``pretrained_cfg``); a split absolute-win checkpoint (``pos_embed_win`` present) builds timm's abswin Hiera;
- transformers (``config.json`` with ``model_type``, plus ``preprocessor_config.json``);
- the official Hiera ``PyTorchModelHubMixin`` (``config.json`` holding the constructor arguments).

Weights load with ``strict=True``: a checkpoint whose position embedding was made for another size is refused
with a hint to convert it, never silently resized.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import AbswinError
from ..io.checkpoint import Checkpoint, open_checkpoint
from ..io.outputs import config_beside
from ..io.torch_bridge import torch_state_dict
from ..runtimes import hiera as hiera_runtime
from ..runtimes import timm as timm_runtime
from ..runtimes import transformers as transformers_runtime
from ..runtimes.strict import load_strict
from .data import Preprocess

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Pillow resample codes, as transformers' preprocessor_config.json stores them.
_PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


@dataclass
class Classifier:
    """A model ready for ``logits = classifier(x)``, with the preprocessing its checkpoint asks for."""

    model: torch.nn.Module
    preprocess: Preprocess
    runtime: str  # "timm" | "transformers" | "hiera"
    num_classes: int
    config: dict  # the checkpoint's config.json

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x) if self.runtime == "transformers" else self.model(x)
        return out.logits if self.runtime == "transformers" else out


def open_with_config(path: str | Path, config_path: Path | None = None) -> Checkpoint:
    """The checkpoint at ``path`` (a folder, or a weight file with ``config.json`` beside it), config required;
    ``config_path`` names another config.json when the weights have none of their own."""
    path = Path(path)
    ckpt = open_checkpoint(path, config_beside(path) or config_path)
    if not ckpt.config:
        raise AbswinError(f"{path}: no config.json beside the weights; eval and finetune build the model from it")
    return ckpt


def runtime_of(config: dict) -> str:
    """Which runtime a config.json belongs to."""
    if timm_runtime.is_timm_config(config):
        return "timm"
    if transformers_runtime.is_transformers_config(config):
        return "transformers"
    if hiera_runtime.is_hiera_config(config):
        return "hiera"
    raise AbswinError(
        "config.json is neither timm's (architecture), transformers' (model_type) nor the official Hiera's "
        "(embed_dim, stages); cannot tell which model to build"
    )


def load_classifier(path: str | Path, img_size: int, config_path: Path | None = None) -> Classifier:
    """The checkpoint at ``path`` as a classifier for ``img_size`` x ``img_size`` inputs (eval mode, CPU)."""
    ckpt = open_with_config(path, config_path)
    config = ckpt.config or {}
    runtime = runtime_of(config)
    state = torch_state_dict(ckpt)
    builder = {"timm": _timm, "transformers": _transformers, "hiera": _official_hiera}[runtime]
    model, preprocess, num_classes = builder(config, state, img_size, ckpt.path.parent)
    load_strict(model, state, f"the model built from config.json at {img_size} px for {ckpt.path}",
                f"; if the position embedding is for another size, run abswin-convert convert --img-size {img_size} first")
    return Classifier(model, preprocess, runtime, num_classes, config)


def timm_preprocess(config: dict, img_size: int) -> Preprocess:
    cfg = config.get("pretrained_cfg", {})
    channels = int(config.get("model_args", {}).get("in_chans") or cfg.get("input_size", [3])[0])
    return Preprocess(
        img_size, channels, tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)),
        cfg.get("interpolation", "bicubic"), float(cfg.get("crop_pct", 0.875)),
    )


def _timm(config: dict, state: dict, img_size: int, folder: Path) -> tuple[torch.nn.Module, Preprocess, int]:
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    model = timm_runtime.create(config["architecture"], timm_runtime.model_kwargs(config, img_size, shapes))
    return model, timm_preprocess(config, img_size), int(config["num_classes"])


def _official_hiera(config: dict, state: dict, img_size: int, folder: Path) -> tuple[torch.nn.Module, Preprocess, int]:
    model = hiera_runtime.create(config, img_size)
    channels = int(config.get("in_chans", 3))
    preprocess = Preprocess(img_size, channels, IMAGENET_MEAN[:channels], IMAGENET_STD[:channels], "bicubic", 0.875)
    return model, preprocess, int(config.get("num_classes", 1000))


def _transformers(config: dict, state: dict, img_size: int, folder: Path) -> tuple[torch.nn.Module, Preprocess, int]:
    model, hf_config = transformers_runtime.create_classifier(config, img_size)
    return model, _hf_preprocess(folder, img_size, int(getattr(hf_config, "num_channels", 3))), int(hf_config.num_labels)


def _hf_preprocess(folder: Path, img_size: int, channels: int) -> Preprocess:
    """transformers' ``preprocessor_config.json`` as our preprocessing (defaults when it is missing)."""
    path = folder / "preprocessor_config.json"
    cfg = json.loads(path.read_text()) if path.is_file() else {}
    size, crop = cfg.get("size") or {}, cfg.get("crop_size") or {}
    crop_pct = cfg.get("crop_pct")
    if crop_pct is None and cfg.get("do_center_crop") and "shortest_edge" in size and crop.get("height"):
        crop_pct = crop["height"] / size["shortest_edge"]
    return Preprocess(
        img_size, channels, tuple(cfg.get("image_mean", IMAGENET_MEAN)), tuple(cfg.get("image_std", IMAGENET_STD)),
        _PIL_RESAMPLE.get(cfg.get("resample", 3), "bicubic"), float(crop_pct or 1.0),
    )
