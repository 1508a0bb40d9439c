"""Loading weights into a model built from their shapes: strictly, a mismatch said in one line."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import AbswinError


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str, hint: str = "") -> torch.nn.Module:
    """``model.load_state_dict(state, strict=True)`` in eval mode; a mismatch is the user's (``what`` names the model
    and the file), shown by its first missing, unexpected or mis-shaped names, then ``hint`` (what to do about it)."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3])[:300]
        raise AbswinError(f"the weights do not load into {what} ({detail}){hint}") from exc
    return model.eval()
