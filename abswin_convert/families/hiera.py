"""Hiera: official ``hiera-transformer`` (image and video), timm ``hiera_*`` and transformers ``Hiera*``.

Hiera adds ``pos_embed`` (flat ``[1, H*W, C]``, raster order) before unrolling into 8x8 mask units; the patch
stride (4) cannot be read from the weights, the family fixes it. timm's absolute-win Hiera keeps the parts as
``pos_embed [1, C, gh, gw]`` + ``pos_embed_win [1, C, 8, 8]`` and resizes with antialiased bicubic.
"""

from __future__ import annotations

import copy
import re

from ..errors import AbswinError
from ..io.checkpoint import Checkpoint
from ..io.tensors import RawTensor
from ..maths.grid import format_size, grid_size_of, to_grid
from ..maths.resize import BICUBIC, BICUBIC_ANTIALIAS, Size
from ..plan import Plan
from ..runtimes import timm as timm_runtime
from ..vocabulary import BAKED, HIERA, TIMM_ABSWIN
from . import base
from .base import TIMM_WINDOW_KEY, ConvertRequest, Detection, Family, from_checkpoint_alone

NAME = HIERA
PATCH_STRIDE = 4
MASK_UNIT = (8, 8)
# The MAE decoder runs global attention on one token per mask unit; it is resized like any global embedding.
DECODER_KEYS = ("decoder_pos_embed", "decoder.decoder_position_embeddings")
# Parts of the official MAE model that a classification Hiera has no place for.
MAE_ONLY_PREFIXES = ("decoder", "mask_token", "multi_scale_fusion_heads")
_HF_PREFIXES = ("hiera.", "")
IMAGE_TARGETS = (BAKED, TIMM_ABSWIN)
VIDEO_FORMAT = "official-video"
_SIZE_ARGS = ("img_size", "abs_win_pos_embed", "global_pos_size")  # what the note sets for the new size
# (embedding width, blocks) -> timm name, for the notes of a checkpoint without a timm config.json
_TIMM_HIERAS = {(96, 12): "hiera_tiny_224", (96, 16): "hiera_small_224", (96, 24): "hiera_base_224",
                (112, 24): "hiera_base_plus_224", (144, 48): "hiera_large_224", (256, 48): "hiera_huge_224"}


def detect(ckpt: Checkpoint) -> Detection | None:
    """Recognise a Hiera checkpoint from its keys and shapes (and config.json when there is one)."""
    if "pos_embed_spatial" in ckpt and "pos_embed_temporal" in ckpt:
        return _detection(ckpt, VIDEO_FORMAT, "pos_embed_spatial", "flat", (BAKED,))
    if "pos_embed" in ckpt and TIMM_WINDOW_KEY in ckpt and len(ckpt.shape("pos_embed")) == 4:
        return _detection(ckpt, TIMM_ABSWIN, "pos_embed", "nchw", IMAGE_TARGETS)
    flat = "pos_embed" in ckpt and len(ckpt.shape("pos_embed")) == 3  # a 4-D pos_embed is another model's parts
    if flat and _has_hiera_stem(ckpt, "patch_embed.proj.weight") and "blocks.0.attn.qkv.weight" in ckpt:
        is_timm = any(k.startswith(("head.fc.", "head.norm.")) for k in ckpt.keys())
        return _detection(ckpt, "timm" if is_timm else "official", "pos_embed", "flat", IMAGE_TARGETS)
    for prefix in _HF_PREFIXES:
        key = f"{prefix}embeddings.position_embeddings"
        if key in ckpt and _has_hiera_stem(ckpt, f"{prefix}embeddings.patch_embeddings.projection.weight"):
            return _detection(ckpt, "transformers", key, "flat", IMAGE_TARGETS, key_prefix=prefix)
    return None


def _has_hiera_stem(ckpt: Checkpoint, key: str) -> bool:
    return key in ckpt and tuple(ckpt.shape(key)[-2:]) == (7, 7)


