"""Read checkpoints lazily: safetensors (header only until a tensor is asked for), torch files
(``weights_only`` + ``mmap``), and detectron2 ``.pkl`` pickles through a numpy-only unpickler.

Everything a user can get wrong here (empty, truncated, foreign or malicious files) becomes an ``AbswinError``.
"""

from __future__ import annotations

import argparse
import copy
import pickle
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import AbswinError, first_line
from . import torch_zip
from .jsonfile import read_json_object
from .outputs import config_beside, weights_in
from .safe_pickle import load_numpy_pickle
from .safetensors_header import TensorEntry, read_header, read_tensor
from .shards import INDEX_SUFFIX, index_in, read_weight_map, shard_files

# torch's weights-only loader warns about pickle protocols it was not written for; the user can do nothing about
# it, and what matters (the file opens, or a one-line error says why not) is said anyway.
warnings.filterwarnings("ignore", message=r"Detected pickle protocol \d+ in the checkpoint", category=UserWarning)

WRAPPER_KEYS = ("model_state", "model", "state_dict")
# The copies timm's load_checkpoint(use_ema=True) prefers over the plain state dict, in its order.
EMA_KEYS = ("state_dict_ema", "model_ema")
_ZIP_MAGIC = b"PK\x03\x04"
_LFS_MAGIC = b"version https://git-lfs.github.com/spec/"


class Checkpoint:
    """A lazy handle on one checkpoint: keys, shapes and dtypes up front, tensors on demand."""

    def __init__(
        self,
        path: Path,
        format: str,
        wrapper: str | None,
        config: dict | None,
        *,
        entries: dict[str, TensorEntry] | None = None,
        tensors: dict[str, torch.Tensor] | None = None,
        extra: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        stored: dict[str, TensorEntry] | None = None,
        shards: dict[str, str] | None = None,
    ) -> None:
        self.path = path
        self.format = format  # "safetensors" | "torch" | "pickle"
        self.wrapper = wrapper  # the dict key the state dict sat under, or None for a flat file
        self.config = config  # config.json beside the weights, when there is one
        self.extra = extra or {}  # the wrapper's other entries, kept for --format pt
        self.metadata = metadata or {}  # safetensors __metadata__
        self._entries = entries
        self._tensors = tensors
        self._stored = stored or {}  # byte ranges of a torch file's tensors, where they can be copied raw
        self.shards = shards  # tensor -> shard file beside ``path`` (the index) for a sharded checkpoint
        self.prefix = ""  # stripped from the stored names by ``without_prefix`` (DDP's ``module.``, ...)
        self._unprefixed: frozenset[str] = frozenset()  # names stored without it

    def keys(self) -> list[str]:
        return list(self._entries if self._entries is not None else self._tensors)  # type: ignore[arg-type]

    def __contains__(self, key: str) -> bool:
        return key in (self._entries if self._entries is not None else self._tensors)  # type: ignore[operator]

    def shape(self, key: str) -> tuple[int, ...]:
        if self._entries is not None:
            return self._entries[key].shape
        return tuple(self._tensors[key].shape)  # type: ignore[index]

    def dtype(self, key: str) -> torch.dtype:
        if self._entries is not None:
            return self._entries[key].dtype
        return self._tensors[key].dtype  # type: ignore[index]

    def file_of(self, key: str) -> Path:
        """The file holding ``key``: its shard in a sharded checkpoint."""
        return self.path.parent / self.shards[key] if self.shards else self.path

    def tensor(self, key: str) -> torch.Tensor:
        if self._entries is not None:
            return read_tensor(self.file_of(key), self._entries[key])
        return self._tensors[key]  # type: ignore[index]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor, read now (for building a model from the weights)."""
        return {key: self.tensor(key) for key in self.keys()}

    def raw_entry(self, key: str) -> TensorEntry | None:
        """The byte range of a tensor in the file (safetensors, or an uncompressed torch zip), for raw copying."""
        return self._entries[key] if self._entries is not None else self._stored.get(key)

    def without_prefix(self, prefix: str) -> Checkpoint:
        """The same checkpoint naming ``prefix``-ed tensors without it (others keep their names, unless that would
        hide one); ``stored_name`` gives the names back, so outputs keep the input's keys."""
        names = {k: k[len(prefix):] if k.startswith(prefix) else k for k in self.keys()}
        if len(set(names.values())) < len(names):
            return self  # stripping would merge two tensors: not a wrapper prefix
        view = copy.copy(self)
        if self._entries is not None:
            view._entries = {names[k]: v for k, v in self._entries.items()}
        else:
            view._tensors = {names[k]: v for k, v in self._tensors.items()}  # type: ignore[union-attr]
        view._stored = {names[k]: v for k, v in self._stored.items()}
        view.shards = {names[k]: v for k, v in self.shards.items()} if self.shards else None
        view.prefix = prefix
        view._unprefixed = frozenset(k for k, new in names.items() if k == new)
        return view

    def stored_name(self, name: str) -> str:
        """The name a tensor has (or a new one gets) in the file: with the prefix ``without_prefix`` stripped."""
        return name if not self.prefix or name in self._unprefixed else self.prefix + name

    @property
    def copies(self) -> list[str]:
        """The other state dicts beside the one this handle reads (EMA copies): wrapper entries holding only tensors."""
        return [k for k, v in self.extra.items() if isinstance(v, dict) and v and all(_is_weight(x) for x in v.values())]

    def copy(self, name: str) -> Checkpoint:
        """A handle on the state dict ``copies`` names; tensors in memory (only the primary one is copied raw)."""
        tensors = _tensors_of(self.path, self.extra[name])
        extra = {k: v for k, v in self.extra.items() if k != name}
        return Checkpoint(self.path, self.format, name, self.config, tensors=tensors, extra=extra, metadata=self.metadata)

    def describe(self) -> str:
        wrapped = f"{{'{self.wrapper}': ...}}" if self.wrapper else "flat"
        return f"{self.format} ({wrapped})"


