"""ViTDet and the plain ViTs it starts from: detectron2 (``.pkl`` / ``.pth``), transformers ``VitDet``, mmdet's
ViTDet, MAE, DeiT, mmpretrain and timm ``vit_*``. All hold a flat embedding with a cls row, ``[1, 1 + 14*14, C]``
for 224 px at patch 16.

ViTDet backbones (detectron2, transformers, mmdet, or any with windowed blocks' relative-position tables) are
windowed. A plain ViT attends globally: its window is its whole grid, there is no pattern to protect, and the
tiling recipe (which changes what it computes) is refused unless asked for with ``--recipe tile`` or ``--window``.
A finetuned ViTDet that runs at a larger size than its stored grid (its config, or its global tables, say so)
keeps the interpolation it was finetuned with unless the tiling recipe is asked for.

The paper's ViTDet recipe: the pretrained grid itself is the window part (resized to the window when the sizes
differ), tiled into every window at the target size; the global part is zero. ``--global-size GHxGW`` moves into a
global part what a GHxGW grid can express of the pretrained grid through the resize (least squares), leaving the
rest to the window part: composed at the pretrained size that is still exactly the pretrained grid, and
``--global-size`` equal to the pretrained grid gives the naive resize back. The cls row stays first, so detectron2's
``get_abs_pos`` and transformers' ``get_absolute_positions`` see a grid of the input's size and do not interpolate.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np

from ..errors import AbswinError
from ..io.checkpoint import Checkpoint
from ..io.provenance import NO_GLOBAL_PART
from ..io.tensors import RawTensor
from ..maths import absolute_win as aw
from ..maths.grid import PositionGrid, format_size, from_grid, to_grid
from ..maths.resize import BICUBIC, Size
from ..plan import Plan
from ..vocabulary import BAKED, VITDET
from . import base, relpos, window_change
from .base import ConvertRequest, Decomposition, Detection, Family, from_checkpoint_alone
from .overrides import RECIPE_FLAG, RECIPE_HELP, refuse_plain

NAME = VITDET
WINDOW = (14, 14)  # ViTDet's windowed blocks
_HIERA_STEM = 7  # Hiera's overlapping 7x7 stem: a Hiera checkpoint, not a ViT
MAE_DECODER_KEY = "decoder_pos_embed"
# (format, position key, patch-embedding weight); "timm" covers MAE and DeiT, told apart by wrapper, EMA or decoder.
FORMATS = (
    ("detectron2", "backbone.net.pos_embed", "backbone.net.patch_embed.proj.weight"),
    ("transformers", "embeddings.position_embeddings", "embeddings.projection.weight"),
    ("timm", "pos_embed", "patch_embed.proj.weight"),
    ("timm", "pos_embedding", "patch_embed.proj.weight"),
    ("mmpretrain", "pos_embed", "patch_embed.projection.weight"),
)
# A plain ViT under the names people give it (torchvision, transformers ViT, vit-pytorch, their own code): one of
# these position tensors beside a patch embedding under one of these module names.
PLAIN_VIT = "vit"
POSITION_NAMES = ("pos_embed", "pos_embedding", "position_embeddings", "encoder.pos_embedding",
                  "embeddings.position_embeddings")
PATCH_MODULES = ("patch_embed", "patch_embedding", "patch_embeddings", "to_patch_embedding", "conv_proj")
WINDOWED_FORMATS = ("detectron2", "mmdet", "transformers")  # ViTDet backbones: windowed blocks by construction
_SQUARE_ONLY = {
    "detectron2": "detectron2's ViT (pretrain_img_size)",
    "mmdet": "mmdet's ViTDet ViT (pretrain_img_size)",
    "transformers": "transformers VitDet (pretrain_image_size)",
}
_GET_ABS_POS = ("detectron2", "mmdet")  # runtimes that interpolate with get_abs_pos, set up by pretrain_img_size


def detect(ckpt: Checkpoint) -> Detection | None:
    """A flat ``[1, P + H*W, C]`` embedding beside a square, non-overlapping patch embedding."""
    for fmt, pos_key, patch_key in [*FORMATS, *_usual_names(ckpt)]:
        if pos_key not in ckpt or patch_key not in ckpt:
            continue
        pos_shape, patch_shape = ckpt.shape(pos_key), ckpt.shape(patch_key)
        if len(pos_shape) != 3 or len(patch_shape) not in (2, 4) or patch_shape[-1] == _HIERA_STEM:
            continue
        if len(patch_shape) == 2 and fmt != PLAIN_VIT:
            continue
        if fmt == "transformers" and ckpt.config and ckpt.config.get("model_type", "vitdet") != "vitdet":
            continue
        prefix = _prefix_tokens(ckpt, pos_shape[1])
        if prefix is None:
            continue
        side = math.isqrt(pos_shape[1] - prefix)
        window, configured = _configured(ckpt.config or {})
        if fmt == "timm" and ckpt.wrapper == "model" and "model_ema" in ckpt.other_states:
            fmt = "deit"  # DeiT's main.py saves its EMA beside the model; MAE's main_finetune does not
        elif fmt == "timm" and (ckpt.wrapper == "model" or MAE_DECODER_KEY in ckpt):
            fmt = "mae"
        if fmt == "mmpretrain" and relpos.tables(ckpt):
            fmt = "mmdet"  # OpenMMLab's names with windowed blocks: mmdet's ViTDet backbone
        # SAM-style windowed blocks carry relative-position tables of the window's length: windowed too.
        plain = fmt not in WINDOWED_FORMATS and not relpos.tables(ckpt)
        return Detection(
            NAME, fmt, pos_key, "flat_cls", (side, side), (side, side) if plain else window,
            patch_shape[-1] if len(patch_shape) == 4 else base.UNKNOWN_STRIDE, BICUBIC,
            (BAKED,), prefix, pads_windows=True, global_blocks=tuple(relpos.global_blocks(ckpt, configured)),
            rel_pos_tables=len(relpos.tables(ckpt)),
            recipe=(f"none by default (plain global-attention ViT); {RECIPE_FLAG}: " if plain else "")
            + f"the {side}x{side} pretrained grid is the window part, tiled per window; global part zero",
            global_attention=plain,
        )
    return None


def _usual_names(ckpt: Checkpoint) -> list[tuple[str, str, str]]:
    """``(PLAIN_VIT, position key, patch weight)`` for each usual position name beside a patch embedding whose
    weight has the embedding's channels: a convolution (its kernel is the patch size) or a Linear (it is not)."""
    found = []
    for pos_key in POSITION_NAMES:
        if pos_key not in ckpt or len(ckpt.shape(pos_key)) != 3:
            continue
        channels = ckpt.shape(pos_key)[-1]
        patches = [key for key in ckpt.keys() if key.endswith(".weight") and set(key.split(".")) & set(PATCH_MODULES)
                   and len(ckpt.shape(key)) in (2, 4) and ckpt.shape(key)[0] == channels]
        convs = [key for key in patches if len(ckpt.shape(key)) == 4 and ckpt.shape(key)[-1] == ckpt.shape(key)[-2]]
        if len(convs) == 1 or (not convs and len(patches) == 1):
            found.append((PLAIN_VIT, pos_key, (convs or patches)[0]))
    return found


