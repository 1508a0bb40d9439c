"""Absolute win at run time: ``patch(model)`` makes a built model compose its position embedding by absolute win
(window part tiled, global part resized) at whatever input size it is given; ``unpatch`` undoes it; ``bake`` writes
the runtime's own state dict for one size, as ``convert --img-size`` would.

Which tensor is the embedding, its layout, window, resize and prefix rows come from the family detection that
``convert`` runs (on the model's own state dict); each runtime's adapter (``timm.py``, ``segment_anything.py``,
``transformers.py``) knows where that runtime adds it. The maths is ``compose.py``, the torch twin of
``maths/absolute_win.py``; ``bake`` is ``convert_state_dict`` itself, so the two agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import families
from ..errors import AbswinError
from ..families.base import Decomposition, Detection, output_grid
from ..families.base import bake as bake_grid
from ..families.overrides import TILE, Overrides
from ..in_memory import IN_MEMORY, ConvertedStateDict, convert_state_dict
from ..io.checkpoint import Checkpoint
from ..io.tensors import RawTensor
from ..io.torch_bridge import TorchTensor, dtype_name, to_torch
from ..maths.grid import as_size, format_size
from ..maths.resize import Size
from .adapters import Adapter, adapter_for, native_abswin
from .install import Installed
from .position import GLOBAL_NAME, PREFIX_NAME, SPLIT_NAMES, WINDOW_NAME, Position

_RECORD = "_abswin_patch"  # the model's attribute holding what patch did


@dataclass
class _Patched:
    adapter: Adapter
    position: Position
    installed: Installed
    pos_key: str  # the runtime's name of the embedding in the model's state dict
    window: Size | None
    recipe: str | None


def patch(model: torch.nn.Module, *, split: bool = False, window: int | Size | None = None) -> torch.nn.Module:
    """Make ``model`` (in place) compose its position embedding by absolute win at any input size its patch size and
    windows allow; returns it. At the native size it computes what it computed before.

    ``split=True`` replaces the embedding parameter by two trainable ones, the global part ``pos_embed``
    ``[1, C, gh, gw]`` and the window part ``pos_embed_win`` ``[1, C, wh, ww]`` (and ``pos_embed_prefix`` for a
    ViT's cls row), on the module that held it. ``window`` (tokens) is for a plain ViT, which has no windows of its
    own: it asks for the ViTDet recipe, the pretrained grid tiled into windows of that size (``convert --window``).
    Patching again with the same options changes nothing; with other options it first undoes the patch.
    Runtimes that already compose absolute win (SAM2, timm's absolute-win Hiera) are left as they are, said in one
    line."""
    already = native_abswin(model)
    if already is not None:
        print(f"abswin-convert: {already} already composes absolute win at run time; nothing to patch")
        return model
    adapter = adapter_for(model)
    wanted = as_size(window) if window is not None else None
    record = _record(model)
    if record is not None:
        if record.position.split == split and record.window == wanted:
            return model
        unpatch(model)
    det, pos_key, recipe = _detect(model, adapter, wanted)
    owner_path, _, name = pos_key.rpartition(".")
    owner = model.get_submodule(owner_path)
    installed = Installed()
    if adapter.hides:
        installed.hide(owner, name)
    position = Position(owner, name, det, split)
    adapter.install(model, position, installed)
    object.__setattr__(model, _RECORD, _Patched(adapter, position, installed, pos_key, wanted, recipe))
    return model


def unpatch(model: torch.nn.Module) -> torch.nn.Module:
    """Undo ``patch``: the runtime's own parameter back (a split one composed at the native size from its trained
    parts), hooks and overrides removed. A model that is not patched is returned as it is."""
    record = _record(model)
    if record is None:
        return model
    if record.position.split:
        record.position.unsplit()
    record.installed.undo()
    del model.__dict__[_RECORD]
    return model


def bake(model: torch.nn.Module, img_size: int | str | Size) -> ConvertedStateDict:
    """The patched model's state dict for the unpatched runtime built at ``img_size``: the embedding composed for
    that size in the runtime's own layout (global-attention relative-position tables resized to match), what
    ``convert --img-size`` writes; it loads with ``strict=True``. ``.config`` is the updated config (transformers)."""
    record = _record(model)
    if record is None:
        raise AbswinError("bake takes a model that abswin_convert.patch has patched")
    position = record.position
    state = {name: value.detach() for name, value in model.state_dict().items()}
    if position.split:
        prefix = record.pos_key[: -len(position.name)]
        for name in SPLIT_NAMES:
            state.pop(prefix + name, None)
        state[record.pos_key] = position.runtime_value()
    converted = convert_state_dict(state, img_size, config=record.adapter.config(model), window=record.window,
                                   recipe=record.recipe)
    if position.split:  # the trained parts, composed for the size as convert composes them
        det = converted.detection
        parts = Decomposition(_grid(position, WINDOW_NAME), _grid(position, GLOBAL_NAME), 0.0, 0.0)
        prefix_rows = position.owner._parameters.get(PREFIX_NAME)
        rows = np.zeros((0, parts.window.shape[-1])) if prefix_rows is None else _numpy(prefix_rows)[0]
        size = as_size(img_size)
        assert size is not None
        values = bake_grid(parts, det, rows, output_grid(det, size))
        like = state[record.pos_key]
        converted[record.pos_key] = to_torch(RawTensor.encode(values, dtype_name(like.dtype))).to(like.device)
    return converted


def _record(model: torch.nn.Module) -> _Patched | None:
    return model.__dict__.get(_RECORD)


def _detect(model: torch.nn.Module, adapter: Adapter, window: Size | None) -> tuple[Detection, str, str | None]:
    """The family's detection of the model's embedding, as ``convert_state_dict`` would make it; the ViTDet family
    always with the tiling recipe (absolute win is what was asked for), a plain ViT only with a window."""
    state = model.state_dict()
    ckpt = Checkpoint(IN_MEMORY, "torch", {name: TorchTensor(value.detach()) for name, value in state.items()},
                      adapter.config(model))
    view, det = families.recognise(ckpt)
    recipe = None
    if det.family == "vitdet":
        if det.global_attention and window is None:
            raise AbswinError(
                f"{type(model).__name__} attends globally (a plain ViT, {format_size(det.grid)} grid): there is no "
                "window pattern to keep; pass window= (in tokens) to tile its grid into windows of that size, the "
                "ViTDet recipe (README: Which recipe for a plain ViT?)")
        recipe = TILE
        view, det = families.recognise(ckpt, None, Overrides(window=window, recipe=TILE))
    elif window is not None and tuple(window) != tuple(det.window):
        raise AbswinError(
            f"{type(model).__name__} attends in {format_size(det.window)} windows of its own; window= is for plain "
            "ViTs, drop it")
    return det, view.stored_name(det.pos_key), recipe


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().double().numpy()


def _grid(position: Position, name: str) -> np.ndarray:
    """A split part ``[1, C, H, W]`` as a float64 ``[H, W, C]`` grid."""
    part = position.owner._parameters[name]
    assert part is not None
    return _numpy(part)[0].transpose(1, 2, 0)


__all__ = ["bake", "patch", "unpatch"]
