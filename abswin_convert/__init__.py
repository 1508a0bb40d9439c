"""abswin-convert: take window-attention ViT checkpoints to a new resolution without breaking them.

The public names load lazily (PEP 562), so that importing the package, or running ``abswin-convert --help``,
does not import torch (and the command line answers a signal in its first second): each is imported from its
module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module (relative to this package) that defines it; one line per name
_LAZY_EXPORTS = {
    "ConversionResult": ".api",
    "InspectReport": ".api",
    "convert": ".api",
    "inspect": ".api",
    "ConvertedStateDict": ".in_memory",
    "convert_state_dict": ".in_memory",
    "interpolate_pos_embed": ".in_memory",
    "resample_abswin_pos_embed": ".in_memory",
    "verify": ".evaluation.verify",
    "bake": ".patching",
    "patch": ".patching",
    "unpatch": ".patching",
}

__all__ = ["__version__", *_LAZY_EXPORTS]

if TYPE_CHECKING:  # for type checkers
    from .api import ConversionResult, InspectReport, convert, inspect  # noqa: F401
    from .evaluation.verify import verify  # noqa: F401
    from .in_memory import (  # noqa: F401
        ConvertedStateDict,
        convert_state_dict,
        interpolate_pos_embed,
        resample_abswin_pos_embed,
    )
    from .patching import bake, patch, unpatch  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_EXPORTS})
