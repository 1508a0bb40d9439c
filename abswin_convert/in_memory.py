"""Conversions in memory, for training scripts: a state dict in, a state dict out, no files.

``convert_state_dict`` runs the same detection and plan as ``convert`` (bit-identical tensors);
``resample_abswin_pos_embed`` is the tensor-level step, shaped like timm's ``resample_abs_pos_embed``;
``interpolate_pos_embed(model, checkpoint_model)`` takes the arguments of MAE's function of that name and, like it,
edits ``checkpoint_model`` in place for the grid of the built model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import families, residual
from .errors import AbswinError, in_python_words
from .evaluation import window_effect
from .families import window_change
from .families.base import Detection
from .families.overrides import Overrides
from .families.window_change import WindowChange
from .io.checkpoint import Checkpoint
from .io.provenance import Conversion
from .io.tensors import RawTensor
from .io.torch_bridge import TorchTensor, dtype_name, from_torch, to_torch
from .maths import absolute_win as aw
from .maths.grid import PositionGrid, as_size, format_size, from_grid, to_grid
from .maths.resize import BICUBIC, BICUBIC_ANTIALIAS, Size
from .vocabulary import BAKED, TIMM_ABSWIN, TIMM_WINDOW_KEY

# interpolate_pos_embed says what it did here, one INFO record per call (a training script's logging shows it).
log = logging.getLogger("abswin_convert")

IN_MEMORY = Path("state_dict")  # what error messages call a state dict that has no file name


class ConvertedStateDict(dict):
    """The converted state dict (a plain ``dict`` of tensors), plus what ``convert`` would write beside it:
    ``config`` (the updated config.json, or None), ``notes`` (what the user must change), ``detection``, the
    ``residual`` of the global part's refit (0: exact; ``abswin_convert.residual``) and its ``warnings``."""

    def __init__(self, state: dict[str, torch.Tensor], config: dict | None, notes: list[str], detection: Detection,
                 residual: float = 0.0, warnings: list[str] | None = None):
        super().__init__(state)
        self.config = config
        self.notes = notes
        self.detection = detection
        self.residual = residual
        self.warnings = warnings or []


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    img_size: int | str | Size | None = None,
    *,
    target: str = "baked",
    global_size: int | str | Size | None = "full",
    family: str | None = None,
    config: dict | None = None,
    key: str | None = None,
    layout: str | None = None,
    window: int | str | Size | None = None,
    patch_stride: int | None = None,
    recipe: str | None = None,
    window_size: int | str | tuple[int, ...] | None = None,
    relpos_resize: str | None = None,
    window_part: str | None = None,
    measure: bool = True,
) -> ConvertedStateDict:
    """``convert`` in memory: the state dict for ``img_size``; the input is not modified.

    ``config`` is the model's config.json as a dict (transformers and timm hub folders need it to be recognised);
    ``key``/``layout``/``window``/``patch_stride``/``recipe`` are the CLI's ``--key``/``--layout``/``--window``/
    ``--patch-stride``/``--recipe``; ``window_size``/``relpos_resize``/``window_part`` change the attention window
    as ``convert`` does (the notes then end with the measured change; ``measure=False`` skips the two encoder forwards
    that measuring takes, for a caller that measures on its own). Prefixed names (DDP's ``module.``, ...) are
    seen through and kept.
    """
    originals = _tensors(state_dict)
    ckpt = Checkpoint(IN_MEMORY, "torch", {name: TorchTensor(value) for name, value in originals.items()}, config)
    source_window = as_size(window) if isinstance(window, int) else window
    try:
        overrides = Overrides.parse(key, layout, source_window, patch_stride, recipe)
        change = WindowChange.parse(window_size, relpos_resize, window_part)
        asked = families.asked_request(img_size, target, global_size, change)
        ckpt, det = families.recognise(ckpt, family, overrides)
        request = families.full_request(asked, ckpt, det, target, global_size, change)
        plan = families.plan(ckpt, det, request)
    except AbswinError as error:  # the families speak the command line's flags; a caller here passed arguments
        error.args = (in_python_words(str(error)),)
        raise
    if change is not None:
        effect = window_effect.measure(ckpt, det, request) if measure else "not measured: measure=False"
        plan.notes.append(window_change.record_effect(plan, effect))
    # untouched tensors pass through as the caller's own (prefixed names mapped back to the caller's)
    applied = plan.applied(ckpt, untouched=lambda key: originals[ckpt.stored_name(key)])
    state = {name: value if isinstance(value, torch.Tensor) else to_torch(value) for name, value in applied.items()}
    done = Conversion.from_entries(plan.stats, str(IN_MEMORY))
    warned = residual.warning(done)
    return ConvertedStateDict(state, plan.config, plan.notes, det, done.residual, [warned] if warned else [])


