"""SAM (Segment Anything) image encoders: segment-anything ``.pth``, transformers ``Sam*`` and timm ``samvit_*``.

SAM's ViT adds a learned ``pos_embed [1, 64, 64, C]`` (NHWC; 1024 px, patch 16) and attends in 14x14 windows,
padding the grid at the bottom-right (64 -> 70), so windows are anchored at the top-left token and any whole number
of patches works. The embedding splits into its 14-periodic window part and a global part that SAM-style runtimes
resize with plain bicubic. The global blocks' relative-position tables are resized for the new grid the way SAM's
own ``get_rel_pos`` would, so a model built for the new size loads the result with ``strict=True``.
"""

from __future__ import annotations

import copy

from ..io.checkpoint import Checkpoint
from ..maths.grid import format_size
from ..maths.resize import BICUBIC, Size
from ..plan import Plan
from ..runtimes import timm as timm_runtime
from ..vocabulary import BAKED, SAM
from . import base, relpos, window_change
from .base import ConvertRequest, Detection, Family, from_checkpoint_alone

NAME = SAM
WINDOW = (14, 14)
# (format, position key, patch-embedding weight)
FORMATS = (
    ("segment-anything", "image_encoder.pos_embed", "image_encoder.patch_embed.proj.weight"),
    ("transformers", "vision_encoder.pos_embed", "vision_encoder.patch_embed.projection.weight"),
    ("timm", "pos_embed", "patch_embed.proj.weight"),
)
_TIMM_ARCHS = {768: "samvit_base_patch16", 1024: "samvit_large_patch16", 1280: "samvit_huge_patch16"}
# segment-anything and transformers take one int as the image size; timm takes (H, W).
_SQUARE_ONLY = ("segment-anything", "transformers")


def detect(ckpt: Checkpoint) -> Detection | None:
    """A 4-D NHWC ``pos_embed`` whose last axis is the patch embedding's width, and no separate window part
    (an NCHW absolute-win ``pos_embed`` whose global grid happens to equal its width reads as NHWC too)."""
    if base.holds_window_part(ckpt):
        return None
    for fmt, pos_key, patch_key in FORMATS:
        if pos_key not in ckpt or patch_key not in ckpt:
            continue
        pos_shape, patch_shape = ckpt.shape(pos_key), ckpt.shape(patch_key)
        if len(pos_shape) != 4 or len(patch_shape) != 4 or pos_shape[-1] != patch_shape[0]:
            continue
        vision = _vision_config(ckpt.config)
        window = (vision["window_size"],) * 2 if vision.get("window_size") else relpos.window_of(ckpt) or WINDOW
        global_ = relpos.global_blocks(ckpt, vision.get("global_attn_indexes"))
        return Detection(
            NAME, fmt, pos_key, "nhwc", (pos_shape[1], pos_shape[2]), window, patch_shape[-1], BICUBIC, (BAKED,),
            pads_windows=True, global_blocks=tuple(global_), rel_pos_tables=len(relpos.tables(ckpt)),
        )
    return None


def _vision_config(config: dict | None) -> dict:
    """The vision part of a transformers config (``SamConfig.vision_config``, or a ``SamVisionConfig`` itself)."""
    if not config:
        return {}
    vision = config.get("vision_config", config)
    return vision if isinstance(vision, dict) else {}


def plan(ckpt: Checkpoint, det: Detection, request: ConvertRequest) -> Plan:
    """The NHWC embedding baked for ``img_size``, the global blocks' tables resized to match; with a window change
    (``--window-size``) the windowed blocks' tables too, and the embedding's window part kept or re-windowed."""
    if det.spelling in _SQUARE_ONLY:
        base.require_square(request.img_size, f"SAM ({det.spelling})")
    change = request.window_change
    out_grid = base.output_grid(det, request.img_size)
    window = window_change.require_planar(change, det, out_grid) if change else det.window
    result = base.baked_plan(ckpt, det, request)
    if window_change.leaves_position(change, request.img_size, det.native_input):
        result.replace.pop(det.pos_key, None)  # PR 594: the embedding stays exactly as it was
    relpos.resize_tables(ckpt, det.global_blocks, window, out_grid, result, bool(change and change.align_corners))
    new_window = window[0] if change else None
    if det.spelling == "transformers":
        result.config = _updated_config(ckpt.config, request.img_size[0], det.patch_stride, new_window)
    elif new_window and timm_runtime.is_timm_config(ckpt.config):
        result.config = timm_runtime.resized_config(ckpt.config, request.img_size, window_size=new_window)  # type: ignore[arg-type]
    result.notes.append(_build_note(det, request.img_size, out_grid, result.config is not None, _timm_arch(ckpt, det),
                                    new_window))
    if change:
        window_change.record(result, format_size(det.window), change, result.config is not None)
    return result


def _updated_config(config: dict | None, img_size: int, patch_stride: int, window: int | None = None) -> dict | None:
    """transformers config.json with every record of the input size (and the window, when it changes) changed."""
    if not config:
        return None
    updated = copy.deepcopy(config)
    vision = _vision_config(updated)
    vision["image_size"] = img_size
    if window is not None:
        vision["window_size"] = window
    prompt = updated.get("prompt_encoder_config")
    if isinstance(prompt, dict):
        prompt["image_size"] = img_size
        prompt["image_embedding_size"] = img_size // patch_stride
    return updated


def _timm_arch(ckpt: Checkpoint, det: Detection) -> str:
    """The timm name of the model: its config.json's, else the SAM size its width says (768 base, 1024 large, 1280 huge)."""
    if ckpt.config and isinstance(ckpt.config.get("architecture"), str):
        return ckpt.config["architecture"]
    return _TIMM_ARCHS.get(ckpt.shape(det.pos_key)[-1], "samvit_base_patch16")


def _build_note(det: Detection, img_size: Size, grid: Size, wrote_config: bool, timm_arch: str,
                window: int | None) -> str:
    """How to build the model that loads the output."""
    n, g = img_size[0], grid[0]
    win = f", window_size={window}" if window else ""
    if det.spelling == "segment-anything":
        return (
            f"build ImageEncoderViT(img_size={n}{win}, ...) and PromptEncoder(image_embedding_size=({g}, {g}), "
            f"input_image_size=({n}, {n}), ...); sam_model_registry's builders fix 1024" + (" and 14" if window else "")
        )
    if det.spelling == "transformers":
        done = "written to config.json" if wrote_config else "set them in the model config"
        window_field = f", vision_config.window_size={window}" if window else ""
        return f"vision_config.image_size={n}{window_field}, prompt_encoder_config.image_size={n} ({done})"
    return f"timm.create_model('{timm_arch}', img_size={base.size_arg(img_size)}{win}) loads it with strict=True"


FAMILY = Family(NAME, from_checkpoint_alone(detect), plan, library="segment-anything", task="mask-generation")
