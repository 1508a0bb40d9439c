"""The memory budget: sizes a file or an option asks for are checked against it BEFORE anything is allocated.

A checkpoint can claim anything (a 2 MB file can describe a 1 GiB tensor) and an option can ask for anything
(``--img-size 32768``); both are refused in one line that names the size they would take. The bound stated in the
README: peak RSS <= the interpreter and libraries' baseline + k x the largest tensor rewritten (float32 bytes),
k about 3 measured by ``scripts/bench_memory.py``; the check reserves ``WORK_BUFFERS`` float64 copies (k = 8),
which must fit in the budget (default 4 GiB, ``ABSWIN_MAX_MEMORY`` overrides it: bytes, or a number with K/M/G).
Files are bounded where they are read: ``io/torch_zip.py`` (pickles, members, tensors against their storages) and
``io/safetensors_header.py`` (byte ranges inside the file).
"""

from __future__ import annotations

import math
import os

from .errors import AbswinError

DEFAULT_BUDGET = 4 * 1024**3
ENV_VAR = "ABSWIN_MAX_MEMORY"
# float64 copies of the output grid reserved while it is split, composed and rounded (about 1.5 measured: k = 3)
WORK_BUFFERS = 4
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
_MAX_BYTES = 2.0**63  # what a 64-bit size can say


def budget() -> int:
    """The budget in bytes: ``ABSWIN_MAX_MEMORY`` when set, else 4 GiB."""
    text = os.environ.get(ENV_VAR, "").strip().upper().removesuffix("B").removesuffix("I")
    if not text:
        return DEFAULT_BUDGET
    unit = text[-1] if text[-1] in _UNITS else ""
    try:
        value = float(text[: len(text) - len(unit)])
    except ValueError as exc:
        raise AbswinError(f"{ENV_VAR}={os.environ[ENV_VAR]!r} is not a size; write bytes or e.g. 8G") from exc
    nbytes = value * _UNITS[unit]
    if not math.isfinite(nbytes) or nbytes <= 0 or nbytes >= _MAX_BYTES:
        raise AbswinError(f"{ENV_VAR}={os.environ[ENV_VAR]!r} is not a positive size below 8 EiB")
    return int(nbytes)


def human(nbytes: int) -> str:
    """``1.5 GiB``, ``300 MiB``, ``12 KiB``."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} bytes"


def require(nbytes: int, what: str, hint: str = "") -> None:
    """Refuse ``what`` in one line when it would take more than the budget."""
    limit = budget()
    if nbytes > limit:
        raise AbswinError(
            f"{what} would take {human(nbytes)} of memory, over the {human(limit)} budget"
            f"{'; ' + hint if hint else ''} (set {ENV_VAR} to raise it)"
        )


def grid_work_bytes(grid: tuple[int, int], channels: int, window: tuple[int, int] = (1, 1)) -> int:
    """Memory a conversion's float64 work buffers take for a ``grid`` (padded to whole windows) of ``channels``."""
    rows = -(-grid[0] // max(window[0], 1)) * max(window[0], 1)
    cols = -(-grid[1] // max(window[1], 1)) * max(window[1], 1)
    return WORK_BUFFERS * 8 * rows * cols * max(channels, 1)
