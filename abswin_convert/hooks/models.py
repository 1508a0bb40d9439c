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

from ..checkpoint import Checkpoint, open_checkpoint
from ..errors import AbswinError
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
    beside = path / "config.json" if path.is_dir() else path.parent / "config.json"
    if beside.is_file() or config_path is None:
        config_path = beside if beside.is_file() else None
    ckpt = open_checkpoint(path, config_path)
    if not ckpt.config:
        raise AbswinError(f"{path}: no config.json beside the weights; eval and finetune build the model from it")
    return ckpt


def runtime_of(config: dict) -> str:
    """Which runtime a config.json belongs to."""
    if "architecture" in config:
        return "timm"
    if "model_type" in config:
        return "transformers"
    if "embed_dim" in config and "stages" in config:
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
    state = {k: ckpt.tensor(k) for k in ckpt.keys()}
    builder = {"timm": _timm, "transformers": _transformers, "hiera": _official_hiera}[runtime]
    model, preprocess, num_classes = builder(config, state, img_size, ckpt.path.parent)
    _load_strict(model, state, ckpt.path, img_size)
    return Classifier(model.eval(), preprocess, runtime, num_classes, config)


def _load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, img_size: int) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3])[:300]
        raise AbswinError(
            f"{path}: the weights do not fit the model built from config.json at {img_size} px ({detail}); "
            f"if the position embedding is for another size, run abswin-convert convert --img-size {img_size} first"
        ) from None


def timm_args(config: dict, state: dict[str, torch.Tensor], img_size: int) -> dict:
    """``timm.create_model`` keyword arguments for this checkpoint at ``img_size``."""
    args = {**config.get("model_args", {}), "num_classes": config["num_classes"], "img_size": img_size}
    if "pos_embed_win" in state:  # split absolute win: the global part's size comes from the weights
        args.update(abs_win_pos_embed=True, global_pos_size=tuple(state["pos_embed"].shape[-2:]))
    return args


def timm_preprocess(config: dict, img_size: int) -> Preprocess:
    cfg = config.get("pretrained_cfg", {})
    channels = int(config.get("model_args", {}).get("in_chans") or cfg.get("input_size", [3])[0])
    return Preprocess(
        img_size, channels, tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)),
        cfg.get("interpolation", "bicubic"), float(cfg.get("crop_pct", 0.875)),
    )


def _timm(config: dict, state: dict, img_size: int, folder: Path):
    import timm

    args = timm_args(config, state, img_size)
    try:
        model = timm.create_model(config["architecture"], pretrained=False, **args)
    except (RuntimeError, AssertionError, TypeError, ValueError) as exc:
        raise AbswinError(f"timm cannot build {config['architecture']} at {img_size} px ({exc})") from None
    return model, timm_preprocess(config, img_size), int(config["num_classes"])


def _official_hiera(config: dict, state: dict, img_size: int, folder: Path):
    import hiera

    if len(config.get("input_size", (224, 224))) != 2:
        raise AbswinError("this official Hiera config is for video; eval and finetune take image classifiers")
    try:
        model = hiera.Hiera(**{**config, "input_size": (img_size, img_size)})
    except (RuntimeError, AssertionError, TypeError) as exc:
        raise AbswinError(f"official Hiera cannot be built at {img_size} px ({exc})") from None
    channels = int(config.get("in_chans", 3))
    preprocess = Preprocess(img_size, channels, IMAGENET_MEAN[:channels], IMAGENET_STD[:channels], "bicubic", 0.875)
    return model, preprocess, int(config.get("num_classes", 1000))


def _transformers(config: dict, state: dict, img_size: int, folder: Path):
    from transformers import AutoConfig, AutoModelForImageClassification

    try:
        hf_config = AutoConfig.for_model(**{**config, "image_size": [img_size, img_size]})
        model = AutoModelForImageClassification.from_config(hf_config)
    except (ValueError, KeyError, TypeError) as exc:
        raise AbswinError(f"transformers cannot build an image classifier from this config.json ({exc})") from None
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