def _tensors(state_dict: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """The state dict's tensors; anything else means the caller passed the wrong dict, said in one line."""
    if not isinstance(state_dict, Mapping):
        raise AbswinError(f"expected a state dict (a dict of tensors), got a {type(state_dict).__name__}")
    for name, value in state_dict.items():
        if isinstance(value, Mapping):
            raise AbswinError(f"state_dict[{name!r}] is a dict: pass the state dict inside it (checkpoint[{name!r}])")
        if not isinstance(value, torch.Tensor):
            raise AbswinError(f"state_dict[{name!r}] is a {type(value).__name__}, not a tensor")
    if not state_dict:
        raise AbswinError("the state dict is empty")
    return dict(state_dict)  # type: ignore[arg-type]


def resample_abswin_pos_embed(
    posemb: torch.Tensor,
    new_size: Size,
    window: Size,
    old_size: Size | None = None,
    num_prefix_tokens: int = 1,
    antialias: bool = False,
) -> torch.Tensor:
    """A flat ``[1, P + H*W, C]`` embedding for a ``new_size`` token grid by absolute win: the window-periodic part
    tiled, the rest resized (bicubic, ``antialias`` as the runtime does). Arguments as timm's ``resample_abs_pos_embed``
    plus ``window`` (in tokens); ``old_size`` defaults to a square grid. At the same size it returns a copy of ``posemb``."""
    layout = "flat_cls" if num_prefix_tokens else "flat"
    raw = from_torch(posemb)
    # sizes taken as pairs: as in timm's resample_abs_pos_embed, they may come as lists
    pos = to_grid(raw.float64(), layout, num_prefix_tokens, (old_size[0], old_size[1]) if old_size else None)
    if pos.size == tuple(new_size):
        return posemb.clone()  # split + compose would round: the same size must give the same values
    window_part, global_part = aw.split(pos.grid, (window[0], window[1]))
    resize = BICUBIC_ANTIALIAS if antialias else BICUBIC
    grid = aw.compose(window_part, global_part, (new_size[0], new_size[1]), resize)
    return _like(posemb, from_grid(PositionGrid(grid, pos.prefix), layout))


def interpolate_pos_embed(model: torch.nn.Module, checkpoint_model: dict[str, torch.Tensor]) -> None:
    """MAE's ``interpolate_pos_embed``, same arguments, same in-place edit of ``checkpoint_model``, for the grid of
    the built ``model``: absolute win where the model attends in windows (timm/official Hiera, timm SAM ViT; a timm
    absolute-win Hiera gets its ``pos_embed``/``pos_embed_win`` filled), MAE's own bicubic resize where it does not.
    Logs one line saying which (logger ``abswin_convert``, INFO; nothing on stdout); logs nothing and changes
    nothing when the sizes already agree."""
    if "pos_embed" not in checkpoint_model or not hasattr(model, "pos_embed"):
        return
    built: Any = model  # models of several libraries, read by attribute name
    windowed = _windowed_input(model)
    if windowed is None:
        _plain_resize(model, checkpoint_model)
        return
    img_size, split_global = windowed
    window_part = getattr(model, TIMM_WINDOW_KEY, None)
    already = tuple(checkpoint_model["pos_embed"].shape) == tuple(built.pos_embed.shape) and (
        window_part is None or TIMM_WINDOW_KEY in checkpoint_model)
    if already:
        return
    target = TIMM_ABSWIN if split_global else BAKED
    converted = convert_state_dict(checkpoint_model, img_size, target=target, global_size=split_global or "full")
    for name in [k for k in checkpoint_model if k not in converted]:
        del checkpoint_model[name]
    checkpoint_model.update(converted)
    det = converted.detection
    log.info(f"abswin-convert: {det.pos_key} {format_size(det.grid)} -> {format_size(_grid_of(img_size, det))} tokens "
             f"by absolute win ({det.family}, windows of {format_size(det.window)} tokens"
             f"{', split into pos_embed + pos_embed_win' if split_global else ''})")


def _windowed_input(model: Any) -> tuple[Size, Size | None] | None:
    """The input size of a model that attends in windows, and the global grid of its split embedding if it has
    one; None for a model without windows."""
    if hasattr(model, "mask_unit_size") and hasattr(model, "tokens_spatial_shape"):  # Hiera (timm or official)
        stride = model.patch_embed.proj.stride
        tokens = model.tokens_spatial_shape
        img_size = (tokens[-2] * stride[-2], tokens[-1] * stride[-1])
        split = getattr(model, TIMM_WINDOW_KEY, None) is not None
        return img_size, (tuple(model.pos_embed.shape[-2:]) if split else None)
    blocks = getattr(model, "blocks", [])
    if any(getattr(block, "window_size", 0) for block in blocks) and model.pos_embed.dim() == 4:  # timm SAM ViT
        grid, patch = model.patch_embed.grid_size, model.patch_embed.patch_size
        return (grid[0] * patch[0], grid[1] * patch[1]), None
    return None


def _grid_of(img_size: Size, det: Detection) -> Size:
    return (img_size[0] // det.patch_stride, img_size[1] // det.patch_stride)


def _plain_resize(model: Any, checkpoint_model: dict[str, torch.Tensor]) -> None:
    """MAE's behaviour for a ViT without windows: bicubic resize of the grid, prefix tokens kept."""
    posemb = checkpoint_model["pos_embed"]
    new_grid = tuple(model.patch_embed.grid_size)
    prefix = model.pos_embed.shape[-2] - new_grid[0] * new_grid[1]
    layout = "flat_cls" if prefix else "flat"
    pos = to_grid(from_torch(posemb).float64(), layout, prefix)
    if pos.size == new_grid:
        return
    resized = PositionGrid(aw.naive(pos.grid, new_grid, BICUBIC), pos.prefix)
    checkpoint_model["pos_embed"] = _like(posemb, from_grid(resized, layout))
    log.info(f"abswin-convert: pos_embed {format_size(pos.size)} -> {format_size(new_grid)} tokens "
             "by plain bicubic resize (the model has no windows, so no window pattern to keep)")


def _like(reference: torch.Tensor, values: np.ndarray) -> torch.Tensor:
    """float64 ``values`` rounded once to ``reference``'s dtype, on its device."""
    return to_torch(RawTensor.encode(values, dtype_name(reference.dtype))).to(reference.device)