def _detection(ckpt: Checkpoint, fmt: str, pos_key: str, layout: str, targets: tuple[str, ...],
               key_prefix: str = "") -> Detection:
    grid = grid_size_of(ckpt.shape(pos_key), layout, hw=_configured_grid(ckpt.config))
    window: Size = MASK_UNIT
    window_key = None
    if layout == "nchw":
        window = base.to_grid_size(ckpt, TIMM_WINDOW_KEY)
        grid = _configured_grid(ckpt.config) or (224 // PATCH_STRIDE, 224 // PATCH_STRIDE)
        window_key = TIMM_WINDOW_KEY
    elif ckpt.config and "masked_unit_size" in ckpt.config:
        window = _positive_pair(ckpt.config["masked_unit_size"], "masked_unit_size")
    if grid[0] % window[0] or grid[1] % window[1]:  # Hiera unrolls its tokens into whole mask units
        raise AbswinError(
            f"{pos_key}: a {format_size(grid)} token grid is not a whole number of Hiera's {format_size(window)} "
            "mask units; the checkpoint is damaged, or its config.json gives the wrong image size"
        )
    return Detection(NAME, fmt, pos_key, layout, grid, window, PATCH_STRIDE, BICUBIC_ANTIALIAS, targets,
                     window_key=window_key, key_prefix=key_prefix)


def _configured_grid(config: dict | None) -> Size | None:
    """Token grid from a transformers (``image_size``) or official mixin (``input_size``) config."""
    if not config:
        return None
    field = "image_size" if config.get("image_size") else "input_size"
    size = config.get(field)
    if size is None:
        return None
    height, width = _positive_pair([size, size] if isinstance(size, int) else size, field)
    return (height // PATCH_STRIDE, width // PATCH_STRIDE)


def _positive_pair(value: object, field: str) -> Size:
    """The last two entries of a config.json size (an image's H, W of a video's T, H, W), checked."""
    if isinstance(value, list) and len(value) >= 2 and all(type(v) is int and v > 0 for v in value[-2:]):
        return (value[-2], value[-1])
    raise AbswinError(f"config.json: {field} {value!r} is not a list of positive integers; the config is damaged")


def plan(ckpt: Checkpoint, det: Detection, request: ConvertRequest) -> Plan:
    """Baked (same keys, new size) or timm abswin (split parts, timm key names)."""
    base.require_target(det, request.target)
    out_grid = base.output_grid(det, request.img_size)
    parts, prefix = base.read_parts(ckpt, det, request.global_size)
    dtype = ckpt.dtype(det.pos_key)
    result = Plan(stats=base.decomposition_stats(det, parts, request))
    global_size: Size = tuple(parts.global_.shape[:2])
    if request.target == BAKED:
        # A split timm abswin source bakes into plain timm Hiera: one flat pos_embed, no pos_embed_win.
        layout = "flat" if det.window_key else det.layout
        if not base.is_identity(det, out_grid, request):
            result.replace[det.pos_key] = RawTensor.encode(base.bake(parts, det, prefix, out_grid, layout), dtype)
        if det.window_key:
            result.drop.add(det.window_key)
        _resize_decoder(ckpt, det, out_grid, result)
        result.config = _updated_config(ckpt.config, request, None)
        return result
    mapping = timm_key_map(ckpt, det)
    result.rename = {k: v for k, v in mapping.items() if k != v}
    result.drop = {k for k in ckpt.keys() if k not in mapping}
    result.replace[det.pos_key] = RawTensor.encode(base.nchw(parts.global_), dtype)
    result.add[TIMM_WINDOW_KEY] = RawTensor.encode(base.nchw(parts.window), dtype)
    if result.drop:
        result.notes.append(f"dropped {len(result.drop)} tensors timm's Hiera has no place for (e.g. {sorted(result.drop)[0]})")
    if det.spelling in ("timm", TIMM_ABSWIN):  # other formats' configs do not describe a timm model
        result.config = _updated_config(ckpt.config, request, global_size)
    gh, gw = global_size
    config = (ckpt.config or {}) if det.spelling in ("timm", TIMM_ABSWIN) else {}
    arch = config.get("architecture")
    name = f"'{arch}'" if isinstance(arch, str) else _timm_arch(ckpt, det)
    own = {k: v for k, v in (config.get("model_args") or {}).items() if k not in _SIZE_ARGS}  # e.g. a custom width
    result.notes.append(
        f"timm.create_model({name}, {''.join(f'{k}={v!r}, ' for k, v in own.items())}abs_win_pos_embed=True, "
        f"global_pos_size=({gh}, {gw}), img_size={base.size_arg(request.img_size)}) loads it with strict=True"
    )
    return result


def _timm_arch(ckpt: Checkpoint, det: Detection) -> str:
    """timm's name for a Hiera with this stem width and block count (timm's hiera_*_224 table), else a hint."""
    width = ckpt.shape(det.pos_key)[-1] if det.layout == "flat" else ckpt.shape(det.pos_key)[1]
    blocks = len({key.split(".")[1] for key in ckpt.keys() if key.startswith(f"{det.key_prefix}blocks.")})
    known = _TIMM_HIERAS.get((width, blocks))
    return f"'{known}'" if known else "'hiera_<size>_224' (your Hiera's timm name)"


def _resize_decoder(ckpt: Checkpoint, det: Detection, out_grid: Size, result: Plan) -> None:
    """MAE decoders hold one embedding per mask unit; a model built for the new size needs it resized."""
    for key in DECODER_KEYS:
        if key not in ckpt:
            continue
        units = (det.grid[0] // det.window[0], det.grid[1] // det.window[1])
        grid = to_grid(ckpt.tensor(key).float64(), "flat", hw=units).grid
        new_units = (out_grid[0] // det.window[0], out_grid[1] // det.window[1])
        resized = BICUBIC.apply(grid, new_units).reshape(1, -1, grid.shape[-1])
        result.replace[key] = RawTensor.encode(resized, ckpt.dtype(key))
        result.notes.append(f"{key} (MAE decoder, global attention) resized {format_size(units)} -> {format_size(new_units)}")


def _updated_config(config: dict | None, request: ConvertRequest, abswin_global: Size | None) -> dict | None:
    """The source's config.json for the output: input size changed wherever the config records it; for timm, the
    absolute-win arguments set (``abswin_global``: the global part's size) or removed."""
    if not config:
        return None
    size = list(request.img_size)
    if timm_runtime.is_timm_config(config):
        return timm_runtime.resized_config(config, request.img_size, img_size=size,
                                           **timm_runtime.abswin_args(abswin_global))
    updated = copy.deepcopy(config)
    if "image_size" in updated:  # transformers
        updated["image_size"] = size
    if "input_size" in updated:  # official hub mixin: the constructor's arguments
        updated["input_size"] = list(updated["input_size"][:-2]) + size
    return updated


def timm_key_map(ckpt: Checkpoint, det: Detection) -> dict[str, str]:
    """Source key -> timm Hiera key, for every key timm's Hiera has a place for."""
    if det.spelling in ("timm", TIMM_ABSWIN):
        return {k: k for k in ckpt.keys()}
    if det.spelling == "official":
        return {k: _official_to_timm(k) for k in ckpt.keys() if not k.startswith(MAE_ONLY_PREFIXES)}
    offsets = _stage_offsets(ckpt.keys(), det.key_prefix)
    mapped = {k: _hf_to_timm(k, det.key_prefix, offsets) for k in ckpt.keys()}
    return {k: v for k, v in mapped.items() if v is not None}


def _official_to_timm(key: str) -> str:
    if key.startswith("head.projection."):
        return key.replace("head.projection.", "head.fc.")
    if key.startswith(("norm.", "encoder_norm.")):
        return "head.norm." + key.split(".", 1)[1]
    return key


_HF_BLOCK = re.compile(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.(.+)")
_HF_LAYER_NAMES = {"layernorm_before": "norm1", "layernorm_after": "norm2"}
_HF_FIXED = {
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "pooler.layernorm.weight": "head.norm.weight",
    "pooler.layernorm.bias": "head.norm.bias",
}


def _stage_offsets(keys: list[str], prefix: str) -> list[int]:
    """Index of each stage's first block in timm's flat ``blocks`` list, from the layers present."""
    depths: dict[int, int] = {}
    for key in keys:
        found = _HF_BLOCK.match(key[len(prefix):]) if key.startswith(prefix) else None
        if found:
            stage, layer = int(found.group(1)), int(found.group(2))
            depths[stage] = max(depths.get(stage, 0), layer + 1)
    offsets, total = [], 0
    for stage in range(len(depths)):
        offsets.append(total)
        total += depths.get(stage, 0)
    return offsets


def _hf_to_timm(key: str, prefix: str, offsets: list[int]) -> str | None:
    if key.startswith("classifier."):
        return "head.fc." + key.split(".", 1)[1]
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix):]
    if rest in _HF_FIXED:
        return _HF_FIXED[rest]
    found = _HF_BLOCK.match(rest)
    if not found:
        return None
    block = offsets[int(found.group(1))] + int(found.group(2))
    module, _, leaf = found.group(3).partition(".")
    return f"blocks.{block}.{_HF_LAYER_NAMES.get(module, module)}.{leaf}"


FAMILY = Family(NAME, from_checkpoint_alone(detect), plan, library="hiera", task="image-classification")
