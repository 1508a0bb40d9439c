"""Read checkpoints lazily and without torch: safetensors (header only until a tensor is asked for), torch files
(zip or legacy, through ``torch_zip``'s bounded pickle reader: tensors are byte ranges of the file), detectron2
``.pkl`` pickles through a numpy-only unpickler, and index-described shards of either.

Everything a user can get wrong here (empty, truncated, foreign or malicious files) becomes an ``AbswinError``.
"""

from __future__ import annotations

import copy
import pickle
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AbswinError, first_line
from . import torch_zip
from .dtypes import DtypeError, name_of
from .jsonfile import read_json_object
from .outputs import config_beside, weights_in
from .safe_pickle import load_numpy_pickle
from .safetensors_reader import read_header
from .shards import INDEX_SUFFIX, ShardIndex, index_in, read_weight_map, shard_files
from .tensors import FileTensor, RawTensor, StoredTensor, StridedTensor
from .unpickling import UnboundedGraph

# The dict keys a state dict is found under, outermost first; they nest ({'model': {'module': {...}}}).
WRAPPER_KEYS = ("model_state", "model", "state_dict", "module")
# The copies timm's load_checkpoint(use_ema=True) prefers over the plain state dict, in its order.
EMA_KEYS = ("state_dict_ema", "model_ema")
_ZIP_MAGIC = b"PK\x03\x04"
_LFS_MAGIC = b"version https://git-lfs.github.com/spec/"


class Checkpoint:
    """A lazy handle on one state dict of a checkpoint: keys, shapes and dtypes up front, tensors on demand."""

    def __init__(
        self,
        path: Path,
        container: str,
        tensors: Mapping[str, StoredTensor],
        config: dict | None = None,
        *,
        wrapper_path: tuple[str, ...] = (),
        others: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        shards: ShardIndex | None = None,
        storage_starts: dict[str, int] | None = None,
        source_object: Any = None,
    ) -> None:
        self.path = path
        self.container = container  # the file's kind: "safetensors" | "torch" | "pickle"
        self.config = config  # config.json beside the weights, when there is one
        self.wrapper_path = wrapper_path  # the dict keys the state dict sat under, () for a flat file
        self.metadata = metadata or {}  # safetensors __metadata__
        self.shards = shards  # the shard of each tensor, for a sharded checkpoint (``path`` is its index)
        self.prefix = ""  # stripped from the stored names by ``without_prefix`` (DDP's ``module.``, ...)
        self._tensors = tensors
        self._others = others or {}  # the top-level entries beside the wrapper (EMA copies, optimizer, epoch, ...)
        self.storage_starts = storage_starts or {}  # a torch file's storages: where each one's bytes begin
        self.source_object = source_object  # the whole object a torch file or pickle holds (a .pt output keeps it)
        self._unprefixed: frozenset[str] = frozenset()  # names stored without the prefix

    @property
    def wrapper(self) -> str | None:
        """The top-level key the state dict sat under (None for a flat file)."""
        return self.wrapper_path[0] if self.wrapper_path else None

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, key: str) -> bool:
        return key in self._tensors

    def shape(self, key: str) -> tuple[int, ...]:
        return self._tensors[key].shape

    def dtype(self, key: str) -> str:
        """The safetensors name of the tensor's dtype (``F32``, ``BF16``, ...)."""
        return self._tensors[key].dtype

    def stored(self, key: str) -> StoredTensor:
        """Where the tensor is: a byte range of a file (copied raw by the writer), or memory."""
        return self._tensors[key]

    def tensor(self, key: str) -> RawTensor:
        """The tensor's raw elements, read now."""
        return self._tensors[key].read()

    def without_prefix(self, prefix: str) -> Checkpoint:
        """The same checkpoint naming ``prefix``-ed tensors without it (others keep their names, unless that would
        hide one); ``stored_name`` gives the names back, so outputs keep the input's keys."""
        names = {k: k[len(prefix):] if k.startswith(prefix) else k for k in self.keys()}
        if len(set(names.values())) < len(names):
            return self  # stripping would merge two tensors: not a wrapper prefix
        view = copy.copy(self)
        view._tensors = {names[k]: v for k, v in self._tensors.items()}
        view.shards = self.shards.renamed(names) if self.shards else None
        view.prefix = prefix
        view._unprefixed = frozenset(k for k, new in names.items() if k == new)
        return view

    def stored_name(self, name: str) -> str:
        """The name a tensor has (or a new one gets) in the file: with the prefix ``without_prefix`` stripped."""
        return name if not self.prefix or name in self._unprefixed else self.prefix + name

    @property
    def other_states(self) -> list[str]:
        """The names of the other state dicts beside the one this handle reads (EMA copies): top-level entries
        holding weights."""
        return [name for name, value in self._others.items() if _state_dict_in(value)[1]]

    def other_state(self, name: str) -> Checkpoint:
        """A handle on the state dict ``other_states`` names (its own wrappers, such as ``module``, seen through)."""
        inner, state = _state_dict_in(self._others[name])
        others = {k: v for k, v in self._others.items() if k != name}
        tensors = _tensors_of(self.path, state, self.storage_starts)
        return Checkpoint(self.path, self.container, tensors, self.config, wrapper_path=(name, *inner), others=others,
                          metadata=self.metadata, storage_starts=self.storage_starts, source_object=self.source_object)


