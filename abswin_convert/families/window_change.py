"""Changing the attention window of a pretrained SAM, ViTDet or SAM2 (``--window-size``), as segment-anything PR 594
does for SAM-L at 1024 px (16x16 windows divide the 64x64 grid; 14x14 ones are padded to 70x70).

For SAM and ViTDet the windowed blocks' relative-position tables go from ``2w - 1`` to ``2N - 1`` rows, linearly:
``get-rel-pos`` resizes them as the runtimes' own ``get_rel_pos`` would (``align_corners=False``), ``align-corners``
as PR 594's load hook does. The global blocks' tables follow the token grid as for any new size. The absolute
embedding's window-periodic part is either kept where it is (``keep``: PR 594 leaves ``pos_embed`` alone) or
re-windowed (``rewindow``: split with the old window, the window part resized to the new window and tiled with it,
the global part kept). SAM2's Hiera has no tables and its ``pos_embed_window`` belongs to stage 1, so there a window
change is its ``window_spec`` alone: no weight changes.

This is the one conversion that changes what a model computes at its own size: it happens only when asked, and the
output records the measured change (``evaluation/window_effect.py``). Everything it records is made here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..errors import AbswinError
from ..maths.grid import format_size
from ..maths.resize import Size
from ..plan import Plan
from ..vocabulary import DEFAULT_RELPOS_RESIZE, DEFAULT_WINDOW_PART, RELPOS_RESIZES, WINDOW_PARTS

if TYPE_CHECKING:  # base builds on this module (ConvertRequest holds a WindowChange)
    from .base import Decomposition, Detection

GET_REL_POS, ALIGN_CORNERS = RELPOS_RESIZES
KEEP, REWINDOW = WINDOW_PARTS
EFFECT_MEANING = "relative difference of the image encoder's output against the original at the native size"
_SPEC = re.compile(r"\d+(,\d+)+")


@dataclass(frozen=True)
class WindowChange:
    """What ``--window-size``, ``--relpos-resize`` and ``--window-part`` ask for. ``window`` is ``(h, w)`` for SAM and
    ViTDet, or a SAM2 ``window_spec`` (one window side per stage) when ``per_stage``."""

    window: tuple[int, ...]
    relpos_resize: str = DEFAULT_RELPOS_RESIZE
    window_part: str = DEFAULT_WINDOW_PART
    per_stage: bool = False

    @classmethod
    def parse(cls, window_size: int | str | tuple[int, ...] | list[int] | None, relpos_resize: str | None = None,
              window_part: str | None = None) -> WindowChange | None:
        """``N``, ``HxW`` or a per-stage ``8,4,16,8`` (also as an int or a list); None when no window is asked for."""
        if window_size is None:
            if relpos_resize is not None or window_part is not None:
                raise AbswinError("--relpos-resize and --window-part go with --window-size; pass --window-size N")
            return None
        relpos_resize = relpos_resize or DEFAULT_RELPOS_RESIZE
        window_part = window_part or DEFAULT_WINDOW_PART
        if relpos_resize not in RELPOS_RESIZES:
            raise AbswinError(f"unknown --relpos-resize {relpos_resize!r}; use one of {', '.join(RELPOS_RESIZES)}")
        if window_part not in WINDOW_PARTS:
            raise AbswinError(f"unknown --window-part {window_part!r}; use one of {', '.join(WINDOW_PARTS)}")
        window, per_stage = _parse_window(window_size)
        return cls(window, relpos_resize, window_part, per_stage)

    @property
    def size(self) -> Size:
        return (self.window[0], self.window[1])

    @property
    def align_corners(self) -> bool:
        return self.relpos_resize == ALIGN_CORNERS

    @property
    def spelled(self) -> str:
        return ",".join(map(str, self.window)) if self.per_stage else format_size(self.size)


def _parse_window(value: int | str | tuple[int, ...] | list[int]) -> tuple[tuple[int, ...], bool]:
    window: tuple[int, ...]
    if isinstance(value, bool):
        raise AbswinError(f"--window-size {value!r} is not a window")
    if isinstance(value, int):
        window, per_stage = (value, value), False
    elif isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        window, per_stage = tuple(value), len(value) != 2
    elif isinstance(value, str) and _SPEC.fullmatch(value.replace(" ", "")):
        window, per_stage = tuple(int(v) for v in value.replace(" ", "").split(",")), True
    elif isinstance(value, str) and re.fullmatch(r"\d+(x\d+)?", value.strip()):
        sides = [int(v) for v in value.strip().split("x")]
        window, per_stage = (sides[0], sides[-1]), False
    else:
        raise AbswinError(
            f"--window-size {value!r} is not a window: give N or HxW tokens (SAM, ViTDet), or one side per stage "
            "such as 8,4,16,8 (SAM2)"
        )
    if min(window) < 1:
        raise AbswinError(f"--window-size {value!r}: a window is at least one token")
    return window, per_stage


def require_planar(change: WindowChange, det: Detection, grid: Size) -> Size:
    """The new window of a SAM or ViTDet: one side (their runtimes take ``window_size`` as one int), different from
    the checkpoint's own, and no larger than the token ``grid`` the model runs at."""
    name = f"{det.family} ({det.spelling})"
    if change.per_stage:
        raise AbswinError(f"--window-size {change.spelled} is a per-stage SAM2 window_spec; {name} takes one window: N")
    window = change.size
    if window[0] != window[1]:
        raise AbswinError(
            f"--window-size {change.spelled}: {name} takes one window side (its window_size is one int); "
            f"pass --window-size {max(window)}"
        )
    if window == det.window:
        raise AbswinError(f"--window-size {change.spelled} is {name}'s own window: nothing to change; drop --window-size")
    if window[0] > grid[0] or window[1] > grid[1]:
        raise AbswinError(
            f"--window-size {change.spelled} is larger than the {format_size(grid)} token grid the model runs at; "
            f"pass --window-size {min(grid)} or smaller"
        )
    return window


