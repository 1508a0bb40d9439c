"""The family registry: which family recognises a checkpoint, and which plan converts it to a target."""

from __future__ import annotations

import math
from dataclasses import replace

from .. import budget
from ..errors import AbswinError
from ..io.checkpoint import Checkpoint
from ..maths.grid import format_size
from ..maths.resize import Size
from ..plan import Plan
from . import generic, hiera, hiera_to_sam2, sam, sam2, vitdet
from .base import ConvertRequest, Detection, Family
from .overrides import Overrides
from .window_change import WindowChange

# Every family; auto-detection asks those that are auto-detected (not the generic one: --family generic or
# --key/--layout choose it). A Hiera image checkpoint can also become a SAM2 trunk (``hiera_to_sam2.py``).
ALL: dict[str, Family] = {f.name: f for f in (
    replace(hiera.FAMILY, extra_targets=(hiera_to_sam2.EXTRA_TARGET,)), sam.FAMILY, vitdet.FAMILY, sam2.FAMILY,
    generic.FAMILY,
)}
FAMILIES: dict[str, Family] = {name: f for name, f in ALL.items() if f.auto_detected}
NAMES = tuple(ALL)
# The families whose attention window --window-size can change (families/window_change.py).
WINDOW_CHANGEABLE = (sam.NAME, vitdet.NAME, sam2.NAME)


class NotRecognised(AbswinError):
    """No family recognises the checkpoint (as opposed to one that does, and refuses it)."""


def recognise(ckpt: Checkpoint, family: str | None = None, overrides: Overrides | None = None) -> tuple[Checkpoint, Detection]:
    """``detect``, seeing through the prefixes wrappers put before a model's names (DDP's ``module.``,
    ``torch.compile``'s ``_orig_mod.``, a Lightning attribute, ``backbone.``): the checkpoint returned names tensors
    without the prefix, and its ``stored_name`` puts it back. The shortest prefix that is recognised wins."""
    try:
        return ckpt, detect(ckpt, family, overrides)
    except NotRecognised:
        for prefix in _model_prefixes(ckpt):
            view = ckpt.without_prefix(prefix)
            try:
                return view, detect(view, family, overrides)
            except NotRecognised:
                continue
        raise


def _model_prefixes(ckpt: Checkpoint) -> list[str]:
    """Every dotted prefix of a position-like tensor's name (``a.`` and ``a.b.`` of ``a.b.pos_embed``), shortest first."""
    found: set[str] = set()
    for key in ckpt.keys():
        parts = key.split(".")
        if "pos" in parts[-1] or "position" in key:
            found.update(".".join(parts[:i]) + "." for i in range(1, len(parts)))
    return sorted(found, key=lambda p: (len(p), p))


def detect(ckpt: Checkpoint, family: str | None = None, overrides: Overrides | None = None) -> Detection:
    """The one family that recognises ``ckpt`` (or the one named), with what it found and the user's overrides."""
    overrides = overrides or Overrides()
    if family == generic.NAME or (family is None and overrides.names_tensor):
        told = ALL[generic.NAME].detect(ckpt, overrides)
        assert told is not None  # the generic family reads what it is told, or refuses
        return _within_budget(ckpt, told)
    if overrides.names_tensor:
        raise AbswinError(
            f"--key/--layout describe a checkpoint of a family we do not know; drop --family {family} or use --family generic"
        )
    if family is not None and family not in FAMILIES:
        raise AbswinError(f"unknown family {family!r}; known: {', '.join(NAMES)}")
    candidates = [FAMILIES[family]] if family else list(FAMILIES.values())
    found = [det for candidate in candidates if (det := candidate.detect(ckpt, overrides)) is not None]
    if len(found) == 1:
        return _within_budget(ckpt, _with_extra_targets(overrides.apply(found[0])))
    if not found:
        named = f"as {family}" if family else f"as any of {', '.join(FAMILIES)}"
        other_family = "" if family else "pass --family if it is one of these, or "
        flags = "--family generic --key/--layout/--window" if family else "--key/--layout/--window"
        raise NotRecognised(
            f"{ckpt.path.name}: no position embedding recognised {named}; {generic.position_candidates(ckpt)}; "
            f"{other_family}describe it with {flags} (and --patch-stride when no patch convolution shows it), as for "
            "a family we do not know"
        )
    names = ", ".join(f"{det.family} ({det.spelling})" for det in found)
    raise AbswinError(f"{ckpt.path.name}: ambiguous checkpoint, it fits {names}; pass --family to choose")