def describe_wrapper(path: tuple[str, ...]) -> str:
    """``('model', 'module')`` -> ``{'model': {'module': ...}}``; ``()`` -> ``flat``."""
    if not path:
        return "flat"
    return "".join(f"{{'{key}': " for key in path) + "..." + "}" * len(path)


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
        return Checkpoint(path, "safetensors", entries, config, metadata=metadata)
    if magic.startswith(_ZIP_MAGIC) or (magic[:1] == b"\x80" and path.suffix != ".pkl"):
        return _open_torch(path, config)
    if magic[:1] == b"\x80":
        return _open_pickle(path, config)
    raise AbswinError(f"{path}: not a checkpoint (neither safetensors, a torch file nor a pickle)")


def _open_shards(index: Path, config_path: Path | None) -> Checkpoint:
    """Every shard an index names, as one checkpoint, each read lazily. Each tensor must sit in the shard the index
    says."""
    weight_map = read_weight_map(index)
    config = read_json_object(config_path) if config_path else None
    shards = [open_checkpoint(index.parent / name) for name in shard_files(weight_map)]
    containers = {shard.container for shard in shards}
    if len(containers) != 1:
        raise AbswinError(f"{index}: its shards mix {' and '.join(sorted(containers))} files")
    found: dict[str, str] = {}
    for shard in shards:
        found.update(dict.fromkeys(shard.keys(), shard.path.name))
    if found != weight_map:
        wrong = sorted(set(found.items()) ^ set(weight_map.items()))[0][0]
        raise AbswinError(f"{index}: the index and the shards disagree about {wrong!r}; re-download the checkpoint")
    tensors = {key: shard.stored(key) for shard in shards for key in shard.keys()}
    return Checkpoint(index, shards[0].container, tensors, config, metadata=shards[0].metadata, shards=ShardIndex(weight_map))


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
    """A torch file (zip, or legacy from before torch 1.6), read from its pickle alone with bounded memory: every
    tensor is checked to lie inside its storage and the storage inside the file; tensors are read when touched."""
    if sys.byteorder != "little":
        raise AbswinError(f"{path.name}: torch files are read on little-endian machines only")
    try:
        layout = torch_zip.open_torch(path)
    except torch_zip.NotTorchFile:  # numpy arrays pickled into a .pth are fine for the numpy-only reader
        return _open_pickle(path, config)
    except pickle.UnpicklingError as exc:
        raise AbswinError(_refused_pickle(path, exc)) from exc
    except torch_zip.CheckpointError as exc:
        message = str(exc)
        raise AbswinError(message if message.startswith(path.name) else f"{path.name}: {message}") from exc
    except Exception as exc:  # zipfile and struct raise many types for damaged archives
        raise AbswinError(f"{path.name}: not a readable torch file ({first_line(exc)[:80]}); is it truncated?") from exc
    return _from_object(path, "torch", layout.obj, config, layout.storage_starts)


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
    except UnboundedGraph as exc:
        raise AbswinError(f"{path.name}: the pickle holds {exc}; refused, as no checkpoint does") from exc
    except Exception as exc:  # truncated or garbled pickles raise EOFError, ValueError, ...
        raise AbswinError(f"{path.name}: not a readable pickle ({exc.__class__.__name__})") from exc
    return _from_object(path, "pickle", obj, config)


