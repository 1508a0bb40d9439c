"""The family registry: which module recognises a checkpoint."""

from __future__ import annotations

from types import ModuleType

from ..checkpoint import Checkpoint
from ..errors import AbswinError
from . import generic, hiera, sam, sam2, vitdet
from .base import Detection

# generic is only ever chosen by --family generic or --key/--layout.
FAMILIES: dict[str, ModuleType] = {m.name: m for m in (hiera, sam, vitdet, sam2, generic)}


def detect(ckpt: Checkpoint, family: str | None = None, overrides: generic.Overrides | None = None) -> tuple[ModuleType, Detection]:
    """The one family that recognises ``ckpt`` (or the one named), with what it found and the user's overrides."""
    overrides = overrides or generic.Overrides()
    if family == generic.name or (family is None and overrides.names_tensor):
        return generic, generic.detect(ckpt, overrides)
    if overrides.names_tensor:
        raise AbswinError(f"--key/--layout describe a checkpoint of a family we do not know; drop --family {family} or use --family generic")
    if family is not None:
        if family not in FAMILIES:
            raise AbswinError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
        candidates = {family: FAMILIES[family]}
    else:
        candidates = {n: m for n, m in FAMILIES.items() if m is not generic}
    found = [(module, det) for module in candidates.values() if (det := module.detect(ckpt)) is not None]
    if len(found) == 1:
        return found[0][0], overrides.apply(found[0][1])
    if not found:
        named = f"as {family}" if family else f"as any of {', '.join(candidates)}"
        raise AbswinError(
            f"{ckpt.path.name}: no position embedding recognised {named}; {generic.position_candidates(ckpt)}; "
            "pass --family, or --key/--layout/--window for a family we do not know"
        )
    names = ", ".join(f"{det.family} ({det.format})" for _, det in found)
    raise AbswinError(f"{ckpt.path.name}: ambiguous checkpoint, it fits {names}; pass --family to choose")
