"""The library entry points: ``inspect`` a checkpoint, ``convert`` it. No printing here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import families
from .errors import AbswinError
from .families.base import ConvertRequest, Detection, native_grid
from .families.overrides import Overrides
from .hub.sources import ResolvedHubFile, open_source
from .io.checkpoint import Checkpoint
from .io.jsonfile import write_json
from .io.outputs import CONFIG_FILE, output_format, output_paths, sidecar_of
from .io.provenance import output_metadata
from .io.staging import output_unit
from .io.writer import OutputTensor, RawBytes, check_destination, write_safetensors, write_torch
from .maths import absolute_win as aw
from .maths.grid import format_size, parse_size
from .maths.resize import Size
from .plan import Plan


@dataclass
class ConversionResult:
    """What ``convert`` wrote and what the user must know."""

    output: Path
    config: Path | None
    detection: Detection
    metadata: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "output": str(self.output),
            "config": str(self.config) if self.config else None,
            "family": self.detection.family,
            "format": self.detection.format,
            "metadata": self.metadata,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class InspectReport:
    """Everything ``abswin-convert inspect`` reports about a checkpoint."""

    source: str
    file: str
    hub: dict | None  # the Hub file it came from (repo, revision, commit, file), None for a local path
    family: str
    format: str
    container: str  # safetensors | torch | pickle
    wrapper: str | None
    tensors: int
    position_key: str
    position_shape: list[int]
    position_dtype: str
    layout: str
    grid: str
    prefix_tokens: int
    window: str
    patch_stride: int
    native_input: str
    window_energy: float
    window_energy_normalized: float
    chance_share: float
    targets: list[str]
    resize: str
    details: dict[str, str | int]

    def to_json(self) -> dict:
        return asdict(self)


def _as_size(value: int | str | Size | None) -> Size | None:
    if value is None or value == "full":
        return None
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, str):
        return parse_size(value)
    return (int(value[0]), int(value[1]))


def load(
    source: str | Path, family: str | None = None, overrides: Overrides | None = None
) -> tuple[Checkpoint, Detection, ResolvedHubFile | None]:
    """Open a source (a local path or a Hub name) and detect its family (``overrides``: what the user said about
    key, layout, window, stride); the Hub file it came from, or None for a local source."""
    ckpt, hub_file = open_source(source)
    return ckpt, families.detect(ckpt, family, overrides), hub_file


def inspect(source: str | Path, family: str | None = None, overrides: Overrides | None = None) -> InspectReport:
    """What ``abswin-convert inspect`` reports about ``source``."""
    ckpt, det, hub_file = load(source, family, overrides)
    grid = native_grid(ckpt, det)  # split (absolute-win) checkpoints are composed at the native size
    return InspectReport(
        source=str(source),
        file=str(ckpt.path),
        hub=hub_file.to_json() if hub_file else None,
        family=det.family,
        format=det.format,
        container=ckpt.format,
        wrapper=ckpt.wrapper,
        tensors=len(ckpt.keys()),
        position_key=det.pos_key,
        position_shape=list(ckpt.shape(det.pos_key)),
        position_dtype=str(ckpt.dtype(det.pos_key)).replace("torch.", ""),
        layout=det.layout,
        grid=format_size(det.grid),
        prefix_tokens=det.prefix_tokens,
        window=format_size(det.window),
        patch_stride=det.patch_stride,
        native_input=format_size(det.native_input),
        window_energy=round(aw.window_energy(grid, det.window), 4),
        window_energy_normalized=round(aw.normalized_window_energy(grid, det.window), 4),
        chance_share=round(aw.chance_share(det.grid, det.window), 4),
        targets=list(det.targets),
        resize=det.resize.name,
        details=det.details(ckpt),
    )


def convert(
    source: str | Path,
    output: str | Path,
    img_size: int | str | Size,
    *,
    target: str = "baked",
    global_size: int | str | Size | None = None,
    fmt: str | None = None,
    force: bool = False,
    family: str | None = None,
    overrides: Overrides | None = None,
    provenance: dict[str, str] | None = None,
) -> ConversionResult:
    """Convert ``source`` for ``img_size`` and write it to ``output`` (a weight file, or a folder);
    ``provenance`` adds ``abswin.*`` entries to the output's metadata (the zoo records its options there).
    ``fmt`` (safetensors or pt) defaults to what the output's suffix says; a folder gets safetensors."""
    if not str(output).strip():
        raise AbswinError("the output name is empty; give a weight file or a folder with -o")
    fmt = output_format(Path(output), fmt)
    request = ConvertRequest(_as_size(img_size), target, _as_size(global_size))  # type: ignore[arg-type]
    ckpt, det, hub_file = load(source, family, overrides)
    weights_path, config_path = output_paths(Path(output), fmt, ckpt.path.name if ckpt.format == "torch" else None)
    streamed = fmt == "safetensors"  # the safetensors writer hashes the source alongside its copy
    files = [weights_path] if streamed else [weights_path, sidecar_of(weights_path)]
    inputs = [ckpt.path, ckpt.path.parent / CONFIG_FILE]  # the config beside the weights was read too
    for dest in [*files, *([config_path] if config_path else [])]:  # refused now, not after the plan's work
        check_destination(dest, inputs, force)
    plan = families.plan(ckpt, det, request)
    extra = {**(hub_file.provenance() if hub_file else {}), **(provenance or {})}
    metadata = output_metadata(str(source), None if streamed else ckpt.path, plan.stats, extra)
    wrote_config = config_path if plan.config is not None and config_path is not None else None
    with output_unit([*files, *([wrote_config] if wrote_config else [])], inputs, force) as staging:
        if streamed:
            write_safetensors(staging.path(weights_path), output_tensors(ckpt, plan), metadata, hash_source=ckpt.path)
        else:
            write_torch(staging.path(weights_path), _torch_object(ckpt, plan))
            write_json(staging.path(sidecar_of(weights_path)), metadata)
        if wrote_config is not None:
            write_json(staging.path(wrote_config), plan.config)
    return ConversionResult(weights_path, wrote_config, det, metadata, plan.notes)


def output_tensors(ckpt: Checkpoint, plan: Plan) -> list[OutputTensor]:
    """The output in source order: edits in memory, untouched safetensors tensors as raw byte ranges."""
    out = []
    for key in ckpt.keys():
        if key in plan.drop:
            continue
        name = plan.output_key(key)
        if key in plan.replace:
            value = plan.replace[key]
            out.append(OutputTensor(name, value.dtype, tuple(value.shape), value))
            continue
        entry = ckpt.raw_entry(key)
        if entry is not None:
            out.append(OutputTensor(name, entry.dtype, entry.shape, RawBytes(ckpt.path, entry.start, entry.nbytes)))
        else:
            value = ckpt.tensor(key)
            out.append(OutputTensor(name, value.dtype, tuple(value.shape), value))
    for name, value in plan.add.items():
        out.append(OutputTensor(name, value.dtype, tuple(value.shape), value))
    return out


def _torch_object(ckpt: Checkpoint, plan: Plan) -> dict:
    """The state dict for ``--format pt``, inside the source's own wrapper (or the one the target needs)."""
    state = {}
    for key in ckpt.keys():
        if key not in plan.drop:
            state[plan.output_key(key)] = plan.replace.get(key, ckpt.tensor(key))
    state.update(plan.add)
    if plan.wrapper is not None and plan.wrapper != ckpt.wrapper:
        return {plan.wrapper: state}  # another model's file: the source's other entries do not belong in it
    if ckpt.wrapper is None:
        return state
    return {**ckpt.extra, ckpt.wrapper: state}