def rewindowed_part(change: WindowChange | None) -> bool:
    """Whether ``change`` resizes the window part (``--window-part rewindow``)."""
    return change is not None and change.window_part == REWINDOW


def rewindowed(parts: Decomposition, det: Detection, change: WindowChange | None) -> Decomposition:
    """``parts`` with the window part resized to the new window (``--window-part rewindow``), with the family's own
    resize; as they are otherwise, so that composing tiles the old window (``keep``)."""
    if change is None or not rewindowed_part(change):
        return parts
    return replace(parts, window=det.resize.apply(parts.window, change.size))


def leaves_position(change: WindowChange | None, img_size: Size, run_size: Size) -> bool:
    """A window-only change that keeps the window part leaves the position tensor exactly as it is (PR 594)."""
    return change is not None and change.window_part == KEEP and tuple(img_size) == tuple(run_size)


def record(result: Plan, old: str, change: WindowChange, config_written: bool) -> None:
    """The provenance entries and the note every window change (from the ``old`` window) makes; the measured effect
    comes later (``record_effect``)."""
    result.stats.update({
        "window_size": change.spelled,
        "relpos_resize": change.relpos_resize if not change.per_stage else "none (no relative-position tables)",
        "window_part": change.window_part if not change.per_stage else "none (pos_embed_window belongs to stage 1)",
        "changes_output": "yes: the attention window changed",
    })
    where = "written to config.json" if config_written else "set it where the model is built"
    result.notes.append(
        f"window {old} -> {change.spelled} ({where}): this changes what the model computes at its "
        "own size"
    )


def record_effect(result: Plan, effect: float | str) -> str:
    """The measured change (a number, or why there is none) into the provenance; returns the note that says it."""
    shown = f"{effect:.4g}" if isinstance(effect, float) else effect
    result.stats["window_change_effect"] = shown
    return f"{EFFECT_MEANING}: {shown}"
