"""Which upstream runtime builds a checkpoint's model: by the ``config.json`` beside it when there is one, else by
its family and format, from the weights' shapes (``verify`` asks here, never builds models itself)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import AbswinError
from ..maths.resize import Size
from ..vocabulary import TIMM_ABSWIN
from .encoder import Encoder, LoadError, NotBuildable

if TYPE_CHECKING:
    import torch

    from ..families.base import Detection


def load_encoder(det: Detection, config: dict | None, state: Mapping[str, torch.Tensor], img_size: Size) -> Encoder:
    """The model for ``det``'s family and format built at ``img_size`` holding ``state`` (strictly).

    NotBuildable when no runtime here builds it (nothing checked); LoadError when the weights do not fit."""
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    try:
        encoder = _build(det, config, shapes, state, img_size)
    except (LoadError, NotBuildable):
        raise
    except AbswinError as exc:  # an upstream builder's refusal of these weights: they do not fit
        raise LoadError(str(exc)) from exc
    encoder.channels = _input_channels(shapes)
    return encoder


def _input_channels(shapes: Mapping[str, tuple[int, ...]]) -> int:
    """The image channels the patch embedding takes (its convolution's input channels)."""
    convs = [shape for key, shape in shapes.items() if len(shape) == 4 and ("patch" in key or "embeddings.projection" in key)]
    return convs[0][1] if convs else 3


def _build(det: Detection, config: dict | None, shapes: dict[str, tuple[int, ...]], state: Mapping[str, torch.Tensor],
           img_size: Size) -> Encoder:
    from . import hiera, timm, transformers

    if config is not None and transformers.is_transformers_config(config):
        return transformers.encoder(config).load(state)
    if config is not None and timm.is_timm_config(config):
        return timm.encoder(config, det, shapes, img_size).load(state)
    if det.family == "hiera" and det.spelling == "official":
        return hiera.encoder(config, shapes, _square(img_size, "official Hiera")).load(state)
    if det.spelling == "segment-anything":
        return _segment_anything(state, _square(img_size, "segment-anything"))
    if det.family == "sam2" and det.spelling == "sam2":
        return _sam2(state, _square(img_size, "sam2"))
    if det.family == "vitdet" and det.spelling == "detectron2":
        return transformers.vitdet_from_detectron2(det, shapes, _square(img_size, "transformers VitDet")).load(state)
    if det.spelling in ("timm", TIMM_ABSWIN, "mae", "deit"):
        return timm.encoder(None, det, shapes, img_size).load(state)
    without = "" if config else " without a config.json"
    raise NotBuildable(f"no runtime here builds {det.family} ({det.spelling}) models{without}")


def _segment_anything(state: Mapping[str, torch.Tensor], img_size: int) -> Encoder:
    """segment-anything's whole ``Sam``; a checkpoint of the image encoder alone, as ``ImageEncoderViT``."""
    from . import segment_anything as sa

    if any(key.startswith((sa.PROMPT, sa.DECODER)) for key in state):
        model = sa.build_sam(state, img_size)
        return Encoder(model, f"{sa.version()} Sam (sizes from the weights)", model.image_encoder)
    encoder = sa.build_image_encoder({k[len(sa.ENCODER):]: v for k, v in state.items() if k.startswith(sa.ENCODER)}, img_size)
    left_out = [key for key in state if not key.startswith(sa.ENCODER)]
    return Encoder(encoder, f"{sa.version()} ImageEncoderViT (sizes from the weights)", encoder,
                   outside="tensors outside the image encoder", left_out=left_out)


def _sam2(state: Mapping[str, torch.Tensor], img_size: int) -> Encoder:
    """sam2's ``SAM2Base`` from the package's config its trunk matches; a trunk alone (``--target sam2`` from a
    Hiera) as sam2's Hiera trunk."""
    from . import sam2

    if all(key.startswith(sam2.TRUNK) for key in state):
        trunk = sam2.build_trunk(state, img_size)
        return Encoder(trunk, f"{sam2.version()} Hiera trunk (sizes from the weights)", lambda x: trunk(x)[-1])
    model: Any = sam2.build_sam2(state, img_size)  # a SAM2Base
    return Encoder(model, f"{sam2.version()} SAM2Base (its config matched by the trunk's shapes)",
                   lambda x: model.image_encoder(x)["vision_features"])


def _square(img_size: Size, runtime: str) -> int:
    if img_size[0] != img_size[1]:
        raise NotBuildable(f"{runtime} builds square models only; verify it at a square size")
    return img_size[0]