def _configured(config: dict) -> tuple[Size, list[int] | None]:
    """Window and global blocks from a transformers ``VitDetConfig``; ViTDet's window (and no list) otherwise."""
    window = (config["window_size"],) * 2 if config.get("window_size") else WINDOW
    if "window_block_indices" not in config:
        return window, None
    return window, [i for i in range(config.get("num_hidden_layers", 0)) if i not in config["window_block_indices"]]


def _prefix_tokens(ckpt: Checkpoint, tokens: int) -> int | None:
    """How many rows precede the grid: the cls (and register) tokens when the rest is square, else none."""
    registers = ckpt.shape("reg_token")[1] if "reg_token" in ckpt else 0
    for prefix in dict.fromkeys((1 + registers, 1, 0)):
        if tokens > prefix and math.isqrt(tokens - prefix) ** 2 == tokens - prefix:
            return prefix
    return None


def recipe(grid: np.ndarray, det: Detection, global_size: Size | None) -> Decomposition:
    """The pretrained grid as window part (+ a least-squares global part when ``global_size`` is given)."""
    if global_size is None:
        global_ = np.zeros((1, 1, grid.shape[-1]))  # resizes to zero at any size
        local = grid
    else:
        global_, _ = aw.fit_global(grid, global_size, det.resize)
        local = grid - det.resize.apply(global_, det.grid)
    window = local if tuple(local.shape[:2]) == det.window else det.resize.apply(local, det.window)
    residual = aw.relative_error(aw.compose(window, global_, det.grid, det.resize), grid)
    return Decomposition(window, global_, residual, aw.normalized_window_energy(grid, det.window))


