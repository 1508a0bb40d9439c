"""Verification hooks: checks that run on a converted checkpoint and return a dict of metrics.

A hook is a built-in name (``verify``, ``eval``, ``finetune``) or ``package.module:function``. Every hook is
called as ``hook(checkpoint_path, options) -> dict``; the zoo runner lists hooks with their options per entry
and puts the metrics in its report and the model card.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import AbswinError
from ..io.checkpoint import open_checkpoint
from ..io.outputs import WEIGHT_SUFFIXES, finetune_folder, read_metadata
from ..io.provenance import Provenance

Hook = Callable[[Path, dict], dict]
BUILTIN_HOOKS = ("verify", "eval", "finetune")  # known by name, without importing torch
GPU_HOOKS = ("eval", "finetune")  # built-in hooks that want a GPU where there is one


def run_hook(spec: str, checkpoint_path: str | Path, options: dict | None = None) -> dict:
    """Run the hook ``spec`` on ``checkpoint_path`` with ``options``; returns its metrics."""
    hook = resolve_hook(spec)
    result = hook(Path(checkpoint_path), dict(options or {}))
    if not isinstance(result, dict):
        raise AbswinError(f"hook {spec} returned a {type(result).__name__}, not a dict of metrics")
    return result


def resolve_hook(spec: str) -> Hook:
    """A built-in hook by name, or the function ``package.module:function`` names."""
    builtin = _builtins()
    if spec in builtin:
        return builtin[spec]
    module_name, sep, function = spec.partition(":")
    if not sep or not module_name or not function:
        raise AbswinError(f"unknown hook {spec!r}; use one of {', '.join(builtin)} or package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AbswinError(f"hook {spec}: cannot import {module_name} ({exc})") from exc
    hook = getattr(module, function, None)
    if not callable(hook):
        raise AbswinError(f"hook {spec}: {module_name} has no function {function}")
    return hook


def _builtins() -> dict[str, Hook]:
    from .eval import run_eval
    from .finetune import run_finetune
    from .verify import run_verify

    return {
        "verify": lambda path, options: call_with_options(run_verify, "verify", path, options),
        "eval": lambda path, options: call_with_options(run_eval, "eval", path, options),
        "finetune": lambda path, options: call_with_options(
            run_finetune, "finetune", path, {"output": finetune_folder(path, options.get("pos", "abswin")), **options}
        ),
    }


def call_with_options(func: Callable[..., dict], name: str, path: Path, options: dict[str, Any]) -> dict:
    """Call ``func(path, **options)``; a required ``img_size`` defaults to the size the checkpoint was converted for
    (a hook with a default of its own, such as verify's, reads the provenance itself)."""
    params = inspect.signature(func).parameters
    accepted = [p for p in params if p != "checkpoint"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise AbswinError(f"hook {name}: unknown option(s) {', '.join(unknown)}; it takes {', '.join(accepted)}")
    if "img_size" in params and params["img_size"].default is inspect.Parameter.empty and "img_size" not in options:
        options = {**options, "img_size": converted_size(path)}
    missing = [p for p, v in params.items() if p != "checkpoint" and v.default is inspect.Parameter.empty and p not in options]
    if missing:
        raise AbswinError(f"hook {name}: missing option(s) {', '.join(missing)}")
    return func(path, **options)


def converted_size(path: str | Path) -> int:
    """The input size recorded in a converted checkpoint's provenance (square sizes only): what eval and finetune
    use when no size is given."""
    size = recorded_size(path)
    if size is None:
        raise AbswinError(f"{path}: no abswin.img_size in its metadata to default to; pass --img-size (img_size in a hook)")
    return size


def recorded_size(path: str | Path) -> int | None:
    """The square input size a converted checkpoint's provenance records (a ``.pt`` output's in its sidecar), or
    None for a checkpoint without one."""
    path = Path(path)
    weight_file = path.is_file() and path.name.lower().endswith(WEIGHT_SUFFIXES)
    metadata = read_metadata(path) if weight_file else open_checkpoint(path).metadata
    provenance = Provenance.from_metadata(metadata, str(path))
    if provenance is None or provenance.img_size is None:
        return None
    h, w = provenance.img_size
    if h != w:
        raise AbswinError(
            f"{path}: converted for {h}x{w}; eval and finetune take square sizes, pass --img-size (img_size in a hook)"
        )
    return h
