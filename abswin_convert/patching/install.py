"""The few ways a patch changes a runtime's module, each undone by ``Installed.undo``.

- ``hide``: the runtime reads ``module.<name>`` as None (so it adds no embedding of its own) while the parameter
  stays registered under its name, in the state dict as before. The module's class becomes a subclass with a
  read-only ``<name>`` property; undone by restoring the class.
- ``override``: an instance attribute (a bound method or a setting) shadows the class's; undone by restoring it.
- ``hook``: a forward hook; undone by removing it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

_MISSING = object()
_hidden_classes: dict[tuple[type, tuple[str, ...]], type] = {}


class Installed:
    """What one patch changed, in order, so that ``undo`` puts the model back as it was."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def hide(self, module: torch.nn.Module, name: str) -> None:
        original = type(module)
        hidden = getattr(original, "_abswin_hidden", ())
        key = (getattr(original, "_abswin_original", original), (*hidden, name))
        if key not in _hidden_classes:
            base = key[0]
            _hidden_classes[key] = type(base.__name__, (base,), {
                "__module__": base.__module__, "_abswin_original": base, "_abswin_hidden": key[1],
                **{n: property(lambda self: None) for n in key[1]},
            })
        module.__class__ = _hidden_classes[key]
        self._undo.append(lambda: setattr(module, "__class__", original))

    def override(self, obj: Any, name: str, value: Any) -> None:
        before = obj.__dict__.get(name, _MISSING)
        object.__setattr__(obj, name, value)  # bypasses nn.Module's registration: a plain instance attribute

        def restore() -> None:
            if before is _MISSING:
                obj.__dict__.pop(name, None)
            else:
                object.__setattr__(obj, name, before)

        self._undo.append(restore)

    def hook(self, module: torch.nn.Module, hook: Callable[..., Any]) -> None:
        self._undo.append(module.register_forward_hook(hook).remove)

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()
