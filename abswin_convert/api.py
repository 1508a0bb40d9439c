"""The library entry points: ``inspect`` a checkpoint, ``convert`` it. No printing here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import families
from .errors import AbswinError
from .families.base import ConvertRequest, Detection, native_grid
from .families.overrides import Overrides
from .hub.locations import ResolvedHubFile, open_source
from .io.checkpoint import EMA_KEYS, Checkpoint
from .io.dtypes import TORCH_NAMES
from .io.jsonfile import write_json
from .io.outputs import CONFIG_FILE, WEIGHTS_FILE, output_format, output_paths, sidecar_of
from .io.provenance import SOURCE_SHA256, SourceDigest, output_metadata
from .io.shards import SAFETENSORS_INDEX, output_shard_name, shard_files, write_index
from .io.staging import output_unit
from .io.tensors import FileTensor, StoredTensor
from .io.torch_zip import TensorRef
from .io.torch_zip_writer import SourceStorages, TorchZip
from .io.writer import OutputTensor, RawBytes, check_destination, write_safetensors
from .maths import absolute_win as aw
from .maths.grid import as_size, format_size
from .maths.resize import Size
from .plan import Plan
from .progress import byte_bar


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
    window_energy: float | None  # None where undefined: the window covers the whole grid (fewer than two tiles)
    window_energy_normalized: float | None
    chance_share: float | None
    targets: list[str]
    resize: str
    details: dict[str, str | int]

    def to_json(self) -> dict:
        return asdict(self)


def load(
    source: str | Path, family: str | None = None, overrides: Overrides | None = None
) -> tuple[Checkpoint, Detection, ResolvedHubFile | None]:
    """Open a source (a local path or a Hub name) and detect its family (``overrides``: what the user said about
    key, layout, window, stride); the Hub file it came from, or None for a local source."""
    ckpt, hub_file = open_source(source)
    return *families.recognise(ckpt, family, overrides), hub_file


def inspect(source: str | Path, family: str | None = None, overrides: Overrides | None = None) -> InspectReport:
    """What ``abswin-convert inspect`` reports about ``source``."""
    ckpt, det, hub_file = load(source, family, overrides)
    grid = native_grid(ckpt, det)  # split (absolute-win) checkpoints are composed at the native size
    tiled = det.tiles >= 2
    return InspectReport(
        source=str(source),
        file=str(ckpt.path),
        hub=hub_file.to_json() if hub_file else None,
        family=det.family,
        format=det.format,
        container=ckpt.format,
        wrapper=".".join(ckpt.wrapper_path) or None,
        tensors=len(ckpt.keys()),
        position_key=det.pos_key,
        position_shape=list(ckpt.shape(det.pos_key)),
        position_dtype=TORCH_NAMES[ckpt.dtype(det.pos_key)],
        layout=det.layout,
        grid=format_size(det.grid),
        prefix_tokens=det.prefix_tokens,
        window=format_size(det.window),
        patch_stride=det.patch_stride,
        native_input=format_size(det.native_input),
        window_energy=round(aw.window_energy(grid, det.window), 4) if tiled else None,
        window_energy_normalized=round(aw.normalized_window_energy(grid, det.window), 4) if tiled else None,
        chance_share=round(aw.chance_share(det.grid, det.window), 4) if tiled else None,
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
    ema: bool | None = None,
    progress: bool = True,
) -> ConversionResult:
    """Convert ``source`` for ``img_size`` and write it to ``output`` (a weight file, or a folder);
    ``provenance`` adds ``abswin.*`` entries to the output's metadata (the zoo records its options there).
    ``fmt`` (safetensors or pt) defaults to what the output's suffix says; a folder gets safetensors.
    Every state dict of a training checkpoint (EMA copies too) is converted; a torch output keeps them all, a
    safetensors output holds one: the EMA copy when there is one, as timm loads it (``ema=False``: the plain one).
    ``progress``: a bar on stderr while a large file is written (only on a terminal). The output is written as one
    unit: every file is checked first, staged, and moved into place together."""
    if not str(output).strip():
        raise AbswinError("the output name is empty; give a weight file or a folder with -o")
    fmt = output_format(Path(output), fmt)
    request = ConvertRequest(as_size(img_size), target, as_size(global_size))  # type: ignore[arg-type]
    ckpt, det, hub_file = load(source, family, overrides)
    torch_name = ckpt.path.name if ckpt.format == "torch" and not ckpt.shards else None
    weights_path, config_path = output_paths(Path(output), fmt, torch_name)
    safetensors_output = fmt == "safetensors"
    sharded = bool(ckpt.shards) and safetensors_output and weights_path.name == WEIGHTS_FILE  # -o FOLDER
    files = _weight_files(ckpt, weights_path, safetensors_output, sharded)
    beside = ckpt.path.parent / CONFIG_FILE
    inputs = [*_inputs(ckpt), *([beside] if beside.is_file() else [])]  # the config beside the weights was read too
    for dest in [*files, *([config_path] if config_path else [])]:  # refused now, not after the plan's work
        check_destination(dest, inputs, force)
    # The source's sha256 (a Hub file's is checked against the Hub's LFS metadata) is hashed in a thread started now,
    # so that it runs beside the plan and the copy; a file hashed before comes from the hash cache.
    digest = SourceDigest(ckpt.path, hub_file.sha256 if hub_file else None)
    plan = families.plan(ckpt, det, request)
    copies = _planned_copies(ckpt, det, request, overrides)
    extra = {**(hub_file.provenance() if hub_file else {}), **(provenance or {})}
    notes = list(plan.notes)
    if safetensors_output:
        ckpt, plan, chosen_note = _chosen_copy(ckpt, plan, copies, ema)
        notes += chosen_note
    elif copies:
        notes.append(f"converted the same way: {', '.join(copies)} (kept beside {ckpt.wrapper})")
    metadata = output_metadata(source, ckpt.path, plan.stats, extra, hash_now=False)  # the writers add the sha256
    wrote_config = config_path if plan.config is not None and config_path is not None else None
    with output_unit([*files, *([wrote_config] if wrote_config else [])], inputs, force) as staging:
        if sharded:
            write_shards(staging.path, weights_path.parent, ckpt, output_tensors(ckpt, plan), metadata, plan, digest)
        elif safetensors_output:
            tensors = output_tensors(ckpt, plan)
            with byte_bar(sum(t.nbytes for t in tensors), "convert", progress) as advance:
                write_safetensors(staging.path(weights_path), tensors, metadata, digest, progress=advance)
        else:
            _write_torch_output(staging.path(weights_path), ckpt, plan, copies, progress)
            metadata[SOURCE_SHA256] = digest.hexdigest()
            write_json(staging.path(sidecar_of(weights_path)), metadata)
        if wrote_config is not None:
            write_json(staging.path(wrote_config), plan.config)
    output_file = weights_path.parent / SAFETENSORS_INDEX if sharded else weights_path
    return ConversionResult(output_file, wrote_config, det, metadata, notes)


def _weight_files(ckpt: Checkpoint, weights_path: Path, safetensors_output: bool, sharded: bool) -> list[Path]:
    """The weight files of the output (the index last): one file, its sidecar for a torch file, or the shards."""
    if sharded and ckpt.shards:
        folder = weights_path.parent
        return [*(folder / output_shard_name(name) for name in shard_files(ckpt.shards)), folder / SAFETENSORS_INDEX]
    return [weights_path] if safetensors_output else [weights_path, sidecar_of(weights_path)]


def _inputs(ckpt: Checkpoint) -> list[Path]:
    """The files a conversion reads, which it must never write over: every shard, or the one file."""
    return [ckpt.path, *(ckpt.path.parent / name for name in shard_files(ckpt.shards))] if ckpt.shards else [ckpt.path]


def write_shards(place: Callable[[Path], Path], folder: Path, ckpt: Checkpoint, tensors: list[OutputTensor],
                 metadata: dict[str, str], plan: Plan, digest: SourceDigest | None) -> None:
    """The output as safetensors shards with the input's boundaries (new tensors join the last shard), each
    streamed as a single file is, then the index (``digest``, of the input's index, recorded in the first shard);
    ``place`` says where a file of ``folder`` is written now."""
    source_of = {ckpt.stored_name(plan.output_key(key)): key for key in ckpt.keys()}
    last = shard_files(ckpt.shards)[-1]  # type: ignore[arg-type]
    groups: dict[str, list[OutputTensor]] = {}
    for tensor in tensors:
        shard = ckpt.shards[source_of[tensor.name]] if tensor.name in source_of else last  # type: ignore[index]
        groups.setdefault(output_shard_name(shard), []).append(tensor)
    weight_map = {}
    for i, (name, group) in enumerate(groups.items()):
        write_safetensors(place(folder / name), group, metadata, digest if i == 0 else None)
        weight_map.update(dict.fromkeys((t.name for t in group), name))
    write_index(place(folder / SAFETENSORS_INDEX), weight_map, sum(t.nbytes for t in tensors))


def _planned_copies(
    ckpt: Checkpoint, det: Detection, request: ConvertRequest, overrides: Overrides | None
) -> dict[str, tuple[Checkpoint, Plan]]:
    """Each other state dict of a training checkpoint (EMA copies), recognised and planned on its own."""
    planned = {}
    for name in ckpt.copies:
        try:
            copy, copy_det = families.recognise(ckpt.copy(name), det.family, overrides)
        except families.NotRecognised as exc:
            raise AbswinError(
                f"{ckpt.path.name}: {name!r} holds a second state dict that is not a {det.family} model, so it cannot be "
                "converted with the rest; convert a file holding only the model you want"
            ) from exc
        planned[name] = copy, families.plan(copy, copy_det, request)
    return planned


def _chosen_copy(
    ckpt: Checkpoint, plan: Plan, copies: dict[str, tuple[Checkpoint, Plan]], ema: bool | None
) -> tuple[Checkpoint, Plan, list[str]]:
    """The one state dict a safetensors output holds: the EMA copy timm would load, unless ``ema`` is False."""
    ema_copies = [name for name in EMA_KEYS if name in copies]
    if ema is True and not ema_copies:
        held = ckpt.wrapper or "one state dict"
        raise AbswinError(f"{ckpt.path.name}: --ema asked for an EMA copy, but it holds none (only {held})")
    if not copies:
        return ckpt, plan, []
    if ema is False or not ema_copies:
        chosen, (copy, copy_plan) = ckpt.wrapper, (ckpt, plan)
    else:
        chosen, (copy, copy_plan) = ema_copies[0], copies[ema_copies[0]]
    copy_plan.stats["state_dict"] = str(chosen)
    others = [name for name in (ckpt.wrapper, *copies) if name != chosen]
    flag = "--ema" if chosen == ckpt.wrapper else "--no-ema"
    return copy, copy_plan, [f"wrote the state dict {chosen!r} of {len(copies) + 1} (not {', '.join(map(repr, others))}; {flag} "
                             "picks the other; a .pt output keeps them all)"]


def output_tensors(ckpt: Checkpoint, plan: Plan) -> list[OutputTensor]:
    """The output in source order: edits in memory, untouched tensors as raw byte ranges of their file."""
    out = []
    for key in ckpt.keys():
        if key in plan.drop:
            continue
        stored = plan.replace[key] if key in plan.replace else ckpt.stored(key)
        out.append(_output_tensor(ckpt.stored_name(plan.output_key(key)), stored))
    out.extend(_output_tensor(ckpt.stored_name(name), value) for name, value in plan.add.items())
    return out


def _output_tensor(name: str, stored: StoredTensor) -> OutputTensor:
    if isinstance(stored, FileTensor):
        return OutputTensor(name, stored.dtype, stored.shape, RawBytes(stored.path, stored.start, stored.nbytes))
    return OutputTensor(name, stored.dtype, stored.shape, stored.read().raw)


def _write_torch_output(dest: Path, ckpt: Checkpoint, plan: Plan, copies: dict[str, tuple[Checkpoint, Plan]],
                        progress: bool) -> None:
    """A ``--format pt`` file, written without torch: the converted state dict alone, or in the wrapper the target
    needs (another model's file: the source's other entries do not belong); or the source's own object with every
    converted state dict (EMA copies too) put back where it sat, and its other entries (optimizer, epoch, args, ...)
    kept, their tensors copied from their storages."""
    wrapper = plan.wrapper if plan.wrapper is not None and plan.wrapper != ckpt.wrapper else None
    storages = SourceStorages(ckpt.path, ckpt.storage_starts) if _source_state(ckpt) is not None else None
    if wrapper is not None:
        obj: Any = {wrapper: _output_state(ckpt, plan)}
    elif not ckpt.wrapper_path:
        obj = _output_state(ckpt, plan)
    else:  # the object the file held, read when it was opened: its tensors are references to their storages
        obj = ckpt.source_object
        for source, source_plan in [(ckpt, plan), *copies.values()]:
            obj = _placed(obj, source.wrapper_path, _output_state(source, source_plan))
    archive = TorchZip(obj, storages)
    with byte_bar(archive.nbytes, "convert", progress) as advance:
        archive.write(dest, progress=advance)


def _source_state(ckpt: Checkpoint) -> Mapping | None:
    """The state dict as a torch file held it (its tensors references to their storages), or None (other files)."""
    if ckpt.format != "torch" or ckpt.shards or ckpt.source_object is None:
        return None
    state = ckpt.source_object
    for key in ckpt.wrapper_path:
        state = state[key]
    return state


def _output_state(ckpt: Checkpoint, plan: Plan) -> Mapping[str, Any]:
    """The converted state dict for a torch file, kept as ``torch.save`` stored it: an ``OrderedDict`` with its
    ``_metadata`` (the module versions ``load_state_dict`` passes on), and each untouched tensor as the source's own
    reference, so views stay views and tensors sharing a storage (or one tensor under two names) still share it."""
    state: dict[str, Any] = {tensor.name: tensor for tensor in output_tensors(ckpt, plan)}
    source = _source_state(ckpt)
    if source is None:
        return state
    for key in ckpt.keys():
        kept = source.get(ckpt.stored_name(key))
        if key not in plan.drop and key not in plan.replace and isinstance(kept, TensorRef):
            state[ckpt.stored_name(plan.output_key(key))] = kept
    return _like(source, state)


def _like(original: Mapping, items: dict) -> Mapping:
    """``items`` in a mapping of ``original``'s kind (dict, OrderedDict, argparse data), with its attributes."""
    if type(original) is dict:
        return items
    mapping: Any = type(original)(items)  # type: ignore[call-arg]
    vars(mapping).update(vars(original))
    return mapping


def _placed(obj: Mapping, path: tuple[str, ...], value: object) -> Mapping:
    """A copy of the nested mapping ``obj`` with ``value`` at the key ``path``."""
    return _like(obj, {**obj, path[0]: _placed(obj[path[0]], path[1:], value) if len(path) > 1 else value})