def plan(ckpt: Checkpoint, det: Detection, request: ConvertRequest) -> Plan:
    """The embedding for ``img_size`` as ``[1, P + h*w, C]``; relative-position tables and configs to match. With a
    window change (``--window-size``) the windowed blocks' tables follow the new window, and the embedding's window
    part is kept (a change of window alone then leaves the embedding as it is) or re-windowed."""
    base.require_target(det, request.target)
    change = request.window_change
    if change is not None and det.global_attention:
        raise AbswinError(
            f"{det.pos_key} belongs to a plain global-attention ViT ({det.spelling}): it has no windows to change; "
            f"{RECIPE_FLAG} --window N tiles it into N x N windows ({RECIPE_HELP})"
        )
    refuse_plain(det)
    if det.spelling in _SQUARE_ONLY or _transformers_vit(ckpt, det):
        base.require_square(request.img_size, _SQUARE_ONLY.get(det.spelling, "transformers ViT (image_size)"))
    out_grid = base.output_grid(det, request.img_size)
    window = window_change.require_planar(change, det, out_grid) if change else det.window
    pos = base.read_position(ckpt, det)
    runs_at = interpolated_size(ckpt, det)
    if window_change.leaves_position(change, request.img_size, (runs_at,) * 2 if runs_at else det.native_input):
        result = Plan(stats=base.decomposition_stats(det, recipe(pos.grid, det, det.grid), request))
        result.stats["recipe"] = "none: the embedding is kept as it is"
    else:
        result = _position_plan(ckpt, det, request, pos, runs_at, out_grid)
    relpos.resize_tables(ckpt, det.global_blocks, window, out_grid, result, bool(change and change.align_corners))
    if MAE_DECODER_KEY in ckpt:
        _resize_decoder(ckpt, det, out_grid, result)
    pos_changed = det.pos_key in result.replace
    new_window = window[0] if change else None
    if det.spelling == "transformers":
        result.config = _updated_config(ckpt.config, request.img_size[0] if pos_changed else None, new_window)
    elif _transformers_vit(ckpt, det) and pos_changed:
        result.config = {**(ckpt.config or {}), "image_size": request.img_size[0]}
    if pos_changed:
        result.notes.append(_config_note(det, request.img_size, result, ckpt.config))
    if change is not None:
        result.notes.append(_window_note(det, window[0], result.config is not None))
        window_change.record(result, format_size(det.window), change, result.config is not None)
    if pos_changed and request.global_size is None and det.spelling in _SQUARE_ONLY:
        g = f"{det.grid[0]}x{det.grid[1]}"
        result.notes.append(
            f"a finetuned ViTDet learned with the interpolated embedding: --global-size {g} keeps exactly that, "
            "the default tiles the pretrained grid (the paper's recipe for starting a finetune)"
        )
    return result


def _position_plan(ckpt: Checkpoint, det: Detection, request: ConvertRequest, pos: PositionGrid, runs_at: int | None,
                   out_grid: Size) -> Plan:
    """The embedding baked for ``out_grid`` by the recipe (or, for a finetuned ViTDet, the interpolation it ran with)."""
    if runs_at and request.global_size is None and not det.tile_requested:
        request = replace(request, global_size=det.grid)  # keep the interpolation it was finetuned with
    parts = window_change.rewindowed(recipe(pos.grid, det, request.global_size), det, request.window_change)
    result = Plan(stats=base.decomposition_stats(det, parts, request))
    result.stats["recipe"] = "vitdet: pretrained grid tiled per window" + ("" if request.global_size else ", global part zero")
    if request.global_size is None:
        result.stats["global_size"] = NO_GLOBAL_PART
    if runs_at and not det.tile_requested:
        result.stats["recipe"] = "vitdet: the runtime's interpolation of the pretrained grid, as finetuned"
        result.notes.append(
            f"the model runs at {runs_at} px, interpolating the {format_size(det.grid)} grid: kept "
            f"(pass {RECIPE_FLAG} for the tiling recipe, to start a new finetune)"
        )
    if request.global_size is None or not base.is_identity(det, out_grid, request):  # None: tiles only
        result.replace[det.pos_key] = RawTensor.encode(base.bake(parts, det, pos.prefix, out_grid), ckpt.dtype(det.pos_key))
    return result


