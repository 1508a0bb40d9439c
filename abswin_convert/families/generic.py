"""A family we do not know: the user names the position tensor (``--key``), its layout and the window.

The embedding is split into its window-periodic part and a global part; the global part is resized with plain
bicubic, the window part tiled (anchored top-left, partial tiles cropped), and the result written back under the
same key. Auto-detection never picks this family: it is chosen by ``--family generic`` or ``--key``/``--layout``.
"""

from __future__ import annotations

from ..errors import AbswinError
from ..io.checkpoint import Checkpoint
from ..maths.grid import LAYOUTS, format_size, grid_size_of
from ..maths.resize import BICUBIC
from ..plan import Plan
from ..vocabulary import BAKED, GENERIC
from .base import ConvertRequest, Detection, Family, baked_plan, require_window_within_grid
from .overrides import RECIPE_FLAG, TILE, Overrides, refuse_plain

NAME = GENERIC


def detect(ckpt: Checkpoint, overrides: Overrides) -> Detection:
    """The position tensor the user named, read as they said. Never guesses; every flag still missing is named in
    one line. A grid that is one window is a plain ViT: converting it asks for ``--recipe tile``."""
    missing = [flag for flag, value in (("--key", overrides.key), ("--layout", overrides.layout),
                                        ("--window", overrides.window)) if value is None]
    stride = overrides.patch_stride or _patch_stride(ckpt)
    if missing:
        also = "" if stride else " and --patch-stride (no patch convolution shows it)"
        raise AbswinError(
            f"a checkpoint of a family we do not know needs --key, --layout and --window; missing {', '.join(missing)}{also}"
        )
    assert overrides.key is not None and overrides.layout is not None and overrides.window is not None
    if overrides.key not in ckpt:
        raise AbswinError(f"--key {overrides.key!r} is not in {ckpt.path.name}; {position_candidates(ckpt)}")
    if overrides.layout not in LAYOUTS:
        raise AbswinError(f"unknown layout {overrides.layout!r}; use one of {', '.join(LAYOUTS)}")
    prefix = 1 if overrides.layout == "flat_cls" else 0
    grid = grid_size_of(ckpt.shape(overrides.key), overrides.layout, prefix)
    one_window = tuple(overrides.window) == tuple(grid)
    if not stride:
        recipe = f", and {RECIPE_FLAG} to convert it (its grid is one window)" if one_window and not overrides.recipe else ""
        raise AbswinError(f"cannot read the patch stride from the checkpoint; pass --patch-stride (e.g. 16){recipe}")
    # We cannot know whether the runtime pads to whole windows, so the output grid must be whole windows.
    det = Detection(NAME, "override", overrides.key, overrides.layout, grid, overrides.window, stride, BICUBIC,
                    (BAKED,), prefix_tokens=prefix, global_attention=one_window,
                    tile_requested=overrides.recipe == TILE)
    return require_window_within_grid(det)


def _patch_stride(ckpt: Checkpoint) -> int | None:
    """The kernel of the patch embedding (a ViT's stride), when there is exactly one square patch conv."""
    kernels = {ckpt.shape(k)[-1] for k in ckpt.keys()
               if "patch" in k and k.endswith("weight") and len(ckpt.shape(k)) == 4 and ckpt.shape(k)[-1] == ckpt.shape(k)[-2]}
    return kernels.pop() if len(kernels) == 1 else None


def position_candidates(ckpt: Checkpoint, limit: int = 6) -> str:
    """A short list of the tensors that look like position embeddings, for error messages."""
    found = [f"{k} {list(ckpt.shape(k))}" for k in ckpt.keys() if "pos" in k.lower() and len(ckpt.shape(k)) >= 3]
    if not found:
        return "no tensor looks like a position embedding"
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    return f"tensors that look like position embeddings: {', '.join(found[:limit])}{more}"


def plan(ckpt: Checkpoint, det: Detection, request: ConvertRequest) -> Plan:
    """The embedding baked for the new size; nothing else in the checkpoint is touched."""
    refuse_plain(det)
    result = baked_plan(ckpt, det, request)
    result.stats["layout"] = det.layout  # what the user said, for the reproduce command of a model card
    result.notes.append(
        f"only {det.pos_key} was rewritten ({det.layout}, window {format_size(det.window)}, tiles anchored top-left); "
        "build the model for the new input size and load with strict=True"
    )
    return result


# Chosen only by --family generic or --key/--layout; its outputs are plain state dicts (torch loads them).
FAMILY = Family(NAME, detect, plan, library="pytorch", task=None, auto_detected=False)
