"""The edit list a family produces for one conversion; everything it does not name passes through."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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

    def applied(self, ckpt: Checkpoint) -> dict[str, RawTensor]:
        """The converted state dict in source order under the input's own names (prefixes included; tensors read
        now); untouched tensors pass through as they are."""
        name = ckpt.stored_name
        kept = (key for key in ckpt.keys() if key not in self.drop)
        state = {name(self.output_key(key)): self.replace.get(key, ckpt.tensor(key)) for key in kept}
        state.update({name(key): value for key, value in self.add.items()})
        return state