def _within_budget(ckpt: Checkpoint, det: Detection) -> Detection:
    """``det``, once its native grid in whole windows (``--window`` may be anything) fits the memory budget."""
    shape = ckpt.shape(det.pos_key)
    if math.prod(shape) == 0:
        raise AbswinError(f"{ckpt.path.name}: position tensor {det.pos_key} {list(shape)} holds nothing; it is not an embedding")
    _require_memory(ckpt, det, det.grid, f"the native grid {format_size(det.grid)} in whole {format_size(det.window)} windows")
    return det


def _require_memory(ckpt: Checkpoint, det: Detection, grid: Size, what: str) -> None:
    """Refuse a grid whose work buffers would not fit the memory budget, before anything is computed."""
    tokens = max(det.grid[0] * det.grid[1] + det.prefix_tokens, 1)
    channels = max(math.prod(ckpt.shape(det.pos_key)) // tokens, 1)
    budget.require(budget.grid_work_bytes(grid, channels, det.window), f"{what} ({channels} channels)")


def _with_extra_targets(det: Detection) -> Detection:
    """The targets of ``det`` with those its family can also produce for it."""
    extra = tuple(t.name for t in ALL[det.family].extra_targets if t.applies(det))
    return replace(det, targets=(*det.targets, *extra)) if extra else det


def run_input(ckpt: Checkpoint, det: Detection) -> Size:
    """The input size the model runs at as it is: a finetuned ViTDet's (its runtime interpolates the stored grid),
    else its native size. A change of window alone (``--window-size`` without ``--img-size``) keeps it."""
    if det.family == vitdet.NAME and (size := vitdet.interpolated_size(ckpt, det)):
        return (size, size)
    return det.native_input


def asked_request(img_size: int | str | Size | None, target: str, global_size: int | str | Size | None,
                  change: WindowChange | None) -> ConvertRequest | None:
    """What the caller asked for, checked before any source is opened; None for a change of window alone, whose
    size is the model's own (``full_request``)."""
    if img_size is None and change is None:
        raise AbswinError("nothing to convert for: pass --img-size N (a new input size), --window-size N, or both")
    return ConvertRequest.parse(img_size, target, global_size, change) if img_size is not None else None


def full_request(asked: ConvertRequest | None, ckpt: Checkpoint, det: Detection, target: str,
                 global_size: int | str | Size | None, change: WindowChange | None) -> ConvertRequest:
    """The request as asked, or for a change of window alone the same request at the size the model runs at."""
    return asked or ConvertRequest.parse(run_input(ckpt, det), target, global_size, change)


def plan(ckpt: Checkpoint, det: Detection, request: ConvertRequest) -> Plan:
    """The tensor edits that convert ``ckpt`` (detected as ``det``) for ``request``."""
    if request.img_size is not None:
        grid = (request.img_size[0] // max(det.patch_stride, 1), request.img_size[1] // max(det.patch_stride, 1))
        _require_memory(ckpt, det, grid, f"--img-size {format_size(request.img_size)}")
    if request.global_size is not None:
        _require_memory(ckpt, det, request.global_size, f"--global-size {format_size(request.global_size)}")
    if request.window_change is not None and det.family not in WINDOW_CHANGEABLE:
        raise AbswinError(
            f"--window-size changes the attention window of {', '.join(WINDOW_CHANGEABLE)} checkpoints; {det.family} "
            f"({det.spelling}) is not one of them" + (" (its windows are the mask units its embedding is laid out on)"
                                                      if det.family == hiera.NAME else "")
        )
    family = ALL[det.family]
    extra = family.extra_target(det, request.target)
    return (extra.plan if extra else family.plan)(ckpt, det, request)
