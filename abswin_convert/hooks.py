"""The old home of the verification hooks (``from abswin_convert.hooks import run_hook``, as the last release
documented): kept for one release, with a DeprecationWarning. The hooks live in ``abswin_convert.evaluation.hooks``."""

from __future__ import annotations

import warnings

from .evaluation.hooks import BUILTIN_HOOKS, Hook, resolve_hook, run_hook

__all__ = ["BUILTIN_HOOKS", "Hook", "resolve_hook", "run_hook"]

warnings.warn(
    "abswin_convert.hooks is deprecated and goes in the next release; import from abswin_convert.evaluation.hooks",
    DeprecationWarning,
    stacklevel=2,
)