def open_checkpoint(source: str | Path, config_path: Path | None = None) -> Checkpoint:
    """Open a weight file, or a folder holding one (with ``config.json`` when present)."""
    path = Path(source)
    if path.is_dir():
        config_path = config_path or config_beside(path)
        index = index_in(path)
        if index is not None:
            return _open_shards(index, config_path)
        path = weights_in(path)
    if path.name.endswith(INDEX_SUFFIX) and path.is_file():
        return _open_shards(path, config_path or config_beside(path))
    if not path.exists():
        raise AbswinError(f"{path}: no such file or folder")
    if not path.is_file():  # reading a pipe or a device would block or never end
        raise AbswinError(f"{path}: not a regular file; give the path of a weight file")
    try:
        with open(path, "rb") as f:
            magic = f.read(9)
    except OSError as exc:
        raise AbswinError(f"{path}: cannot read ({exc.strerror})") from exc
    if not magic:
        raise AbswinError(f"{path}: the file is empty")
    if magic.startswith(_LFS_MAGIC[:9]):
        _refuse_lfs_pointer(path)
    config = read_json_object(config_path) if config_path else None
    # safetensors first: its header length is little-endian, so 1 file in 32 starts with the pickle byte 0x80.
    # A .safetensors name is trusted even when the length is wrong, so that read_header says what is wrong.
    plausible = int.from_bytes(magic[:8], "little") <= path.stat().st_size - 8 or path.suffix == ".safetensors"
    if len(magic) == 9 and magic[8:9] == b"{" and plausible:
        entries, metadata = read_header(path)
        return Checkpoint(path, "safetensors", None, config, entries=entries, metadata=metadata)
    if magic.startswith(_ZIP_MAGIC):
        return _open_torch(path, config)
    if magic[:1] == b"\x80":
        return _open_pickle(path, config) if path.suffix == ".pkl" else _open_legacy_torch(path, config)
    raise AbswinError(f"{path}: not a checkpoint (neither safetensors, a torch file nor a pickle)")


