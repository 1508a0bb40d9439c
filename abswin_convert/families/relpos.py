"""Decomposed relative-position tables of SAM and ViTDet attention blocks (``rel_pos_h`` / ``rel_pos_w``).

A block attending over ``S`` tokens along an axis holds a ``[2*S - 1, head_dim]`` table: ``S`` is the window in
windowed blocks and the token grid in global blocks, so a model built for another input size has other table
lengths in its global blocks. Where the lengths differ, the runtimes' ``get_rel_pos`` resizes a table linearly
(``align_corners=False``) on every forward pass; doing that once here gives tables that a model built for the new
size loads strictly and that compute the same attention.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..io.checkpoint import Checkpoint
from ..io.tensors import RawTensor
from ..maths.resize import Size, resize_table
from ..plan import Plan

# "...blocks.3.attn.rel_pos_h" (segment-anything, timm, detectron2), "...layers.3.attn." (transformers Sam),
# "...layer.3.attention." (transformers VitDet)
_TABLE = re.compile(r"(?:^|\.)(\d+)\.(?:attn|attention)\.rel_pos_([hw])$")


def tables(ckpt: Checkpoint) -> dict[str, tuple[int, int]]:
    """Every relative-position table: key -> (block index, axis 0 for ``_h`` / 1 for ``_w``)."""
    found = {}
    for key in ckpt.keys():
        match = _TABLE.search(key)
        if match and len(ckpt.shape(key)) == 2:
            found[key] = (int(match.group(1)), 0 if match.group(2) == "h" else 1)
    return found


def window_of(ckpt: Checkpoint) -> Size | None:
    """The window a checkpoint's windowed blocks attend over: the shortest tables, ``(L + 1) / 2``."""
    lengths: list[list[int]] = [[], []]
    for key, (_, axis) in tables(ckpt).items():
        lengths[axis].append(ckpt.shape(key)[0])
    if not lengths[0] or not lengths[1]:
        return None
    return ((min(lengths[0]) + 1) // 2, (min(lengths[1]) + 1) // 2)


def global_blocks(ckpt: Checkpoint, configured: list[int] | None = None) -> list[int]:
    """Blocks with global attention: as configured, else those whose tables are longer than the shortest ones.

    Without a config, a checkpoint whose grid equals its window (every table the same length) shows none.
    """
    found = tables(ckpt)
    if configured is not None:
        return sorted({block for block, _ in found.values()} & set(configured))
    window = window_of(ckpt)
    if window is None:
        return []
    return sorted({block for key, (block, axis) in found.items() if ckpt.shape(key)[0] > 2 * window[axis] - 1})


def resize_tables(ckpt: Checkpoint, global_: Sequence[int], window: Size, grid: Size, result: Plan,
                  window_align_corners: bool = False) -> None:
    """Add to ``result`` every table resized for a model with ``window`` and token ``grid``; note what changed.
    Global blocks' tables are resized as ``get_rel_pos`` would; windowed blocks' too, or with ``align_corners=True``
    (segment-anything PR 594's window change) when ``window_align_corners``."""
    changed: dict[tuple[int, int, bool], int] = {}
    for key, (block, axis) in tables(ckpt).items():
        windowed = block not in global_
        span = window[axis] if windowed else grid[axis]
        old, new = ckpt.shape(key)[0], 2 * span - 1
        if old != new:
            aligned = windowed and window_align_corners
            table = ckpt.tensor(key)
            result.replace[key] = RawTensor.encode(resize_table(table.float64(), new, aligned), table.dtype)
            changed[(old, new, aligned)] = changed.get((old, new, aligned), 0) + 1
    for (old, new, aligned), count in sorted(changed.items()):
        how = "align_corners=True, as segment-anything PR 594 does" if aligned else "as get_rel_pos does"
        result.notes.append(f"{count} relative-position tables resized {old} -> {new} rows (linear, {how})")
