"""SAM2 / SAM2.1 image-encoder trunk (HieraDet) in its three spellings, and Hiera -> SAM2 trunk.

- ``sam2`` ``.pt`` ``{'model': sd}``: trunk under ``image_encoder.trunk.``, MLPs ``mlp.layers.0/1``
- transformers ``Sam2Model``: under ``vision_encoder.backbone.`` (``backbone.`` in ``Sam2VisionModel``),
  ``layer_norm1/2``, ``mlp.proj_in/out``, ``patch_embed.projection``; sizes in ``config.json``
- timm ``sam2_hiera_*``: flat, ``mlp.fc1/fc2``, a ``head.*`` classifier on top

SAM2 already is absolute win: ``pos_embed [1, C, gh, gw]`` is the global ("background") part and
``pos_embed_window [1, C, 8, 8]`` the window part. All three runtimes compose them on every forward as
``F.interpolate(pos_embed, (h, w), mode="bicubic")`` (no antialias) plus the window tiled ``h // 8 x w // 8``
times: floor division, so input sides must be multiples of 32 px. Hence "baked" keeps that two-part layout and
the same keys; the file then runs at any such size. ``--global-size full`` keeps the background as it is (exact);
``GHxGW`` refits it through SAM2's resize to the background at the native grid, keeping the learned window part
(at the same size that gives back the same background, which re-splitting the composed grid would not). The
``sam2`` target writes the ``sam2`` package's own names.
"""

from __future__ import annotations

import copy
import re

from ..errors import AbswinError
from ..io.checkpoint import Checkpoint
from ..io.tensors import RawTensor
from ..maths.grid import format_size
from ..maths.resize import BICUBIC, Size
from ..plan import Plan
from ..runtimes import timm as timm_runtime
from ..vocabulary import BAKED, SAM2, SAM2_TRUNK
from . import base, window_change
from .base import SAM2_WINDOW_KEY, ConvertRequest, Detection, Family, from_checkpoint_alone

NAME = SAM2
PATCH_STRIDE = 4
IMAGE_CHANNELS = 3  # SAM2's Hiera stem reads RGB (its constructor has no in_chans)
SAM2_PREFIX = "image_encoder.trunk."
SAM2_WRAPPER = "model"
NATIVE_INPUT = 1024  # SAM2 trains at 1024 px, and SAM2ImagePredictor hard-codes its feature sizes for it; a
# transformers config.json may say otherwise
TARGETS = (BAKED, SAM2_TRUNK)

# Per format, a key (after the trunk prefix) that only that spelling has.
_FORMAT_MARKERS = (
    ("transformers", "patch_embed.projection.weight"),
    ("timm", "blocks.0.mlp.fc1.weight"),
    ("sam2", "blocks.0.mlp.layers.0.weight"),
)
# Per format, (old, new) substrings that turn a trunk key into SAM2's; timm Hiera shares timm HieraDet's names.
_RENAMES = {
    "sam2": (),
    "timm": (("mlp.fc1.", "mlp.layers.0."), ("mlp.fc2.", "mlp.layers.1.")),
    "transformers": (
        ("patch_embed.projection.", "patch_embed.proj."),
        ("layer_norm1.", "norm1."),
        ("layer_norm2.", "norm2."),
        ("mlp.proj_in.", "mlp.layers.0."),
        ("mlp.proj_out.", "mlp.layers.1."),
    ),
}
# Every parameter of sam2.modeling.backbones.hieradet.Hiera.
_SAM2_TRUNK_KEY = re.compile(
    r"pos_embed|pos_embed_window|patch_embed\.proj\.(weight|bias)"
    r"|blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|proj|mlp\.layers\.[01])\.(weight|bias)"
)
_BACKGROUND_FIELD = "window_positional_embedding_background_size"  # transformers' name for gh x gw
_SPEC_FIELD = "window_size_per_stage"  # transformers' name for window_spec


def detect(ckpt: Checkpoint) -> Detection | None:
    """A SAM2 trunk: ``pos_embed`` (4-D) beside ``pos_embed_window``, under any prefix."""
    prefix = _trunk_prefix(ckpt)
    if prefix is None:
        return None
    fmt = next((f for f, marker in _FORMAT_MARKERS if prefix + marker in ckpt), None)
    if fmt is None:
        return None
    window = base.to_grid_size(ckpt, prefix + SAM2_WINDOW_KEY)
    side = NATIVE_INPUT // PATCH_STRIDE
    grid = _configured_grid(ckpt.config) or (side, side)
    return Detection(NAME, fmt, prefix + "pos_embed", "nchw", grid, window, PATCH_STRIDE, BICUBIC, TARGETS,
                     window_key=prefix + SAM2_WINDOW_KEY, key_prefix=prefix)


def _trunk_prefix(ckpt: Checkpoint) -> str | None:
    for key in ckpt.keys():
        if not key.endswith(SAM2_WINDOW_KEY):
            continue
        prefix = key[: -len(SAM2_WINDOW_KEY)]
        whole_name = prefix == "" or prefix.endswith(".")
        if whole_name and prefix + "pos_embed" in ckpt and len(ckpt.shape(key)) == len(ckpt.shape(prefix + "pos_embed")) == 4:
            return prefix
    return None


