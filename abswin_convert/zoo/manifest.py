"""The zoo manifest: its schema, read and checked completely once, before any work starts.

Every mistake the user can make in a manifest (a bad size, an unknown placeholder in ``push_to``, a hook name that
cannot name a function, a resource that is not a number) is a one-line AbswinError naming the entry.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import reprlib
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AbswinError
from ..evaluation.hooks import BUILTIN_HOOKS
from ..families import NAMES as FAMILY_NAMES
from ..families.overrides import RECIPES, TILE, Overrides
from ..families.window_change import WindowChange
from ..hub.locations import is_repo_id, parse_hub_source
from ..io.outputs import WEIGHT_SUFFIXES
from ..io.provenance import public_name
from ..maths.grid import format_size, parse_size
from ..maths.resize import Size
from ..vocabulary import LAYOUTS, TARGETS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

FORMATS = ("safetensors", "pt")
PUSH_PLACEHOLDERS = ("size", "target", "name")
OVERRIDE_KEYS = ("key", "layout", "window", "patch_stride", "recipe")
WINDOW_KEYS = ("window_size", "relpos_resize", "window_part")  # convert --window-size ... (families/window_change.py)
_MODEL_KEYS = {
    "source", "name", "img_size", "target", "to", "global_size", "format", "family", "push_to", "private", "hooks", "resources",
    *OVERRIDE_KEYS, *WINDOW_KEYS,
}
_DEFAULT_KEYS = (_MODEL_KEYS - {"source", "name"}) | {"out"}
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_MANIFEST_BYTES = 16 << 20  # thousands of entries take kilobytes
_MAX_FOLDER_NAME = 255  # bytes in one name, on the common file systems
_HOOK_FUNCTION = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)


@dataclass(frozen=True)
class HookSpec:
    """A hook to run on each output: a built-in name or ``package.module:function``, with its options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        """As recorded in an output's provenance: a path among the options by its name only (outputs are shared)."""
        shareable = {k: public_name(v) if isinstance(v, str) else v for k, v in self.options.items()}
        return {"name": self.name, "options": shareable}


