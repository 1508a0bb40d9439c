"""What every runtime adapter answers, and the registry that finds the adapter of a model.

An adapter knows where its runtime adds the position embedding and how to make it add the patched one instead at
any input size (``install``); the family (found from the model's own state dict, as ``convert`` finds it) knows the
embedding's layout, window and resize. Models are matched by class name and module, so that no runtime library is
imported to ask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import AbswinError
from ..vocabulary import TIMM_WINDOW_KEY
from .install import Installed
from .position import Position

Install = Callable[[Any, Position, Installed], None]


@dataclass(frozen=True)
class Adapter:
    runtime: str  # as messages name it
    classes: tuple[str, ...]  # "module:Class" of the models it patches
    install: Install
    hides: bool = True  # the runtime adds the embedding itself, so it must see none (install.Installed.hide)
    config: Callable[[Any], dict | None] = lambda model: None  # the config the family detection reads

    def matches(self, model: torch.nn.Module) -> bool:
        return _class_name(type(model)) in self.classes  # not subclasses: they may add the embedding otherwise


def windowed_blocks_config(blocks: Any) -> dict | None:
    """The window and global blocks of a SAM-style ViT, read off its blocks (``window_size`` 0: global), in the
    config fields the SAM family reads; None when no block attends in windows."""
    windows = [int(block.window_size) for block in blocks]
    sizes = {w for w in windows if w > 0}
    if len(sizes) != 1:
        return None
    return {"window_size": sizes.pop(), "global_attn_indexes": [i for i, w in enumerate(windows) if w == 0]}


# Runtimes that compose absolute win themselves: patch says so and changes nothing.
NATIVE_ABSWIN = {
    "sam2.modeling.sam2_base:SAM2Base": "SAM2",
    "sam2.modeling.backbones.image_encoder:ImageEncoder": "SAM2",
    "sam2.modeling.backbones.hieradet:Hiera": "SAM2",
    "timm.models.hieradet_sam2:HieraDet": "timm's SAM2 Hiera",
    "transformers.models.sam2.modeling_sam2:Sam2Model": "transformers' SAM2",
    "transformers.models.sam2.modeling_sam2:Sam2VisionModel": "transformers' SAM2",
    "transformers.models.sam2.modeling_sam2:Sam2HieraDetModel": "transformers' SAM2",
}


def _class_name(cls: type) -> str:
    return f"{getattr(cls, '_abswin_original', cls).__module__}:{getattr(cls, '_abswin_original', cls).__name__}"


def native_abswin(model: torch.nn.Module) -> str | None:
    """The name of a runtime that already composes absolute win at run time, else None."""
    for cls in type(model).__mro__:
        if _class_name(cls) in NATIVE_ABSWIN:
            return NATIVE_ABSWIN[_class_name(cls)]
    if _class_name(type(model)) == "timm.models.hiera:Hiera" and getattr(model, TIMM_WINDOW_KEY, None) is not None:
        return "timm's absolute-win Hiera (abs_win_pos_embed=True)"
    return None


def adapter_for(model: torch.nn.Module) -> Adapter:
    from . import segment_anything, timm, transformers

    adapters = (*timm.ADAPTERS, *segment_anything.ADAPTERS, *transformers.ADAPTERS)
    for adapter in adapters:
        if adapter.matches(model):
            return adapter
    names = ", ".join(dict.fromkeys(a.runtime for a in adapters))
    raise AbswinError(f"abswin_convert.patch does not know {type(model).__name__}; it patches {names}")
