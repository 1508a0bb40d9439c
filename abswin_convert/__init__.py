"""abswin-convert: take window-attention ViT checkpoints to a new resolution without breaking them."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["ConversionResult", "InspectReport", "__version__", "convert", "inspect"]


def __getattr__(name: str) -> Any:
    """The library's entry points, imported when first used: the command line starts (and answers a signal in its
    first second) without waiting for torch."""
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
