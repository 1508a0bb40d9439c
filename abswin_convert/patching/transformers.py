"""transformers: ``SamModel``/``SamVisionModel`` (after the patch embedding, whose size check is lifted),
``VitDetModel``/``VitDetBackbone`` (after the projection) and ``HieraModel`` (its ``get_position_embedding``)."""

from __future__ import annotations

from typing import Any

import torch

from .adapters import Adapter
from .install import Installed
from .position import Position


def _config(model: Any) -> dict | None:
    return model.config.to_dict()


def _sam(model: Any, position: Position, installed: Installed) -> None:
    embed = model.vision_encoder.patch_embed

    def patch_embed(pixel_values: torch.Tensor) -> torch.Tensor:  # the runtime's, without its fixed-size check
        out = embed.projection(pixel_values).permute(0, 2, 3, 1)
        return out + position.at(out.shape[1:3])[0]

    installed.override(embed, "forward", patch_embed)


def _vitdet(model: Any, position: Position, installed: Installed) -> None:
    def add(module: torch.nn.Module, inputs: tuple, out: torch.Tensor) -> torch.Tensor:
        return out + position.at(out.shape[-2:])[0].permute(0, 3, 1, 2)

    installed.hook(model.embeddings.projection, add)


def _hiera(model: Any, position: Position, installed: Installed) -> None:
    embeddings = model.embeddings if hasattr(model, "embeddings") else model.hiera.embeddings

    def position_embedding(tokens: torch.Tensor, height: int, width: int, interpolate_pos_encoding: bool) -> torch.Tensor:
        grid, _ = position.at((height // embeddings.patch_stride[0], width // embeddings.patch_stride[1]))
        return grid.reshape(1, -1, grid.shape[-1])

    installed.override(embeddings, "get_position_embedding", position_embedding)


_MODULE = "transformers.models"
ADAPTERS = (
    Adapter("transformers SamModel/SamVisionModel",
            (f"{_MODULE}.sam.modeling_sam:SamModel", f"{_MODULE}.sam.modeling_sam:SamVisionModel"), _sam,
            config=_config),
    Adapter("transformers VitDetModel/VitDetBackbone",
            (f"{_MODULE}.vitdet.modeling_vitdet:VitDetModel", f"{_MODULE}.vitdet.modeling_vitdet:VitDetBackbone"),
            _vitdet, config=_config),
    Adapter("transformers HieraModel",
            (f"{_MODULE}.hiera.modeling_hiera:HieraModel", f"{_MODULE}.hiera.modeling_hiera:HieraForImageClassification"),
            _hiera, hides=False, config=_config),
)