def _open_shards(index: Path, config_path: Path | None) -> Checkpoint:
    """Every shard an index names, as one checkpoint: safetensors headers (tensors read when asked for), or torch
    shards memory-mapped. Each tensor must sit in the shard the index says."""
    weight_map = read_weight_map(index)
    config = read_json_object(config_path) if config_path else None
    shards = [open_checkpoint(index.parent / name) for name in shard_files(weight_map)]
    formats = {shard.format for shard in shards}
    if len(formats) != 1:
        raise AbswinError(f"{index}: its shards mix {' and '.join(sorted(formats))} files")
    found: dict[str, str] = {}
    for shard in shards:
        found.update(dict.fromkeys(shard.keys(), shard.path.name))
    if found != weight_map:
        wrong = sorted(set(found.items()) ^ set(weight_map.items()))[0][0]
        raise AbswinError(f"{index}: the index and the shards disagree about {wrong!r}; re-download the checkpoint")
    if shards[0].format == "safetensors":
        entries = {key: entry for shard in shards for key, entry in shard._entries.items()}  # type: ignore[union-attr]
        return Checkpoint(index, "safetensors", None, config, entries=entries, metadata=shards[0].metadata, shards=weight_map)
    tensors = {key: value for shard in shards for key, value in shard.state_dict().items()}  # memory-mapped views
    return Checkpoint(index, shards[0].format, None, config, tensors=tensors, shards=weight_map)


def _refuse_lfs_pointer(path: Path) -> None:
    """A Git LFS pointer (a short text file) stands where the weights should be: say what to fetch."""
    with open(path, "rb") as f:
        text = f.read(1024)
    if not text.startswith(_LFS_MAGIC):
        return
    size = re.search(rb"^size (\d+)$", text, re.MULTILINE)
    weights = f" of {int(size.group(1)):,} bytes" if size else ""
    raise AbswinError(
        f"{path}: this is a Git LFS pointer, not the weights{weights}; fetch the real file "
        f"(git lfs pull --include {path.name!r}, or download it from the Hub)"
    )


def _open_torch(path: Path, config: dict | None) -> Checkpoint:
    """A torch zip file, checked without torch first (bounded memory), then memory-mapped: tensors are read when
    touched, or copied raw by the writer."""
    layout = _checked_layout(path)
    # argparse.Namespace is data only; MAE training saves keep their `args` in one.
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as exc:
            raise AbswinError(_refused_pickle(path, exc)) from exc
        except Exception as exc:  # torch raises many types for corrupt zips
            reason = first_line(exc, sentence=True)
            raise AbswinError(f"{path.name}: not a readable torch file ({reason}); is it truncated?") from exc
    return _from_object(path, "torch", obj, config, _stored_ranges(layout, obj))


def _open_legacy_torch(path: Path, config: dict | None) -> Checkpoint:
    """A torch file from before the zip format (it cannot be mapped), or a plain pickle named like one."""
    try:
        _checked_layout(path)
    except _NotTorch:  # numpy arrays pickled into a .pth are fine for the numpy-only reader
        return _open_pickle(path, config)
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise AbswinError(_refused_pickle(path, exc)) from exc
        except Exception as exc:
            raise AbswinError(f"{path.name}: not a readable torch file ({first_line(exc, sentence=True)})") from exc
    return _from_object(path, "torch", obj, config)


class _NotTorch(Exception):
    """A pickle without torch's magic number: not a torch legacy file."""


def _checked_layout(path: Path) -> torch_zip.TorchCheckpoint:
    """Every tensor of a torch file, read from its pickle alone, before ``torch.load`` allocates anything: bounded
    pickles, stored (uncompressed) members, tensors inside their storages, storages inside the file."""
    if sys.byteorder != "little":
        raise AbswinError(f"{path.name}: torch files are read on little-endian machines only")
    try:
        return torch_zip.open_torch(path)
    except torch_zip.NotTorchFile as exc:
        raise _NotTorch() from exc
    except pickle.UnpicklingError as exc:
        raise AbswinError(_refused_pickle(path, exc)) from exc
    except torch_zip.CheckpointError as exc:
        message = str(exc)
        raise AbswinError(message if message.startswith(path.name) else f"{path.name}: {message}") from exc
    except Exception as exc:  # zipfile and struct raise many types for damaged archives
        raise AbswinError(f"{path.name}: not a readable torch file ({first_line(exc)[:80]}); is it truncated?") from exc


