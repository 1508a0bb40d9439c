"""The family registry: which module recognises a checkpoint."""

from __future__ import annotations

from types import ModuleType

from ..checkpoint import Checkpoint
from ..errors import AbswinError
from . import hiera
from .base import Detection

FAMILIES: dict[str, ModuleType] = {hiera.name: hiera}


def detect(ckpt: Checkpoint, family: str | None = None) -> tuple[ModuleType, Detection]:
    """The one family that recognises ``ckpt`` (or the one named), with what it found."""
    if family is not None:
        if family not in FAMILIES:
            raise AbswinError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
        candidates = {family: FAMILIES[family]}
    else:
        candidates = FAMILIES
    found = [(module, det) for module in candidates.values() if (det := module.detect(ckpt)) is not None]
    if len(found) == 1:
        return found[0]
    if not found:
        named = f"as {family}" if family else f"as any of {', '.join(FAMILIES)}"
        raise AbswinError(f"{ckpt.path.name}: no position embedding recognised {named}; pass --family, or --key/--layout/--window")
    names = ", ".join(f"{det.family} ({det.format})" for _, det in found)
    raise AbswinError(f"{ckpt.path.name}: ambiguous checkpoint, it fits {names}; pass --family to choose")
