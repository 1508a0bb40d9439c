"""timm: its hub ``config.json`` (as ``save_for_hf`` writes it) and building a model from it.

The config holds ``architecture``, ``num_classes``, ``model_args`` (constructor arguments) and ``pretrained_cfg``
(``input_size`` ``[C, H, W]``, mean, std, interpolation, crop_pct). timm's Hiera runs absolute win natively when
built with ``abs_win_pos_embed=True, global_pos_size=(gh, gw)``; it then holds ``pos_embed [1, C, gh, gw]`` and
``pos_embed_win [1, C, 8, 8]``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..errors import AbswinError
from ..maths.resize import Size
from ..vocabulary import TIMM_WINDOW_KEY

if TYPE_CHECKING:  # torch is imported by the model builders only, not by the config helpers
    import torch

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
