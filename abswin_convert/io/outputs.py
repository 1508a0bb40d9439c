"""The layout of checkpoints and outputs on disk, for writing and reading.

A folder holds one weight file (``model.safetensors`` preferred) and, beside it, ``config.json`` when the model
has one. ``convert -o FOLDER`` writes exactly that; a ``.pt`` output also gets ``NAME.abswin.json`` (its provenance:
a torch file has no metadata header); the zoo adds ``abswin-hooks.json`` when hooks ran; ``finetune`` writes a
folder of weights and config. ``push`` uploads what is read here, and the zoo reads it to decide whether an output
is already up to date.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AbswinError
from .jsonfile import read_json_object, write_json
from .provenance import Provenance
from .safetensors_reader import read_header

WEIGHTS_FILE = "model.safetensors"
TORCH_WEIGHTS_FILE = "pytorch_model.bin"  # the name timm (local-dir:) and transformers look for
CONFIG_FILE = "config.json"
HOOKS_FILE = "abswin-hooks.json"
SIDECAR_SUFFIX = ".abswin.json"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".pkl", ".ckpt")
# What a suffix of an output file asks for.
SUFFIX_FORMATS = {".safetensors": "safetensors", ".pt": "pt", ".pth": "pt", ".bin": "pt"}


class WeightFileChoiceError(AbswinError):
    """No weight file, or several equally good ones; ``candidates`` names them (empty when there is none)."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates


def choose_weight_file(names: Iterable[str]) -> str:
    """The weight file among ``names`` (a folder's files, or a Hub repo's paths): ``model.safetensors``, else the
    only safetensors file, else the only other weight file (.pt, .pth, .bin, .pkl, .ckpt).

    Several candidates of the best kind, or none at all, raise WeightFileChoiceError.
    """
    candidates = sorted(n for n in names if n.lower().endswith(WEIGHT_SUFFIXES) and not Path(n).name.startswith("."))
    if WEIGHTS_FILE in candidates:
        return WEIGHTS_FILE
    safetensors = [n for n in candidates if n.lower().endswith(".safetensors")]
    for tier in (safetensors, [n for n in candidates if n not in safetensors]):
        if len(tier) == 1:
            return tier[0]
        if tier:
            raise WeightFileChoiceError(f"several weight files: {', '.join(tier)}; name the one to convert", tier)
    looked_for = ", ".join("*" + s for s in WEIGHT_SUFFIXES)
    raise WeightFileChoiceError(f"no weight file found (looked for {looked_for})", [])


def weights_in(folder: Path) -> Path:
    """The weight file of a folder, or a one-line error that names the folder."""
    names = [p.name for p in folder.iterdir() if p.is_file()]
    try:
        return folder / choose_weight_file(names)
    except WeightFileChoiceError as error:
        raise AbswinError(f"{folder}: {error}") from error


def config_beside(path: Path) -> Path | None:
    """The ``config.json`` of a folder, or beside a weight file; None when there is none."""
    folder = path if path.is_dir() else path.parent
    config = folder / CONFIG_FILE
    return config if config.is_file() else None


def sidecar_of(weights: Path) -> Path:
    """Where a torch output's provenance sits: ``NAME.abswin.json`` beside ``NAME``."""
    return weights.with_name(weights.name + SIDECAR_SUFFIX)


def output_format(output: Path, fmt: str | None) -> str:
    """The output format: ``fmt`` when given (it must agree with the file's suffix), else the suffix's."""
    if fmt not in (None, "safetensors", "pt"):
        raise AbswinError(f"unknown output format {fmt!r}; use safetensors or pt")
    by_suffix = None if output.is_dir() else SUFFIX_FORMATS.get(output.suffix)
    if fmt and by_suffix and fmt != by_suffix:
        raise AbswinError(f"output {output.name} ends in {output.suffix} but --format is {fmt}; rename it or drop --format")
    return fmt or by_suffix or "safetensors"


def output_paths(output: Path, fmt: str, torch_source_name: str | None) -> tuple[Path, Path | None]:
    """``-o`` names a weight file, or a folder that gets the weights plus ``config.json``. A torch output in a
    folder keeps the name of a torch source (``torch_source_name``), else ``pytorch_model.bin``."""
    if output.suffix in SUFFIX_FORMATS and not output.is_dir():
        return output, None
    name = WEIGHTS_FILE if fmt == "safetensors" else (torch_source_name or TORCH_WEIGHTS_FILE)
    return output / name, output / CONFIG_FILE


def folder_paths(folder: Path) -> tuple[Path, Path]:
    """The weights and config of a folder this tool writes as a whole (finetune)."""
    return folder / WEIGHTS_FILE, folder / CONFIG_FILE


def finetune_folder(checkpoint: Path, pos: str) -> Path:
    """Where the finetune hook writes by default: ``finetuned-POS`` beside the checkpoint's weights."""
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    return folder / f"finetuned-{pos}"


@dataclass(frozen=True)
class ConvertedOutput:
    """What ``convert`` (and the zoo's hooks) left in one place."""

    weights: Path
    provenance: Provenance  # its ``abswin.*`` entries
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
    weights = weights_in(path) if folder else path
    sidecar = sidecar_of(weights)
    provenance = Provenance.from_metadata(read_metadata(weights), str(weights))
    if provenance is None:
        raise AbswinError(
            f"{weights}: no abswin provenance (abswin.* metadata, or a {sidecar.name} sidecar); "
            "only what `abswin-convert convert` wrote can be pushed"
        )
    hooks_file = folder / HOOKS_FILE if folder and (folder / HOOKS_FILE).is_file() else None
    return ConvertedOutput(
        weights=weights,
        provenance=provenance,
        config=config_beside(folder) if folder else None,
        sidecar=sidecar if sidecar.is_file() else None,
        hooks=read_json_object(hooks_file) if hooks_file else {},
        hooks_file=hooks_file,
    )


def read_metadata(weights: Path) -> dict[str, str]:
    """The metadata of a weight file: its safetensors ``__metadata__``, or the sidecar of a torch file."""
    if not weights.name.lower().endswith(WEIGHT_SUFFIXES):
        raise AbswinError(f"{weights}: not a weight file ({', '.join('*' + s for s in WEIGHT_SUFFIXES)})")
    if weights.suffix == ".safetensors":
        return read_header(weights, tensors=False)[1]
    sidecar = sidecar_of(weights)
    return read_json_object(sidecar) if sidecar.is_file() else {}


def provenance_of(weights: Path, metadata: Mapping[str, str]) -> Provenance | None:
    """The provenance of an opened checkpoint (``weights``: its file, or a shard index) whose safetensors metadata
    is ``metadata``: that, or a torch file's sidecar; None when there is none."""
    own = metadata or ({} if weights.name.endswith(".json") else read_metadata(weights))
    return Provenance.from_metadata(own, str(weights))


def write_hooks(folder: Path, results: dict[str, dict]) -> Path:
    """Store hook results beside the weights, where ``push`` and the model card find them."""
    path = folder / HOOKS_FILE
    write_json(path, results)
    return path
