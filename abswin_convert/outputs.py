"""A converted output on disk: its weight file, ``config.json``, provenance and hook results.

``convert -o FOLDER`` writes ``FOLDER/model.safetensors`` (or the ``.pt`` file plus its ``.abswin.json`` sidecar)
and ``config.json`` when the source had one; the zoo adds ``abswin-hooks.json`` when hooks ran. ``push`` uploads
what is read here, and the zoo reads it to decide whether an output is already up to date.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import WEIGHT_SUFFIXES, WeightFileChoiceError, choose_weight_file, read_json_object
from .errors import AbswinError
from .provenance import read_provenance
from .safetensors_header import read_header
from .writer import write_json

CONFIG_FILE = "config.json"
HOOKS_FILE = "abswin-hooks.json"
SIDECAR_SUFFIX = ".abswin.json"  # beside a .pt output: its provenance (a torch file has no metadata header)


@dataclass(frozen=True)
class ConvertedOutput:
    """What ``convert`` (and the zoo's hooks) left in one place."""

    weights: Path
    provenance: dict[str, str]  # the ``abswin.*`` entries, without the prefix
    config: Path | None = None
    sidecar: Path | None = None
    hooks: dict[str, dict] = field(default_factory=dict)  # hook name -> its metrics
    hooks_file: Path | None = None


def read_output(path: Path) -> ConvertedOutput:
    """The output at ``path``: a folder ``convert -o FOLDER`` wrote (weights, config.json, hook results), or one
    weight file alone. Anything without abswin provenance is refused."""
    path = Path(path)
    if not path.exists():
        raise AbswinError(f"{path}: no such file or folder")
    folder = path if path.is_dir() else None
    weights = _weights_in(path) if folder else path
    sidecar = weights.with_name(weights.name + SIDECAR_SUFFIX)
    provenance = _provenance(weights, sidecar)
    hooks_file = folder / HOOKS_FILE if folder and (folder / HOOKS_FILE).is_file() else None
    return ConvertedOutput(
        weights=weights,
        provenance=provenance,
        config=folder / CONFIG_FILE if folder and (folder / CONFIG_FILE).is_file() else None,
        sidecar=sidecar if sidecar.is_file() else None,
        hooks=read_json_object(hooks_file) if hooks_file else {},
        hooks_file=hooks_file,
    )


def _weights_in(folder: Path) -> Path:
    names = [p.name for p in folder.iterdir() if p.is_file()]
    try:
        return folder / choose_weight_file(names)
    except WeightFileChoiceError as error:
        raise AbswinError(f"{folder}: {error}") from None


def _provenance(weights: Path, sidecar: Path) -> dict[str, str]:
    if not weights.name.lower().endswith(WEIGHT_SUFFIXES):
        raise AbswinError(f"{weights}: not a weight file ({', '.join('*' + s for s in WEIGHT_SUFFIXES)})")
    if weights.suffix == ".safetensors":
        _, metadata = read_header(weights)
    else:
        metadata = read_json_object(sidecar) if sidecar.is_file() else {}
    provenance = read_provenance(metadata)
    if not provenance:
        raise AbswinError(
            f"{weights}: no abswin provenance (abswin.* metadata, or a {weights.name}{SIDECAR_SUFFIX} sidecar); "
            "only what `abswin-convert convert` wrote can be pushed"
        )
    return provenance


def write_hooks(folder: Path, results: dict[str, dict]) -> Path:
    """Store hook results beside the weights, where ``push`` and the model card find them."""
    path = folder / HOOKS_FILE
    write_json(path, results)
    return path
