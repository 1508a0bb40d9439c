"""A Hiera image checkpoint (official, timm, timm abswin or transformers) as a SAM2 image-encoder trunk.

SAM2's trunk is Hiera with window attention in place of mask-unit attention: the same tokens in another order.
Keys map through timm Hiera's names (``hiera.timm_key_map``), which differ from SAM2's in the MLP names only
(``sam2.sam2_trunk_key``). SAM2 resizes its global part without antialias, Hiera's abswin with it, so the embedding
is composed at the native size with Hiera's resize and split again for SAM2's.
"""

from __future__ import annotations

from dataclasses import replace

from ..io.checkpoint import Checkpoint
from ..io.tensors import RawTensor
from ..maths import absolute_win as aw
from ..maths.grid import format_size
from ..maths.resize import BICUBIC, Size
from ..plan import Plan
from ..vocabulary import SAM2_TRUNK
from . import base, hiera, sam2
from .base import SAM2_WINDOW_KEY, TIMM_WINDOW_KEY, ConvertRequest, Detection, ExtraTarget

TARGET = SAM2_TRUNK


def applies(det: Detection) -> bool:
    """Every Hiera image checkpoint can become a SAM2 trunk (video ones cannot)."""
    return det.family == hiera.NAME and det.spelling != hiera.VIDEO_FORMAT


def plan(ckpt: Checkpoint, det: Detection, request: ConvertRequest) -> Plan:
    """The trunk under ``image_encoder.trunk.*`` in ``{'model': ...}``, loadable with ``strict=True``."""
    parts, _ = base.read_parts(ckpt, det, None)
    timm_names = hiera.timm_key_map(ckpt, det)
    native = aw.compose(parts.window, parts.global_, det.grid, det.resize)
    sam2_det = replace(det, resize=BICUBIC)
    base.output_grid(sam2_det, request.img_size)
    sam2_parts = base.decompose(native, sam2_det, request.global_size)
    result = Plan(stats=base.decomposition_stats(sam2_det, sam2_parts, request), wrapper=sam2.SAM2_WRAPPER)
    for key in ckpt.keys():
        trunk_key = None
        if key == det.pos_key:
            trunk_key = "pos_embed"
        elif key in timm_names and timm_names[key] != TIMM_WINDOW_KEY:  # timm abswin's window: replaced below
            trunk_key = sam2.sam2_trunk_key(timm_names[key], "timm")
        if trunk_key is None:
            result.drop.add(key)
        else:
            result.rename[key] = sam2.SAM2_PREFIX + trunk_key
    dtype = ckpt.dtype(det.pos_key)
    result.replace[det.pos_key] = RawTensor.encode(base.nchw(sam2_parts.global_), dtype)
    result.add[sam2.SAM2_PREFIX + SAM2_WINDOW_KEY] = RawTensor.encode(base.nchw(sam2_parts.window), dtype)
    if result.drop:
        result.notes.append(
            f"dropped {len(result.drop)} tensors a SAM2 trunk has no place for (classifier head, final norm, MAE decoder)"
        )
    background: Size = tuple(sam2_parts.global_.shape[:2])
    result.notes.append(_trunk_note(ckpt, det, timm_names, request.img_size, background))
    stem = {v: k for k, v in timm_names.items()}["patch_embed.proj.weight"]
    channels = ckpt.shape(stem)[1]
    if channels != sam2.IMAGE_CHANNELS:
        result.notes.append(
            f"the source's stem takes {channels} input channel{'s' if channels > 1 else ''}, SAM2's Hiera always "
            f"{sam2.IMAGE_CHANNELS} (it has no in_chans): a strict load fails on patch_embed.proj.weight "
            f"{list(ckpt.shape(stem))}; adapt that weight to {sam2.IMAGE_CHANNELS} channels before loading"
        )
    return result


# Stage-1 heads of the released Hieras by width (tiny/small/base 1, base_plus and large 2, huge 4), for sources whose
# config does not say: the weights cannot tell (qkv has the same shape for any head count).
_STAGE1_HEADS = {96: 1, 112: 2, 144: 2, 256: 4}


def _trunk_note(ckpt: Checkpoint, det: Detection, timm_names: dict[str, str], img_size: Size, background: Size) -> str:
    """The SAM2 ``Hiera(...)`` call that loads the output and computes what the Hiera computed.

    SAM2 has no global attention in a block that pools (its window unpartition divides by the window size), so
    Hiera's global stages 3-4 become windows as large as those stages' grids: exact for square inputs only.
    """
    by_name = {v: k for k, v in timm_names.items()}
    embed_dim = ckpt.shape(by_name["patch_embed.proj.weight"])[0]
    depth = 1 + max(int(n.split(".")[1]) for n in by_name if n.startswith("blocks."))
    starts = [0] + [i for i in range(1, depth) if f"blocks.{i}.proj.weight" in by_name] + [depth]
    stages = tuple(b - a for a, b in zip(starts, starts[1:]))
    config = {**(ckpt.config or {}), **(ckpt.config or {}).get("model_args", {})}  # official, or timm's model_args
    heads = config.get("num_heads", _STAGE1_HEADS.get(embed_dim, 1))
    heads = heads[0] if isinstance(heads, list) else heads
    q_pool = config.get("q_pool", config.get("num_query_pool", len(stages) - 1))
    grid = (img_size[0] // sam2.PATCH_STRIDE, img_size[1] // sam2.PATCH_STRIDE)
    window = det.window[0]
    # a stage's tokens shrink once per pooling before it: the first two stages' windows, the later stages' grids
    pooled = [min(s, q_pool) for s in range(len(stages))]
    spec = tuple(window >> p for p in pooled[:2]) + tuple(grid[0] >> p for p in pooled[2:])
    square = "" if grid[0] == grid[1] else f" (windows are square: at {format_size(img_size)} stages 3-4 are not global)"
    return (
        f"sam2.modeling.backbones.hieradet.Hiera(embed_dim={embed_dim}, num_heads={heads}, stages={stages}, "
        f"q_pool={q_pool}, window_spec={spec}, global_att_blocks=(), "
        f"window_pos_embed_bkg_spatial_size={background}) reproduces the Hiera at {format_size(img_size)}{square}"
    )


EXTRA_TARGET = ExtraTarget(TARGET, applies, plan)  # the hiera family carries it (families/__init__.py)