@dataclass(frozen=True)
class OutputJob:
    """One output of one manifest entry."""

    entry: int  # index of the [[model]] table, from 0
    source: str  # as the manifest writes it (the report shows this)
    location: str  # what is opened: a Hub name, or a local path resolved against the manifest's folder
    name: str
    img_size: Size
    target: str
    global_size: str
    fmt: str
    family: str | None
    folder: Path
    push_to: str | None
    private: bool
    hooks: tuple[HookSpec, ...]
    overrides: Overrides = field(default_factory=Overrides)
    resources: dict[str, float] = field(default_factory=dict)  # what a Ray task asks for; the local executor ignores it
    window_change: WindowChange | None = None

    @property
    def size(self) -> str:
        return format_size(self.img_size)

    def options(self) -> str:
        """Everything that decides the output's contents besides the source, as recorded in its provenance."""
        options = {
            "target": self.target,
            "img_size": self.size,
            "global_size": self.global_size,
            "format": self.fmt,
            "family": self.family,
            "hooks": [hook.to_json() for hook in self.hooks],
        }
        # only the overrides given, so that outputs made before overrides existed stay up to date
        for key in OVERRIDE_KEYS:
            value = getattr(self.overrides, key)
            if value is not None:
                options[key] = format_size(value) if key == "window" else value
        if self.window_change is not None:  # only when given, as the overrides
            options.update(window_size=self.window_change.spelled, relpos_resize=self.window_change.relpos_resize,
                           window_part=self.window_change.window_part)
        return json.dumps(options, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest: where its outputs go and every output it asks for, in manifest order."""

    path: Path
    out: Path
    outputs: tuple[OutputJob, ...]

    def entries(self) -> list[list[OutputJob]]:
        """The outputs grouped by [[model]] entry (an entry's outputs share its source)."""
        grouped: dict[int, list[OutputJob]] = {}
        for job in self.outputs:
            grouped.setdefault(job.entry, []).append(job)
        return list(grouped.values())


def load_manifest(path: str | Path, out: str | Path | None = None) -> Manifest:
    """The manifest at ``path``, checked completely (``out`` replaces its ``out``); AbswinError for a bad one."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a pipe would block, a device never end
        raise AbswinError(f"{path}: not a regular file; give the path of a manifest (.toml)")
    if path.is_file() and path.stat().st_size > MAX_MANIFEST_BYTES:
        raise AbswinError(f"{path}: {path.stat().st_size:,} bytes, too large for a manifest (at most 16 MiB)")
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise AbswinError(f"{path}: cannot read the manifest ({error.strerror})") from error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise AbswinError(f"{path}: not valid TOML ({error})") from error
    except RecursionError as error:  # arrays or tables nested thousands deep
        raise AbswinError(f"{path}: nested too deeply to be a manifest") from error
    unknown = sorted(set(data) - {"defaults", "model"})
    if unknown:
        raise AbswinError(f"{path}: unknown table(s) {', '.join(unknown)}; a manifest has [defaults] and [[model]]")
    defaults = _table(data.get("defaults", {}), "[defaults]", _DEFAULT_KEYS, path)
    models = data.get("model")
    if not isinstance(models, list) or not models:
        raise AbswinError(f"{path}: no [[model]] entries; add one per checkpoint, with at least source and img_size")
    here = path.resolve().parent
    out_dir = Path(out) if out is not None else here / str(defaults.get("out", "converted"))
    jobs = [job for i, model in enumerate(models) for job in _entry_jobs(i, model, defaults, here, out_dir, path)]
    _check_unique(jobs, path)
    return Manifest(path, out_dir, tuple(jobs))


def _table(value: object, where: str, allowed: set[str], path: Path) -> dict:
    if not isinstance(value, dict):
        raise AbswinError(f"{path}: {where} must be a table")
    unknown = sorted(set(value) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed))
        raise AbswinError(f"{path}: {where} has unknown key(s) {', '.join(unknown)}; known: {known}")
    return value


def _entry_jobs(index: int, model: object, defaults: dict, here: Path, out: Path, path: Path) -> list[OutputJob]:
    where = f"{path}: [[model]] #{index + 1}"
    model_table = _table(model, f"[[model]] #{index + 1}", _MODEL_KEYS, path)
    entry = {**_new_spelling(defaults, where), **_new_spelling(model_table, where)}
    entry.pop("out", None)
    if not isinstance(entry.get("source"), str) or not entry["source"]:
        raise AbswinError(f"{where} has no source; give a Hub name or a checkpoint path")
    target = str(entry.get("target", "baked"))
    if target not in TARGETS:
        raise AbswinError(f"{where} has target = {target!r}; use one of {', '.join(TARGETS)}")
    fmt = str(entry.get("format", "safetensors"))
    if fmt not in FORMATS:
        raise AbswinError(f"{where} has format = {fmt!r}; use one of {', '.join(FORMATS)}")
    family = entry.get("family")
    if family is not None and family not in FAMILY_NAMES:
        raise AbswinError(f"{where} has family = {family!r}; use one of {', '.join(FAMILY_NAMES)}")
    if not isinstance(entry.get("private", False), bool):
        raise AbswinError(f"{where}: private must be true or false")
    sizes = _sizes(entry.get("img_size"), where)
    name = _NAME_UNSAFE.sub("_", str(entry.get("name") or _default_name(entry["source"])))
    longest = max(len(f"{name}-{target}-{format_size(size)}".encode()) for size in sizes)
    if longest > _MAX_FOLDER_NAME:
        raise AbswinError(f"{where}: name is {len(name)} characters, which makes output folder names of {longest} "
                          f"bytes, over the {_MAX_FOLDER_NAME} a file system allows; give a shorter name")
    repos = _push_repos(entry.get("push_to"), [format_size(s) for s in sizes], target, name, where)
    common = {
        "entry": index,
        "source": entry["source"],
        "location": _location(entry["source"], here),
        "name": name,
        "target": target,
        "global_size": _global_size(entry.get("global_size", "full"), where),
        "fmt": fmt,
        "family": family,
        "private": entry.get("private", False),
        "hooks": tuple(_hook(spec, where) for spec in _list(entry.get("hooks", []), "hooks", where)),
        "overrides": _overrides(entry, where),
        "resources": _resources(entry.get("resources", {}), where),
        "window_change": _window_change(entry, where),
    }
    return [
        OutputJob(img_size=size, folder=out / f"{name}-{target}-{format_size(size)}", push_to=repo, **common)
        for size, repo in zip(sizes, repos)
    ]


def _location(text: str, here: Path) -> str:
    """A local path relative to the manifest's folder when it exists there; otherwise the text as written."""
    local = here / text
    return str(local) if not Path(text).is_absolute() and local.exists() else text


def _default_name(source: str) -> str:
    hub = parse_hub_source(source)
    if hub is not None:
        return hub.repo_id.split("/")[1]
    path = Path(source)
    return path.stem if path.name.lower().endswith(WEIGHT_SUFFIXES) else path.name


def _list(value: object, key: str, where: str) -> list:
    if not isinstance(value, list):
        raise AbswinError(f"{where}: {key} must be a list")
    return value


def _size(text: str, what: str, where: str) -> Size:
    try:
        return parse_size(text)
    except AbswinError as error:
        raise AbswinError(f"{where}: {what}: {error}") from error


def _sizes(value: object, where: str) -> list[Size]:
    values = value if isinstance(value, list) else [value]
    if value is None or not values:
        raise AbswinError(f"{where} has no img_size; give one size (448, \"448x640\") or a list of them")
    sizes = []
    for item in values:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise AbswinError(f"{where}: img_size {_shown(item)} is neither a number nor \"HxW\"")
        sizes.append(_size(str(item), "img_size", where))
    repeated = next((size for i, size in enumerate(sizes) if size in sizes[:i]), None)
    if repeated is not None:
        raise AbswinError(f"{where}: img_size lists {format_size(repeated)} twice; give each size once")
    return sizes


def _shown(value: object) -> str:
    """A value as the user wrote it, cut short (a list nested thousands deep, a long string)."""
    return reprlib.repr(value)


def _global_size(value: object, where: str) -> str:
    """As written (the provenance records it so), once it is known to be ``full`` or a size."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise AbswinError(f"{where}: global_size {_shown(value)} is neither \"full\" nor a size such as \"28x28\"")
    if value != "full":
        _size(str(value), "global_size", where)
    return str(value)


def _push_repos(template: object, sizes: list[str], target: str, name: str, where: str) -> list[str | None]:
    """The repo each size is pushed to (None for all when there is no ``push_to``)."""
    if template is None:
        return [None] * len(sizes)
    if not isinstance(template, str):
        raise AbswinError(f"{where}: push_to must be a string (org/name)")
    try:
        parsed = string.Formatter().parse(template)
        fields = [(name, conversion, spec) for _, name, spec, conversion in parsed if name is not None]
    except ValueError as error:  # an unmatched brace
        raise AbswinError(f"{where}: push_to {template!r} is not a valid template ({error})") from error
    for placeholder, conversion, spec in fields:
        if placeholder not in PUSH_PLACEHOLDERS or conversion or spec:
            known = ", ".join(f"{{{p}}}" for p in PUSH_PLACEHOLDERS)
            raise AbswinError(f"{where}: push_to {template!r} has {{{placeholder}}}; the placeholders are {known}")
    if len(sizes) > 1 and "size" not in {f for f, _, _ in fields}:
        raise AbswinError(
            f"{where} pushes {len(sizes)} sizes to one repo {template!r}; put {{size}} in push_to, "
            "e.g. org/model_abswin_{size}"
        )
    repos = [template.format(size=size, target=target, name=name) for size in sizes]
    for repo in repos:
        if not is_repo_id(repo):
            raise AbswinError(f"{where}: push_to gives {repo!r}, not a Hub repo id (org/name)")
    named: list[str | None] = list(repos)
    return named


def _hook(spec: object, where: str) -> HookSpec:
    if isinstance(spec, str):
        hook = HookSpec(spec)
    elif isinstance(spec, dict) and isinstance(spec.get("name"), str):
        hook = HookSpec(spec["name"], {k: v for k, v in spec.items() if k != "name"})
    else:
        raise AbswinError(f"{where}: hook {_shown(spec)} is neither a name nor a table with name = ...")
    if hook.name not in BUILTIN_HOOKS and not _HOOK_FUNCTION.fullmatch(hook.name):
        raise AbswinError(
            f"{where}: unknown hook {hook.name!r}; use one of {', '.join(BUILTIN_HOOKS)} or package.module:function"
        )
    module = hook.name.partition(":")[0]
    if hook.name not in BUILTIN_HOOKS and not _importable(module):
        raise AbswinError(f"{where}: hook {hook.name!r}: no module {module} is installed here; install it (on every "
                          "node of a cluster) or fix the name")
    return hook


def _importable(module: str) -> bool:
    """Whether ``module`` can be found (its parent packages are imported to look, as ``import`` would)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _new_spelling(table: dict, where: str) -> dict:
    """``to`` is the old spelling of ``target`` (kept for one release)."""
    if "to" not in table:
        return table
    if "target" in table:
        raise AbswinError(f"{where} has both target and to (its old spelling); keep target")
    renamed = {**table, "target": table["to"]}
    del renamed["to"]
    return renamed


def _overrides(entry: dict, where: str) -> Overrides:
    """``key``, ``layout``, ``window``, ``patch_stride`` and ``recipe``: what ``convert --key ...`` takes."""
    key, layout, window, stride, recipe = (entry.get(k) for k in OVERRIDE_KEYS)
    if key is not None and (not isinstance(key, str) or not key):
        raise AbswinError(f"{where}: key must be the name of the position tensor")
    if layout is not None and layout not in LAYOUTS:
        raise AbswinError(f"{where} has layout = {layout!r}; use one of {', '.join(LAYOUTS)}")
    if window is not None and (isinstance(window, bool) or not isinstance(window, (int, str))):
        raise AbswinError(f"{where}: window {_shown(window)} is neither a number nor \"HxW\"")
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or stride <= 0):
        raise AbswinError(f"{where}: patch_stride must be a positive number of pixels, found {_shown(stride)}")
    if recipe is not None and recipe not in RECIPES:
        raise AbswinError(f"{where} has recipe = {recipe!r}; the one recipe is {TILE!r}")
    return Overrides.parse(
        key=key,
        layout=layout,
        window=_size(str(window), "window", where) if window is not None else None,
        patch_stride=stride,
        recipe=recipe,
    )


def _window_change(entry: dict, where: str) -> WindowChange | None:
    """``window_size`` (``16``, ``"16x16"``, ``[8, 4, 16, 8]``), ``relpos_resize``, ``window_part``: as ``convert`` takes them."""
    try:
        return WindowChange.parse(*(entry.get(k) for k in WINDOW_KEYS))
    except AbswinError as exc:
        raise AbswinError(f"{where}: {exc}") from None


def _resources(value: object, where: str) -> dict[str, float]:
    """What a Ray task asks for: ``num_cpus``, ``num_gpus``, ``memory`` (bytes) or a custom resource name."""
    if not isinstance(value, dict):
        raise AbswinError(f"{where}: resources must be a table such as {{num_gpus = 1}}")
    for name, amount in value.items():
        if name in ("CPU", "GPU"):
            raise AbswinError(f"{where}: resources.{name}: write num_{name.lower()}s, as Ray's task options do")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount < math.inf:
            raise AbswinError(f"{where}: resources.{name} must be a finite number >= 0, found {_shown(amount)}")
    return {name: float(amount) for name, amount in value.items()}


def _check_unique(jobs: list[OutputJob], path: Path) -> None:
    for attribute, what in (("folder", "output folder"), ("push_to", "push_to repo")):
        seen: dict[object, int] = {}
        for job in jobs:
            value = getattr(job, attribute)
            if value is None:
                continue
            if value in seen and seen[value] != job.entry:
                raise AbswinError(
                    f"{path}: [[model]] #{seen[value] + 1} and #{job.entry + 1} share the {what} "
                    f"{value if attribute == 'push_to' else Path(value).name}; give one of them another name"
                )
            seen[value] = job.entry
