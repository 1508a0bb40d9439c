"""timm: its hub ``config.json`` (as ``save_for_hf`` writes it) and building a model from it.

The config holds ``architecture``, ``num_classes``, ``model_args`` (constructor arguments) and ``pretrained_cfg``
(``input_size`` ``[C, H, W]``, mean, std, interpolation, crop_pct). timm's Hiera runs absolute win natively when
built with ``abs_win_pos_embed=True, global_pos_size=(gh, gw)``; it then holds ``pos_embed [1, C, gh, gw]`` and
``pos_embed_win [1, C, 8, 8]``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import AbswinError
from ..maths.resize import Size
from ..vocabulary import TIMM_WINDOW_KEY
from . import hiera as hiera_runtime
from .encoder import Encoder, NotBuildable, count_blocks, require

if TYPE_CHECKING:  # torch is imported by the model builders only, not by the config helpers
    import torch

    from ..families.base import Detection

WINDOW_KEY = TIMM_WINDOW_KEY


def is_timm_config(config: Mapping | None) -> bool:
    return bool(config) and "architecture" in config  # type: ignore[operator]


def abswin_args(global_size: Size | None) -> dict[str, object]:
    """The model arguments of timm's absolute-win Hiera; ``None`` values remove them (a plain Hiera)."""
    if global_size is None:
        return {"abs_win_pos_embed": None, "global_pos_size": None}
    return {"abs_win_pos_embed": True, "global_pos_size": [int(global_size[0]), int(global_size[1])]}


def checked(config: Mapping, building: bool = False) -> Mapping:
    """The fields of a timm config.json this module reads, checked (a damaged config is the user's to fix, in one
    line): ``model_args`` a table, ``pretrained_cfg.input_size`` a list; to build a model also ``architecture`` (a
    name) and ``num_classes`` (a whole number)."""
    pretrained_cfg = config.get("pretrained_cfg", {})
    problems = [
        not isinstance(config.get("model_args", {}), dict),
        not isinstance(pretrained_cfg, dict) or not isinstance(pretrained_cfg.get("input_size", []), list),
        building and not isinstance(config.get("architecture"), str),
        building and type(config.get("num_classes")) is not int,
    ]
    if any(problems):
        raise AbswinError(
            "config.json is damaged: timm's needs architecture (a name), num_classes (a whole number), model_args "
            "(a table) and pretrained_cfg.input_size (a list)"
        )
    return config


def resized_config(config: dict, input_size: Size, /, **model_args: object) -> dict:
    """A copy of ``config`` for the same model at ``input_size``: ``pretrained_cfg.input_size`` follows, and
    ``model_args`` is updated with the given arguments (a ``None`` value removes the argument)."""
    updated = copy.deepcopy(dict(checked(config)))
    args = updated.setdefault("model_args", {})
    for name, value in model_args.items():
        if value is None:
            args.pop(name, None)
        else:
            args[name] = value
    pretrained_cfg = updated.get("pretrained_cfg", {})
    if "input_size" in pretrained_cfg:
        pretrained_cfg["input_size"] = list(pretrained_cfg["input_size"][:1]) + list(input_size)
    return updated


def model_kwargs(config: Mapping, img_size: int | Size, shapes: Mapping[str, tuple[int, ...]]) -> dict:
    """``timm.create_model`` keyword arguments for the weights with these ``shapes`` at ``img_size``: a split
    absolute-win state (``pos_embed_win`` present) builds the abswin model, its global size read off the weights."""
    checked(config, building=True)
    args = {**config.get("model_args", {}), "num_classes": config["num_classes"], "img_size": img_size}
    if WINDOW_KEY in shapes:
        gh, gw = shapes["pos_embed"][-2:]
        args.update(abs_win_pos_embed=True, global_pos_size=(gh, gw))
    return args