def _resize_decoder(ckpt: Checkpoint, det: Detection, out_grid: Size, result: Plan) -> None:
    """MAE's decoder attends globally over the whole grid: its (fixed sin-cos) embedding is resized plainly."""
    pos = to_grid(ckpt.tensor(MAE_DECODER_KEY).float64(), "flat_cls", det.prefix_tokens)
    resized = PositionGrid(BICUBIC.apply(pos.grid, out_grid), pos.prefix)
    result.replace[MAE_DECODER_KEY] = RawTensor.encode(from_grid(resized, "flat_cls"), ckpt.dtype(MAE_DECODER_KEY))
    result.notes.append(
        f"{MAE_DECODER_KEY} (MAE decoder, global attention) resized {format_size(pos.size)} -> {format_size(out_grid)} (bicubic)"
    )


def interpolated_size(ckpt: Checkpoint, det: Detection) -> int | None:
    """The image size a finetuned ViTDet runs at, when its runtime interpolates the stored grid: a transformers
    config's ``image_size``, or the span of a detectron2 checkpoint's global relative-position tables."""
    size = None
    if det.spelling == "transformers":
        size = (ckpt.config or {}).get("image_size")
    elif det.spelling in _GET_ABS_POS and det.global_blocks:
        rows = max(ckpt.shape(k)[0] for k, (block, _) in relpos.tables(ckpt).items() if block in det.global_blocks)
        size = (rows + 1) // 2 * det.patch_stride
    if not isinstance(size, int) or size == det.native_input[0]:
        return None
    return size


def _transformers_vit(ckpt: Checkpoint, det: Detection) -> bool:
    """A transformers ``ViTModel`` folder: its config.json says the image size."""
    return det.spelling == PLAIN_VIT and (ckpt.config or {}).get("model_type") == "vit"


def _updated_config(config: dict | None, img_size: int | None, window: int | None = None) -> dict | None:
    """A transformers ``VitDetConfig`` for an embedding baked for ``img_size`` (None: kept) and a new ``window``."""
    if not config:
        return None
    updated = copy.deepcopy(config)
    if img_size is not None:
        updated["pretrain_image_size"] = img_size
        updated["image_size"] = img_size
    if window is not None:
        updated["window_size"] = window
    return updated


def _window_note(det: Detection, window: int, wrote_config: bool) -> str:
    """The one setting that builds the windowed blocks with the new window."""
    if det.spelling == "transformers":
        return f"transformers: window_size={window} ({'written to config.json' if wrote_config else 'set it in VitDetConfig'})"
    where = {"detectron2": "model.backbone.net.window_size", "mmdet": "model.backbone.window_size"}.get(det.spelling)
    return f"{det.spelling}: set window_size={window} on the ViT backbone" + (f" ({where})" if where else "")


def _config_note(det: Detection, img_size: Size, result: Plan, config: dict | None) -> str:
    """The one config change that makes the runtime take the embedding as it is."""
    n = img_size[0]
    if det.spelling in _GET_ABS_POS:
        resized = any(k.endswith(("rel_pos_h", "rel_pos_w")) for k in result.replace)
        extra = f" and img_size={n}" if resized else ""
        return f"{det.spelling}: set pretrain_img_size={n}{extra} on the ViT backbone, so get_abs_pos does not interpolate"
    if det.spelling == "transformers":
        done = "written to config.json" if result.config is not None else "set it in VitDetConfig"
        return f"transformers: pretrain_image_size={n}, image_size={n} ({done})"
    if result.config is not None and det.spelling == PLAIN_VIT:
        return f"transformers: image_size={n} (written to config.json)"
    if det.spelling == "mmpretrain":
        return f"mmpretrain: set img_size={n} on the VisionTransformer backbone (model.backbone.img_size in the config)"
    size = base.size_arg(img_size)
    arch = config.get("architecture") if config else None
    timm_call = f"timm.create_model('{arch if isinstance(arch, str) else 'vit_...'}', img_size={size})"
    return f"build the ViT with img_size={size} ({timm_call}; MAE's models_vit take img_size too)"


FAMILY = Family(NAME, from_checkpoint_alone(detect), plan, library="detectron2", task="image-feature-extraction")
