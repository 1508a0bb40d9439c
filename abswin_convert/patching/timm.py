"""timm: ``VisionTransformer`` (its ``_pos_embed``), ``VisionTransformerSAM`` (after the patch embedding) and
``Hiera`` without absolute win (after the patch projection, its unroll following the input's token grid)."""

from __future__ import annotations

from types import MethodType
from typing import Any

import torch

from .adapters import Adapter, windowed_blocks_config
from .install import Installed
from .position import Position


def _vision_transformer(model: Any, position: Position, installed: Installed) -> None:
    """The patch embedding yields NHWC at any size (as timm's ``dynamic_img_size=True`` sets it up) and
    ``_pos_embed`` adds the patched embedding, prefix rows to the cls/register tokens as timm does."""
    from timm.layers import Format

    installed.override(model, "dynamic_img_size", True)
    for name, value in (("strict_img_size", False), ("flatten", False), ("output_fmt", Format.NHWC)):
        installed.override(model.patch_embed, name, value)

    def pos_embed(self: Any, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        grid, prefix = position.at((h, w))
        x, pos = x.reshape(b, h * w, c), grid.reshape(1, h * w, c)
        tokens = [t.expand(b, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        if self.no_embed_class:  # deit-3: the prefix tokens get no position
            return self.pos_drop(torch.cat([*tokens, x + pos], dim=1))
        if prefix is not None:
            pos = torch.cat([prefix, pos], dim=1)
        return self.pos_drop(torch.cat([*tokens, x], dim=1) + pos)

    installed.override(model, "_pos_embed", MethodType(pos_embed, model))


def _add_after_patch_embed(model: Any, position: Position, installed: Installed) -> None:
    """For runtimes whose patch embedding yields NHWC and that then add the embedding as it is."""
    installed.hook(model.patch_embed, lambda module, inputs, out: out + position.at(out.shape[1:3])[0])


def _hiera(model: Any, position: Position, installed: Installed) -> None:
    """Added to the projection's NCHW output (the same tokens ``_pos_embed`` would add it to); the unroll reads the
    token grid of this input instead of the one fixed when the model was built."""
    installed.override(model, "_pos_embed", lambda x: x)
    installed.override(model.unroll, "size", list(model.unroll.size))

    def add(module: torch.nn.Module, inputs: tuple, out: torch.Tensor) -> torch.Tensor:
        size = tuple(out.shape[-2:])
        model.unroll.size = list(size)
        return out + position.at(size)[0].permute(0, 3, 1, 2)

    installed.hook(model.patch_embed.proj, add)


ADAPTERS = (
    Adapter("timm VisionTransformer (window= required)", ("timm.models.vision_transformer:VisionTransformer",),
            _vision_transformer, hides=False),
    Adapter("timm VisionTransformerSAM", ("timm.models.vision_transformer_sam:VisionTransformerSAM",),
            _add_after_patch_embed, config=lambda model: windowed_blocks_config(model.blocks)),
    Adapter("timm Hiera", ("timm.models.hiera:Hiera",), _hiera, hides=False),
)
