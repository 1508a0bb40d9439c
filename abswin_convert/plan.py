"""The edit list a family produces for one conversion; everything it does not name passes through."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .io.tensors import RawTensor

if TYPE_CHECKING:
    from .io.checkpoint import Checkpoint


@dataclass
class Plan:
    """Tensor edits plus what the user must know.

    Tensors are ``RawTensor`` (numpy, no torch). ``replace`` and ``drop`` are keyed by source key; ``rename`` maps
    source keys to output keys (others keep their name); ``add`` holds new output keys. ``stats`` lands in the
    output's provenance.
    """

    replace: dict[str, RawTensor] = field(default_factory=dict)
    add: dict[str, RawTensor] = field(default_factory=dict)
    drop: set[str] = field(default_factory=set)
    rename: dict[str, str] = field(default_factory=dict)
    stats: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    config: dict | None = None  # config.json for the output folder, when the source had one
    wrapper: str | None = None  # the dict key --format pt wraps the state dict in when the target needs one

    def output_key(self, key: str) -> str:
        return self.rename.get(key, key)

    def applied(self, ckpt: Checkpoint, untouched: Callable[[str], Any] | None = None) -> dict[str, Any]:
        """The converted state dict in source order under the input's own names (prefixes included): the edits, and
        each untouched tensor as ``untouched(key)`` (by default read now, as it is)."""
        take = untouched or ckpt.tensor
        name = ckpt.stored_name
        state = {name(self.output_key(key)): self.replace[key] if key in self.replace else take(key)
                 for key in ckpt.keys() if key not in self.drop}
        state.update({name(key): value for key, value in self.add.items()})
        return state