def _state_dict_in(obj: Any) -> tuple[tuple[str, ...], dict]:
    """The wrapper keys leading to the state dict inside ``obj`` and that dict ({} when there is none): wrappers
    are descended while a level holds no weights of its own."""
    path: tuple[str, ...] = ()
    while isinstance(obj, Mapping):
        if any(_is_weight(v) for v in obj.values()):
            return path, dict(obj)
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            break
        path, obj = (*path, key), obj[key]
    return path, {}


def _from_object(
    path: Path, container: str, obj: Any, config: dict | None, storage_starts: dict[str, int] | None = None
) -> Checkpoint:
    if not isinstance(obj, Mapping):
        raise AbswinError(f"{path.name}: holds a {type(obj).__name__}, not a state dict")
    wrapper_path, state = _state_dict_in(obj)
    tensors = _tensors_of(path, state, storage_starts or {})
    if not tensors:
        raise AbswinError(
            f"{path.name}: no tensors found (looked at the top level and under {', '.join(WRAPPER_KEYS)}, nested)"
        )
    others = {k: v for k, v in obj.items() if k != wrapper_path[0]} if wrapper_path else {}
    return Checkpoint(path, container, tensors, config, wrapper_path=wrapper_path, others=others,
                      storage_starts=storage_starts, source_object=obj)


def _is_weight(value: object) -> bool:
    return isinstance(value, (torch_zip.TensorRef, np.ndarray))


def _tensors_of(path: Path, state: dict, storage_starts: dict[str, int]) -> dict[str, StoredTensor]:
    """The tensors (and numeric numpy arrays) of a state dict; anything else in it is not a weight."""
    tensors: dict[str, StoredTensor] = {}
    for key, value in state.items():
        if isinstance(value, torch_zip.TensorRef):
            tensors[str(key)] = _in_file(path, value, storage_starts[value.storage.key])
        elif isinstance(value, np.ndarray):
            tensors[str(key)] = _numeric_array(path, key, value)
    return tensors


def _in_file(path: Path, ref: torch_zip.TensorRef, storage_start: int) -> FileTensor | StridedTensor:
    """Where a torch tensor's bytes are: one range when contiguous, else a strided view of its storage."""
    lo, hi = ref.extent()
    if ref.contiguous:
        return FileTensor(path, ref.dtype, ref.shape, storage_start + lo, storage_start + hi)
    return StridedTensor(path, ref.dtype, ref.shape, ref.strides, storage_start + lo, hi - lo)


def _numeric_array(path: Path, key: object, value: np.ndarray) -> RawTensor:
    """A numpy array as a tensor; arrays of Python objects or strings are not weights."""
    try:
        dtype = name_of(value.dtype)
    except DtypeError as exc:
        raise AbswinError(
            f"{path.name}: {key} is a numpy array of {value.dtype}, not numbers; this is not a weight file"
        ) from exc
    return RawTensor(dtype, np.ascontiguousarray(value.astype(value.dtype.newbyteorder("<"), copy=False)))