def _stored_ranges(layout: torch_zip.TorchCheckpoint, obj: Any) -> dict[str, TensorEntry]:
    """Where each contiguous tensor's bytes sit in a torch zip file, so that the writer copies them raw, not
    through memory; keyed like the state dict (under its wrapper, if any)."""
    wrapper, state, _ = _unwrap(obj) if isinstance(obj, dict) else (None, {}, {})
    depth = 1 if wrapper is None else 2
    ranges = {}
    for info in layout.tensors:
        if len(info.path) != depth or info.path[: depth - 1] != ((wrapper,) if wrapper else ()):
            continue
        key = info.path[-1]
        t = state.get(key)
        if info.byte_range is not None and isinstance(t, torch.Tensor) and tuple(t.shape) == info.shape:
            ranges[str(key)] = TensorEntry(t.dtype, info.shape, *info.byte_range)
    return ranges


def _refused_pickle(path: Path, exc: Exception) -> str:
    found = re.search(r"GLOBAL (\S+)", str(exc))
    what = found.group(1) if found else "an object that is not a tensor"
    return (
        f"{path.name}: refused to unpickle {what}; only weights-only checkpoints (tensors, numpy arrays) are read, "
        "nothing in the file was run"
    )


def _open_pickle(path: Path, config: dict | None) -> Checkpoint:
    try:
        with open(path, "rb") as f:
            obj = load_numpy_pickle(f)
    except pickle.UnpicklingError as exc:
        raise AbswinError(_refused_pickle(path, exc)) from exc
    except Exception as exc:  # truncated or garbled pickles raise EOFError, ValueError, ...
        raise AbswinError(f"{path.name}: not a readable pickle ({exc.__class__.__name__})") from exc
    return _from_object(path, "pickle", obj, config)


def _unwrap(obj: dict) -> tuple[str | None, dict, dict]:
    """The wrapper key (or None), the state dict inside it, and the wrapper's other entries."""
    wrapper = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
    state = obj[wrapper] if wrapper else obj
    extra = {k: v for k, v in obj.items() if k != wrapper} if wrapper else {}
    return wrapper, state, extra


def _from_object(
    path: Path, format: str, obj: Any, config: dict | None, stored: dict[str, TensorEntry] | None = None
) -> Checkpoint:
    if not isinstance(obj, dict):
        raise AbswinError(f"{path.name}: holds a {type(obj).__name__}, not a state dict")
    wrapper, state, extra = _unwrap(obj)
    tensors = _tensors_of(path, state)
    if not tensors:
        raise AbswinError(f"{path.name}: no tensors found (looked at the top level and under {', '.join(WRAPPER_KEYS)})")
    return Checkpoint(path, format, wrapper, config, tensors=tensors, extra=extra, stored=stored)


def _is_weight(value: object) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray))


def _tensors_of(path: Path, state: dict) -> dict[str, torch.Tensor]:
    """The tensors (and numeric numpy arrays) of a state dict; anything else in it is not a weight."""
    tensors = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            value = _numeric_array(path, key, value)
        if isinstance(value, torch.Tensor):
            tensors[str(key)] = value
    return tensors


def _numeric_array(path: Path, key: object, value: np.ndarray) -> torch.Tensor:
    """A numpy array as a tensor; arrays of Python objects or strings are not weights."""
    array = np.ascontiguousarray(value)
    if not array.flags.writeable:  # torch warns about read-only arrays (protocol 5 may give them)
        array = array.copy()
    try:
        return torch.from_numpy(array)
    except TypeError as exc:
        raise AbswinError(
            f"{path.name}: {key} is a numpy array of {value.dtype}, not numbers; this is not a weight file"
        ) from exc
