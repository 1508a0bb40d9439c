"""transformers: a ``config.json`` with ``model_type``, built through the Auto classes or the class the config's
``architectures`` names; and ViTDet backbones of detectron2 checkpoints, renamed into transformers' ``VitDet``
(detectron2 itself is not on the package index)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import AbswinError
from .encoder import Encoder, NotBuildable, count_blocks, package_version, require

if TYPE_CHECKING:
    import torch

    from ..families.base import Detection

DETECTRON2_BACKBONE = "backbone.net."
# detectron2's ViT names -> transformers VitDet's (after the backbone prefix)
_DETECTRON2_NAMES = (
    (r"^pos_embed$", "embeddings.position_embeddings"),
    (r"^patch_embed\.proj\.", "embeddings.projection."),
    (r"^blocks\.(\d+)\.attn\.", r"encoder.layer.\1.attention."),
    (r"^blocks\.(\d+)\.", r"encoder.layer.\1."),
)


def is_transformers_config(config: dict) -> bool:
    return "model_type" in config


def create_classifier(config: dict, img_size: int) -> tuple[torch.nn.Module, Any]:
    """An image classifier for square ``img_size`` images (random weights) and the config it was built from."""
    from transformers import AutoConfig, AutoModelForImageClassification

    try:
        hf_config = AutoConfig.for_model(**{**config, "image_size": [img_size, img_size]})
        return AutoModelForImageClassification.from_config(hf_config), hf_config
    except (ValueError, KeyError, TypeError) as exc:
        raise AbswinError(f"transformers cannot build an image classifier from this config.json ({exc})") from exc


def encoder(config: dict) -> Encoder:
    """The model ``config.json`` describes (its ``architectures`` class, else the Auto model of its type), as
    written: the conversion wrote it for the converted size. Sam and Sam2 encode with ``get_image_embeddings``."""
    import transformers

    try:
        hf_config = transformers.AutoConfig.for_model(**config)
        names = config.get("architectures") or []
        cls = getattr(transformers, names[0], None) if names else None
        model = (cls(hf_config) if cls is not None else transformers.AutoModel.from_config(hf_config)).eval()
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise NotBuildable(f"transformers cannot build a model from this config.json ({exc})") from exc
    tied = dict(getattr(model, "all_tied_weights_keys", None) or {})
    return Encoder(model, f"{package_version('transformers')} {type(model).__name__} (config.json)", _encode_with(model),
                   tied=tied)


def _encode_with(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    embeddings = getattr(model, "get_image_embeddings", None)  # Sam, Sam2: the image encoder alone (no prompts)

    def encode(x: torch.Tensor) -> torch.Tensor:
        if embeddings is not None:
            out = embeddings(x)
            return out[-1] if isinstance(out, list) else out
        out = model(pixel_values=x, output_hidden_states=True)  # a classifier's last hidden state, not its logits
        if getattr(out, "last_hidden_state", None) is not None:
            return out.last_hidden_state
        return out.hidden_states[-1]

    return encode


def vitdet_from_detectron2(det: Detection, shapes: Mapping[str, tuple[int, ...]], img_size: int) -> Encoder:
    """transformers' ``VitDetModel`` at ``img_size`` holding a detectron2 ViTDet backbone (``backbone.net.*``,
    renamed); the feature pyramid and the detection heads are not part of it."""
    from transformers import VitDetConfig, VitDetModel

    p = DETECTRON2_BACKBONE
    require(shapes, p + "pos_embed", p + "patch_embed.proj.weight", p + "blocks.0.mlp.fc1.weight")
    dim = shapes[p + "pos_embed"][-1]
    depth = count_blocks(shapes, p + "blocks.")
    if any(".residual." in key for key in shapes if key.startswith(p)):
        raise NotBuildable("this ViTDet has residual conv blocks, which transformers' VitDet names differently")
    table = shapes.get(p + "blocks.0.attn.rel_pos_h")
    patch = shapes[p + "patch_embed.proj.weight"][-1]
    side = round((shapes[p + "pos_embed"][1] - det.prefix_tokens) ** 0.5)
    config = VitDetConfig(
        hidden_size=dim, num_hidden_layers=depth, num_attention_heads=dim // table[-1] if table else max(dim // 64, 1),
        mlp_ratio=shapes[p + "blocks.0.mlp.fc1.weight"][0] // dim, patch_size=patch, image_size=img_size,
        pretrain_image_size=side * patch, qkv_bias=p + "blocks.0.attn.qkv.bias" in shapes,
        use_relative_position_embeddings=table is not None, window_size=det.window[0],
        window_block_indices=[i for i in range(depth) if i not in det.global_blocks], layer_norm_eps=1e-6,
    )
    model = VitDetModel(config).eval()
    what = f"{package_version('transformers')} VitDet (detectron2 weights renamed; detectron2 itself was not run)"
    return Encoder(model, what, lambda x: model(pixel_values=x).last_hidden_state, rename=_from_detectron2,
                   outside="detectron2's feature pyramid and detection heads")


def _from_detectron2(key: str) -> str | None:
    if not key.startswith(DETECTRON2_BACKBONE):
        return None
    name = key[len(DETECTRON2_BACKBONE):]
    for pattern, replacement in _DETECTRON2_NAMES:
        name, found = re.subn(pattern, replacement, name)
        if found:
            break
    return name