def create(architecture: str, kwargs: Mapping, state: Mapping[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """A timm model with random weights (eval mode); ``state`` loaded with ``strict=True`` when given."""
    import timm

    try:
        model = timm.create_model(architecture, pretrained=False, **kwargs)
    except (RuntimeError, AssertionError, TypeError, ValueError) as exc:
        size = kwargs.get("img_size")
        raise AbswinError(f"timm cannot build {architecture} at {size} px ({exc})") from exc
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model.eval()


def version() -> str:
    import timm

    return f"timm {timm.__version__}"


def encoder(config: Mapping | None, det: Detection, shapes: Mapping[str, tuple[int, ...]], img_size: Size) -> Encoder:
    """The timm model that holds these weights at ``img_size``: as its ``config.json`` says, else read off the
    weights (Hiera, ``samvit_*``, ``vit_*``; MAE's decoder is not part of timm's ViT and is left out)."""
    note, rename, outside = "", None, ""
    if config:
        architecture, kwargs = config["architecture"], model_kwargs(config, img_size, shapes)
        if det.family == "sam2":
            kwargs.pop("img_size")  # timm's HieraDet runs at any multiple of 32 px and takes no size
    elif det.family == "sam2":
        architecture, (args, note) = "sam2_hiera_tiny", hiera_runtime.args_from_shapes(shapes)
        head = shapes.get("head.fc.weight")
        kwargs = {**args, "global_pos_size": shapes["pos_embed"][-2:], "num_classes": head[0] if head else 0}
    elif det.family == "hiera":
        architecture, (kwargs, note) = "hiera_base_224", hiera_runtime.args_from_shapes(shapes)
        head = shapes.get("head.fc.weight")
        kwargs.update(img_size=img_size, num_classes=head[0] if head else 0)
        if WINDOW_KEY in shapes:  # the split: timm's absolute-win Hiera, its global size read off the weights
            kwargs.update(model_kwargs({"architecture": architecture, "num_classes": kwargs["num_classes"]}, img_size, shapes))
    elif det.family == "sam":
        architecture, kwargs = "samvit_base_patch16", _samvit_args(det, shapes, img_size)
    elif det.family == "vitdet":
        architecture, kwargs, note = "vit_base_patch16_224", *_vit_args(det, shapes, img_size)
        rename = _outside_mae_encoder
        outside = "the MAE decoder (not part of timm's ViT)" if any(_outside_mae_encoder(k) is None for k in shapes) else ""
    else:
        raise NotBuildable(f"timm's {det.family} models are built from their config.json, and there is none")
    model: Any = create(architecture, kwargs)
    shown = {"img_size": img_size, **{k: kwargs[k] for k in _SHOWN if k in kwargs and not config}}
    described = ", ".join(f"{k}={v}" for k, v in shown.items())
    encoder = Encoder(model, f"{version()} {architecture}({described}){note}", model.forward_features)
    if rename is not None:
        encoder.rename, encoder.outside = rename, outside
    return encoder


_SHOWN = ("embed_dim", "depth", "stages", "global_attn_indexes", "global_pos_size")  # what a model built from shapes got


def _samvit_args(det: Detection, shapes: Mapping[str, tuple[int, ...]], img_size: Size) -> dict:
    require(shapes, "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.rel_pos_h", "blocks.0.mlp.fc1.weight", "neck.0.weight")
    dim = shapes["pos_embed"][-1]
    head = shapes.get("head.weight")
    return dict(
        img_size=img_size, patch_size=shapes["patch_embed.proj.weight"][-1], in_chans=shapes["patch_embed.proj.weight"][1],
        embed_dim=dim,
        depth=count_blocks(shapes, "blocks."), num_heads=dim // shapes["blocks.0.attn.rel_pos_h"][-1],
        mlp_ratio=shapes["blocks.0.mlp.fc1.weight"][0] / dim, global_attn_indexes=tuple(det.global_blocks),
        window_size=det.window[0], neck_chans=shapes["neck.0.weight"][0], num_classes=head[0] if head else 0,
        qkv_bias="blocks.0.attn.qkv.bias" in shapes,
    )


_HEAD_WIDTH = 64  # a ViT's heads are not in its weights; every published timm/MAE/DeiT ViT uses 64-wide heads


def _vit_args(det: Detection, shapes: Mapping[str, tuple[int, ...]], img_size: Size) -> tuple[dict, str]:
    require(shapes, det.pos_key, "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight")
    dim = shapes[det.pos_key][-1]
    head = shapes.get("head.weight")
    pooled = "fc_norm.weight" in shapes  # MAE's finetuned ViTs average the tokens, then fc_norm
    args = dict(
        img_size=img_size, patch_size=shapes["patch_embed.proj.weight"][-1], in_chans=shapes["patch_embed.proj.weight"][1],
        embed_dim=dim,
        depth=count_blocks(shapes, "blocks."), num_heads=max(dim // _HEAD_WIDTH, 1),
        mlp_ratio=shapes["blocks.0.mlp.fc1.weight"][0] / dim, num_classes=head[0] if head else 0,
        class_token="cls_token" in shapes, no_embed_class=False, global_pool="avg" if pooled else "token",
        fc_norm=pooled, qkv_bias="blocks.0.attn.qkv.bias" in shapes, reg_tokens=shapes.get("reg_token", (0, 0))[1],
        dynamic_img_size=False,
    )
    return args, f" (num_heads {args['num_heads']} assumed: {_HEAD_WIDTH}-wide heads)"


def _outside_mae_encoder(key: str) -> str | None:
    """MAE's pretraining decoder and mask token are no part of the ViT encoder."""
    return None if key.startswith(("decoder", "mask_token")) else key
