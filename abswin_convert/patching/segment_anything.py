"""segment-anything: ``ImageEncoderViT`` adds ``pos_embed`` as it is after the patch embedding (NHWC); its
attention resizes the global blocks' relative-position tables itself (``get_rel_pos``). In a ``Sam`` the prompt
encoder follows the image embedding's grid."""

from __future__ import annotations

from typing import Any

import torch

from .adapters import Adapter, windowed_blocks_config
from .install import Installed
from .position import Position


def _image_encoder(encoder: Any, position: Position, installed: Installed) -> None:
    installed.hook(encoder.patch_embed, lambda module, inputs, out: out + position.at(out.shape[1:3])[0])


def _sam(sam: Any, position: Position, installed: Installed) -> None:
    _image_encoder(sam.image_encoder, position, installed)
    prompt = sam.prompt_encoder
    for name in ("image_embedding_size", "input_image_size"):
        installed.override(prompt, name, getattr(prompt, name))

    def follow(module: torch.nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        prompt.image_embedding_size = tuple(out.shape[-2:])
        prompt.input_image_size = tuple(inputs[0].shape[-2:])

    installed.hook(sam.image_encoder, follow)


ADAPTERS = (
    Adapter("segment-anything ImageEncoderViT", ("segment_anything.modeling.image_encoder:ImageEncoderViT",),
            _image_encoder, config=lambda encoder: windowed_blocks_config(encoder.blocks)),
    Adapter("segment-anything Sam", ("segment_anything.modeling.sam:Sam",), _sam,
            config=lambda sam: windowed_blocks_config(sam.image_encoder.blocks)),
)
