"""The written output of one conversion: which files go where (layout), in which format (safetensors, shards, or a
torch file with its ``.abswin.json`` sidecar), with the config, all written as one unit (``io/staging.output_unit``:
checked first, staged, moved into place together under the output's lock). ``api.convert`` decides what to write;
this module writes it. The names of the files are in ``io/outputs.py``, which reading shares.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .io.checkpoint import Checkpoint
from .io.jsonfile import write_json
from .io.outputs import CONFIG_FILE, WEIGHTS_FILE, output_format, output_paths, sidecar_of
from .io.provenance import SOURCE_SHA256, SourceDigest
from .io.shards import SAFETENSORS_INDEX, ShardIndex, output_shard_name, write_index
from .io.staging import output_unit
from .io.tensors import FileTensor, StoredTensor
from .io.torch_zip import TensorRef
from .io.torch_zip_writer import SourceStorages, TorchZip
from .io.writer import OutputTensor, RawBytes, check_destination, write_safetensors
from .plan import Plan
from .progress import byte_bar

# The other state dicts of a training checkpoint (EMA copies), each recognised and planned on its own.
PlannedStates = dict[str, tuple[Checkpoint, Plan]]


@dataclass(frozen=True)
class OutputLayout:
    """Where the files of one output go: the weights (or the shards and their index), the sidecar of a torch file,
    and ``config.json`` when ``-o`` names a folder."""

    weights: Path
    config: Path | None
    output_format: str  # safetensors | pt
    shards: ShardIndex | None  # a sharded source written to a folder as safetensors keeps its shards

    @classmethod
    def of(cls, output: Path, fmt: str | None, ckpt: Checkpoint) -> OutputLayout:
        """``-o`` as given, ``--format`` (None: from the suffix), for the source ``ckpt``."""
        fmt = output_format(output, fmt)
        torch_name = ckpt.path.name if ckpt.container == "torch" and ckpt.shards is None else None
        weights, config = output_paths(output, fmt, torch_name)
        keeps_shards = fmt == "safetensors" and weights.name == WEIGHTS_FILE  # -o FOLDER
        return cls(weights, config, fmt, ckpt.shards if keeps_shards else None)

    @property
    def is_torch(self) -> bool:
        return self.output_format == "pt"

    @property
    def main_file(self) -> Path:
        """What the user is told was written: the shard index, or the weight file."""
        return self.weights.parent / SAFETENSORS_INDEX if self.shards is not None else self.weights

    def weight_files(self) -> list[Path]:
        """The weight files (the index last): one file, its sidecar for a torch file, or the shards."""
        if self.shards is not None:
            folder = self.weights.parent
            return [*(folder / output_shard_name(name) for name in self.shards.files), folder / SAFETENSORS_INDEX]
        return [self.weights, sidecar_of(self.weights)] if self.is_torch else [self.weights]

    def check(self, inputs: list[Path], force: bool) -> None:
        """Refuse now (before the plan's work) a file that exists without ``force``, or that is an input."""
        for dest in [*self.weight_files(), *([self.config] if self.config else [])]:
            check_destination(dest, inputs, force)


def inputs_of(ckpt: Checkpoint) -> list[Path]:
    """The files a conversion reads, which it must never write over: every shard, or the one file, and the config
    beside them when there is one (read too)."""
    files = [ckpt.path, *(ckpt.path.parent / name for name in ckpt.shards.files)] if ckpt.shards else [ckpt.path]
    beside = ckpt.path.parent / CONFIG_FILE
    return [*files, *([beside] if beside.is_file() else [])]


def write_output(layout: OutputLayout, ckpt: Checkpoint, plan: Plan, other_states: PlannedStates,
                 metadata: dict[str, str], digest: SourceDigest, force: bool, progress: bool) -> Path | None:
    """Write the converted ``ckpt`` as one unit; ``metadata`` gets the source's sha256 once ``digest`` has it.
    Returns the config written, if any."""
    config = layout.config if plan.config is not None else None
    files = [*layout.weight_files(), *([config] if config else [])]
    with output_unit(files, inputs_of(ckpt), force) as staging:
        if layout.shards is not None:
            write_shards(staging.path, layout.weights.parent, ckpt, layout.shards, output_tensors(ckpt, plan),
                         metadata, plan, digest)
        elif not layout.is_torch:
            tensors = output_tensors(ckpt, plan)
            with byte_bar(sum(t.nbytes for t in tensors), "convert", progress) as advance:
                write_safetensors(staging.path(layout.weights), tensors, metadata, digest, progress=advance)
        else:
            _write_torch_output(staging.path(layout.weights), ckpt, plan, other_states, progress)
            metadata[SOURCE_SHA256] = digest.hexdigest()
            write_json(staging.path(sidecar_of(layout.weights)), metadata)
        if config is not None:
            write_json(staging.path(config), plan.config)
    return config


def write_shards(place: Callable[[Path], Path], folder: Path, ckpt: Checkpoint, shards: ShardIndex,
                 tensors: list[OutputTensor], metadata: dict[str, str], plan: Plan, digest: SourceDigest | None) -> None:
    """The output as safetensors shards with the input's boundaries (new tensors join the last shard), each
    streamed as a single file is, then the index (``digest``, of the input's index, recorded in the first shard);
    ``place`` says where a file of ``folder`` is written now."""
    source_of = {ckpt.stored_name(plan.output_key(key)): key for key in ckpt.keys()}
    last = shards.files[-1]
    groups: dict[str, list[OutputTensor]] = {}
    for tensor in tensors:
        shard = shards.shard_of(source_of[tensor.name]) if tensor.name in source_of else last
        groups.setdefault(output_shard_name(shard), []).append(tensor)
    weight_map = {}
    for i, (name, group) in enumerate(groups.items()):
        write_safetensors(place(folder / name), group, metadata, digest if i == 0 else None)
        weight_map.update(dict.fromkeys((t.name for t in group), name))
    write_index(place(folder / SAFETENSORS_INDEX), weight_map, sum(t.nbytes for t in tensors))


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


def _write_torch_output(dest: Path, ckpt: Checkpoint, plan: Plan, other_states: PlannedStates, progress: bool) -> None:
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
        for source, source_plan in [(ckpt, plan), *other_states.values()]:
            obj = _placed(obj, source.wrapper_path, _output_state(source, source_plan))
    archive = TorchZip(obj, storages)
    with byte_bar(archive.nbytes, "convert", progress) as advance:
        archive.write(dest, progress=advance)


def _source_state(ckpt: Checkpoint) -> Mapping | None:
    """The state dict as a torch file held it (its tensors references to their storages), or None (other files)."""
    if ckpt.container != "torch" or ckpt.shards is not None or ckpt.source_object is None:
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