def _backbone_config(config: dict | None) -> dict | None:
    """The (possibly nested) transformers ``Sam2HieraDetConfig`` in a config.json."""
    if not isinstance(config, dict):
        return None
    if _BACKGROUND_FIELD in config:
        return config
    for value in config.values():
        if (found := _backbone_config(value)) is not None:
            return found
    return None


def _configured_grid(config: dict | None) -> Size | None:
    size = (_backbone_config(config) or {}).get("image_size")
    if size is None:
        return None
    height, width = (size, size) if isinstance(size, int) else size[-2:]
    return (int(height) // PATCH_STRIDE, int(width) // PATCH_STRIDE)


def plan(ckpt: Checkpoint, det: Detection, request: ConvertRequest) -> Plan:
    """``baked``: same keys, same two-part layout; ``sam2``: the ``sam2`` package's trunk names."""
    base.require_target(det, request.target)
    base.output_grid(det, request.img_size)  # the runtime tiles h // 8 windows: sides must be multiples of 32
    parts, _ = base.read_parts(ckpt, det, request.global_size)
    result = Plan(stats=base.decomposition_stats(det, parts, request))
    result.replace[det.pos_key] = RawTensor.encode(base.nchw(parts.global_), ckpt.dtype(det.pos_key))
    background: Size = tuple(parts.global_.shape[:2])
    spec = _window_spec(ckpt, det, request)
    if request.target == BAKED:
        result.config = _updated_config(ckpt.config, request.img_size, background, spec)
        result.notes.append(_runtime_note(det.spelling, request.img_size, background, result.config is not None))
        if request.window_change is not None and spec is not None:
            _record_window_spec(ckpt, det, request.window_change, result, spec)
        return result
    rename, result.drop = trunk_rename(ckpt.keys(), det.key_prefix, det.spelling)
    result.rename = {k: v for k, v in rename.items() if k != v}
    result.wrapper = SAM2_WRAPPER  # what sam2's loader reads, with --format pt
    if det.spelling != "sam2":
        result.notes.append(
            f"kept the image-encoder trunk only, as image_encoder.trunk.*; dropped {len(result.drop)} other tensors"
        )
    result.notes.append(_runtime_note("sam2", request.img_size, background, False))
    if request.window_change is not None and spec is not None:
        _record_window_spec(ckpt, det, request.window_change, result, spec)
    return result


def _window_spec(ckpt: Checkpoint, det: Detection, request: ConvertRequest) -> tuple[int, ...] | None:
    """The ``window_spec`` asked for with ``--window-size``, once the trunk's stages can take it: one window per
    stage, stage 1's the side of ``pos_embed_window`` (a weight), even windows before each pooling (queries are
    pooled 2x2 inside windows), none larger than its stage's grid at the target size."""
    change = request.window_change
    if change is None:
        return None
    stages = _stage_count(ckpt, det)
    spec = change.window
    example = ",".join(map(str, (det.window[0], 4, 16, 8)[:stages] + (8,) * max(0, stages - 4)))
    if not change.per_stage or len(spec) != stages:
        raise AbswinError(
            f"--window-size {change.spelled}: this SAM2 trunk has {stages} stages, so its window_spec is {stages} "
            f"windows, one per stage (e.g. --window-size {example})"
        )
    if spec[0] != det.window[0] or det.window[0] != det.window[1]:
        raise AbswinError(
            f"--window-size {change.spelled}: stage 1's window is the {format_size(det.window)} pos_embed_window, a "
            f"weight; keep it at {det.window[0]} (e.g. --window-size {example})"
        )
    for stage, window in enumerate(spec[:-1], 1):
        if window % 2:
            raise AbswinError(
                f"--window-size {change.spelled}: stage {stage}'s window {window} is odd, and the next stage pools its "
                f"queries 2x2 inside it; use {window + 1} or {window - 1}"
            )
    for stage, window in enumerate(spec, 1):
        grid = (request.img_size[0] // (PATCH_STRIDE << (stage - 1)), request.img_size[1] // (PATCH_STRIDE << (stage - 1)))
        if window > min(grid):
            raise AbswinError(
                f"--window-size {change.spelled}: stage {stage}'s window {window} is larger than its {format_size(grid)} "
                f"grid at {format_size(request.img_size)} px; pass {min(grid)} or smaller there"
            )
    if spec == _configured_spec(ckpt.config):
        raise AbswinError(f"--window-size {change.spelled} is the trunk's own window_spec: nothing to change; drop it")
    return spec


def _stage_count(ckpt: Checkpoint, det: Detection) -> int:
    """Stages of the trunk: every stage after the first opens with a block that projects to a new width."""
    opening = re.compile(re.escape(det.key_prefix) + r"blocks\.\d+\.proj\.weight")
    return 1 + sum(1 for key in ckpt.keys() if opening.fullmatch(key))


def _configured_spec(config: dict | None) -> tuple[int, ...] | None:
    """The window spec a config.json records: transformers' ``window_size_per_stage``, timm's ``window_spec``."""
    spec = (_backbone_config(config) or {}).get(_SPEC_FIELD)
    if spec is None and timm_runtime.is_timm_config(config):
        spec = (config or {}).get("model_args", {}).get("window_spec")
    return tuple(spec) if isinstance(spec, list) else None


def _record_window_spec(ckpt: Checkpoint, det: Detection, change: window_change.WindowChange, result: Plan,
                        spec: tuple[int, ...]) -> None:
    """The new window_spec: how each runtime takes it, and what a window change records."""
    shown = ", ".join(map(str, spec))
    if det.spelling == "transformers" and result.config is not None:
        how = f"window_size_per_stage [{shown}] written to config.json"
    elif det.spelling == "timm" and result.wrapper is None:  # the baked target keeps timm's names
        how = f"timm.create_model(..., window_spec=({shown}))" + (" (written to config.json)" if result.config else "")
    else:
        how = f"sam2: build_sam2(CONFIG, CKPT, hydra_overrides_extra=['++model.image_encoder.trunk.window_spec=[{shown}]'])"
    result.notes.append(f"no weight changes: {how}")
    old = _configured_spec(ckpt.config)
    old_text = ",".join(map(str, old)) if old else "its window_spec (not recorded in the checkpoint)"
    window_change.record(result, old_text, change, result.config is not None)


def trunk_rename(keys: list[str], prefix: str, fmt: str) -> tuple[dict[str, str], set[str]]:
    """Source key -> ``image_encoder.trunk.*`` key for the trunk, and the keys the output has no place for.

    A ``sam2`` checkpoint keeps the rest of its model (neck, decoder, memory) under its own names.
    """
    rename, drop = {}, set()
    for key in keys:
        trunk_key = sam2_trunk_key(key[len(prefix):], fmt) if key.startswith(prefix) else None
        if trunk_key is not None:
            rename[key] = SAM2_PREFIX + trunk_key
        elif fmt != "sam2":
            drop.add(key)
    return rename, drop


def sam2_trunk_key(key: str, fmt: str) -> str | None:
    """A trunk key in ``fmt``'s spelling (``timm`` for Hiera too) as SAM2 names it; None for a classifier head."""
    if key.startswith("head."):
        return None
    for old, new in _RENAMES[fmt]:
        key = key.replace(old, new)
    if not _SAM2_TRUNK_KEY.fullmatch(key):
        raise AbswinError(f"{key} ({fmt}) has no counterpart in SAM2's Hiera trunk; it cannot be converted to a SAM2 trunk")
    return key


def _runtime_note(fmt: str, img_size: Size, background: Size, config_written: bool) -> str:
    field_name = {"sam2": "window_pos_embed_bkg_spatial_size", "timm": "global_pos_size"}.get(fmt, _BACKGROUND_FIELD)
    where = f"{field_name} as written to config.json" if config_written else f"{field_name}=({background[0]}, {background[1]})"
    note = (
        f"SAM2 composes pos_embed + pos_embed_window at run time, so these weights run at {format_size(img_size)} "
        f"and at any input whose sides are multiples of 32; build the trunk with {where}"
    )
    if fmt == "sam2" and tuple(img_size) != (NATIVE_INPUT, NATIVE_INPUT):
        h, w = img_size
        sizes = ", ".join(f"({h // s}, {w // s})" for s in (4, 8, 16))
        note += (
            f"; sam2's predictor assumes {NATIVE_INPUT} px: build with image_size={h} (the model config's image_size) "
            f"and set predictor._bb_feat_sizes = [{sizes}] on SAM2ImagePredictor"
        )
    return note


def _updated_config(config: dict | None, img_size: Size, background: Size, spec: tuple[int, ...] | None = None) -> dict | None:
    """The source's config.json with the input size, the feature sizes that follow it, the background size and a new
    window spec, where it records them (transformers' Sam2 configs, timm's hub config); anything else passes through."""
    if not config:
        return None
    updated = copy.deepcopy(config)
    backbone = _backbone_config(updated)
    if backbone is not None:
        backbone["image_size"] = list(img_size)
        backbone[_BACKGROUND_FIELD] = list(background)
        if spec is not None:
            backbone[_SPEC_FIELD] = list(spec)
        vision = updated.get("vision_config", updated)
        if isinstance(vision.get("backbone_feature_sizes"), list):
            levels = len(vision["backbone_feature_sizes"])  # strides 4, 8, 16, ...
            vision["backbone_feature_sizes"] = [[img_size[0] // (4 << i), img_size[1] // (4 << i)] for i in range(levels)]
        prompt = updated.get("prompt_encoder_config")
        if isinstance(prompt, dict) and img_size[0] == img_size[1]:
            prompt["image_size"] = img_size[0]  # transformers' prompt encoder takes one side only
    if timm_runtime.is_timm_config(updated) and isinstance(updated.get("model_args"), dict):
        extra = {"window_spec": list(spec)} if spec is not None else {}
        return timm_runtime.resized_config(updated, img_size, global_pos_size=list(background), **extra)
    return updated


FAMILY = Family(NAME, from_checkpoint_alone(detect), plan, library="sam2", task="mask-generation")
