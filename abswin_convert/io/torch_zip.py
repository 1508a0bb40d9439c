"""Read torch checkpoints without torch: lazily, with bounded memory, refusing anything that is not data.

Two formats:
- zip (``torch.save`` default): ``<archive>/data.pkl`` (the object, tensors as persistent ids), one member per
  storage ``<archive>/data/<key>``, ``<archive>/byteorder``. Members are STORED, so a tensor's bytes are a plain
  byte range of the file.
- legacy (``_use_new_zipfile_serialization=False``): pickles of the magic number, protocol and sys_info, the main
  pickle, the sorted storage keys, then each storage as an 8-byte little-endian element count and its bytes.

Only the pickles are read, within bounds, and every tensor is checked against its storage and every storage against
the file, so that ``torch.load`` (which materialises the tensors) never meets a file that claims more than it holds;
the byte ranges found let the writer copy untouched tensors raw.
The unpickler is the pure-Python one (its memo is a dict: the C one allocates up to the largest index a PUT names)
and returns our own placeholders for the few torch globals a weights-only file uses; anything else is refused
before it is called, with ``pickle.UnpicklingError("GLOBAL module.name")``.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from .dtypes import MAX_SIZE, TORCH_NAMES, itemsize
from .unpickling import BoundedUnpickler, UnboundedGraph

# real data.pkl members are kilobytes (a few MB for thousands of tensors); the pure-Python unpickler's objects
# take tens of times the pickle's bytes, so this bound also bounds the memory spent reading it
MAX_PICKLE_BYTES = 16 * 1024 * 1024
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # a zip local file header, 30 bytes

# torch's legacy storage classes and dtypes -> safetensors names
STORAGE_DTYPES = {
    "DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8", "ByteStorage": "U8",
    "BoolStorage": "BOOL",
}


class CheckpointError(ValueError):
    """A file this reader refuses: corrupt, truncated, hostile or in a form it does not read."""


class NotTorchFile(CheckpointError):
    """A pickle that is not a torch legacy file (no torch magic number first): a plain pickle named ``.pth``."""


# ---- what the pickle turns into ----------------------------------------------------------------------------

@dataclass(frozen=True)
class StorageType:
    """``torch.FloatStorage`` and friends; ``torch.storage.UntypedStorage`` is bytes (``U8``)."""

    name: str
    dtype: str


@dataclass(frozen=True)
class TorchDtype:
    """A ``torch.<dtype>`` global, kept as data (``torch.float32`` -> ``TorchDtype("float32", "F32")``)."""

    torch_name: str
    dtype: str


@dataclass(frozen=True)
class Layout:
    """``torch.serialization._get_layout("torch.strided")``, kept as data."""

    name: str


class NamespaceData(dict):
    """An ``argparse.Namespace`` (MAE training saves keep their ``args`` in one), kept as a plain dict."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise pickle.UnpicklingError("BUILD of argparse.Namespace with a state that is not a dict of names")
        self.update(state)


@dataclass(frozen=True)
class StorageRef:
    """One storage named by a persistent id; ``numel`` counts elements of ``dtype``."""

    key: str
    dtype: str
    numel: int
    location: str

    @property
    def nbytes(self) -> int:
        return self.numel * itemsize(self.dtype)


@dataclass(frozen=True)
class TensorRef:
    """A tensor as the pickle describes it; shape, strides and offset count elements of ``dtype``."""

    storage: StorageRef
    dtype: str
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    storage_offset: int
    requires_grad: bool = False
    parameter: bool = False

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return itemsize(self.dtype)

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize

    def extent(self) -> tuple[int, int]:
        """The storage bytes ``[lo, hi)`` this tensor's elements lie in (empty for an empty tensor)."""
        lo = self.storage_offset * self.itemsize
        if self.numel == 0:
            return lo, lo
        last = self.storage_offset + sum((n - 1) * s for n, s in zip(self.shape, self.strides))
        return lo, (last + 1) * self.itemsize

    @property
    def contiguous(self) -> bool:
        expected = 1
        for n, s in zip(reversed(self.shape), reversed(self.strides)):
            if n != 1 and s != expected:
                return False
            expected *= n
        return True


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a checkpoint, where it sits in the object and in the file."""

    path: tuple[Any, ...]  # keys and indices from the root object, e.g. ("model", "blocks.0.attn.qkv.weight")
    ref: TensorRef
    storage_start: int  # absolute file offset of the storage's first byte
    byte_range: tuple[int, int] | None  # absolute [start, end) of the tensor's bytes, when contiguous

    @property
    def name(self) -> str:
        return ".".join(str(p) for p in self.path)

    @property
    def dtype(self) -> str:
        return self.ref.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.ref.shape

    @property
    def strides(self) -> tuple[int, ...]:
        return self.ref.strides

    @property
    def storage_key(self) -> str:
        return self.ref.storage.key

    @property
    def storage_offset(self) -> int:
        return self.ref.storage_offset


# ---- the unpickler -----------------------------------------------------------------------------------------

def _whole(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_SIZE:
        shown = repr(value) if type(value) is not int or value.bit_length() < 100 else f"an int of {value.bit_length()} bits"
        raise CheckpointError(f"a tensor's {what} must be an integer from 0 to 2**63 - 1, found {shown}")
    return value


def _ints(values: Any, what: str) -> tuple[int, ...]:
    if not isinstance(values, tuple):
        raise CheckpointError(f"a tensor's {what} must be a tuple of integers, found {type(values).__name__}")
    return tuple(_whole(v, what) for v in values)


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, dtype: str | None) -> TensorRef:
    """Check a tensor against its storage: nothing past its end, no logical size beyond it (expand tricks)."""
    if not isinstance(storage, StorageRef):
        raise CheckpointError("a tensor whose storage is not a persistent storage id")
    shape, strides = _ints(size, "shape"), _ints(stride, "strides")
    if len(shape) != len(strides):
        raise CheckpointError(f"a tensor with shape {list(shape)} but strides {list(strides)}")
    dtype = dtype or storage.dtype
    ref = TensorRef(storage, dtype, shape, strides, _whole(offset, "storage offset"), requires_grad is True)
    lo, hi = ref.extent()
    if hi > storage.nbytes or (ref.numel == 0 and lo > storage.nbytes):
        raise CheckpointError(
            f"tensor {list(shape)} (strides {list(strides)}, offset {ref.storage_offset}) reaches byte {hi} of "
            f"storage {storage.key!r}, which holds {storage.nbytes}; the file is corrupt"
        )
    if ref.nbytes > storage.nbytes:
        raise CheckpointError(
            f"tensor {list(shape)} {dtype} would be {ref.nbytes} bytes from a storage of {storage.nbytes} "
            "(stride-0 / expanded view); refused rather than materialised"
        )
    return ref


def _hooks_ok(hooks: Any) -> None:
    if not isinstance(hooks, (dict, type(None))) or hooks:
        raise CheckpointError("a tensor with backward hooks")


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any,
                       metadata: Any = None) -> TensorRef:
    _hooks_ok(hooks)
    return _tensor(storage, offset, size, stride, requires_grad, None)


def _rebuild_tensor_v3(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any,
                       dtype: Any, metadata: Any = None) -> TensorRef:
    """New dtypes (float8, ...) are saved as bytes (``UntypedStorage``) plus a ``torch.<dtype>``."""
    _hooks_ok(hooks)
    if not isinstance(dtype, TorchDtype):
        raise CheckpointError("_rebuild_tensor_v3 without a torch dtype")
    return _tensor(storage, offset, size, stride, requires_grad, dtype.dtype)


def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any, state: Any = None) -> TensorRef:
    if not isinstance(data, TensorRef):
        raise CheckpointError("a parameter whose data is not a tensor")
    _hooks_ok(hooks)
    return replace(data, requires_grad=requires_grad is True, parameter=True)


def _get_layout(name: Any) -> Layout:
    if name != "torch.strided":
        raise pickle.UnpicklingError(f"GLOBAL torch.serialization._get_layout({name!r}): only dense tensors are read")
    return Layout(name)


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """How protocol 2 spells ``bytes``: ``_codecs.encode(text, 'latin1')``."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("GLOBAL _codecs.encode with a codec other than latin1")
    return text.encode("latin1")


_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.serialization", "_get_layout"): _get_layout,
    ("torch.storage", "UntypedStorage"): StorageType("UntypedStorage", "U8"),
    ("argparse", "Namespace"): NamespaceData,
    ("_codecs", "encode"): _latin1_bytes,
    **{("torch", k): StorageType(k, v) for k, v in STORAGE_DTYPES.items()},
    **{("torch", k): TorchDtype(k, v) for v, k in TORCH_NAMES.items()},
}


class _DataUnpickler(BoundedUnpickler):
    """Data containers, torch tensors as placeholders, nothing else; storages are registered as they come."""

    def __init__(self, file: BinaryIO, legacy: bool) -> None:
        super().__init__(file, encoding="latin1")
        self.legacy = legacy
        self.storages: dict[str, StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except KeyError as exc:
            raise pickle.UnpicklingError(f"GLOBAL {module}.{name}") from exc

    def persistent_load(self, pid: Any) -> StorageRef:
        expected = 6 if self.legacy else 5
        if not isinstance(pid, tuple) or len(pid) != expected or pid[0] not in ("storage", b"storage"):
            raise CheckpointError(f"a persistent id that is not a storage: {str(pid)[:80]}")
        storage_type, key, location, numel = pid[1:5]
        if self.legacy and pid[5] is not None:
            raise CheckpointError("a legacy storage view (view_metadata); such files are not read")
        if not isinstance(storage_type, StorageType) or not isinstance(key, str) or not isinstance(location, str):
            raise CheckpointError(f"a malformed storage id: {str(pid)[:80]}")
        ref = StorageRef(key, storage_type.dtype, _whole(numel, "storage size"), location)
        seen = self.storages.setdefault(key, ref)
        if seen.nbytes != ref.nbytes:
            raise CheckpointError(f"storage {key!r} is named with two sizes or types")
        return seen

    def load_build(self) -> None:
        target, state = self.stack[-2], self.stack[-1]
        if isinstance(target, NamespaceData):
            target.__setstate__(self.stack.pop())
            return
        # a module's state dict carries its ``_metadata`` (versions) as the OrderedDict's attribute
        if not isinstance(target, OrderedDict) or not isinstance(state, dict) or not all(
            isinstance(k, str) for k in state
        ):
            raise pickle.UnpicklingError(f"BUILD of {type(target).__name__}: only data is read")
        super().load_build()

    dispatch: ClassVar[dict] = {**BoundedUnpickler.dispatch, pickle.BUILD[0]: load_build}


class _Bounded(io.RawIOBase):
    """A window of a file for one pickle: reads past ``limit`` bytes or past the end of the file are refused."""

    def __init__(self, f: BinaryIO, limit: int, what: str) -> None:
        self.f, self.left, self.what = f, limit, what

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self.left:
            raise CheckpointError(f"{self.what} is longer than {MAX_PICKLE_BYTES} bytes or claims more than follows")
        data = self.f.read(n)
        self.left -= len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data = self.f.readline(min(self.left, 1 << 20))
        self.left -= len(data)
        return data


def _unpickle(f: BinaryIO, legacy: bool, what: str) -> tuple[Any, dict[str, StorageRef]]:
    unpickler = _DataUnpickler(f, legacy)
    try:
        return unpickler.load(), unpickler.storages
    except (CheckpointError, pickle.UnpicklingError):
        raise
    except UnboundedGraph as exc:
        raise CheckpointError(f"{what} holds {exc}; refused, as no checkpoint does") from exc
    except (EOFError, struct.error, IndexError, KeyError, TypeError, ValueError, AttributeError, RecursionError,
            OverflowError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{what} is not a readable pickle ({exc.__class__.__name__}: {str(exc)[:80]})") from exc


# ---- the checkpoint ----------------------------------------------------------------------------------------

@dataclass
class TorchCheckpoint:
    """A torch file opened without torch: its object (tensors as ``TensorRef``) and every tensor in it."""

    path: Path
    format: str  # "zip" | "legacy"
    obj: Any
    tensors: list[TensorInfo]
    storage_starts: dict[str, int]


def open_torch(path: str | Path) -> TorchCheckpoint:
    """Open a torch checkpoint (zip or legacy) and describe every tensor in it, reading no tensor data."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PK\x03\x04":
        return _open_zip(path)
    if magic[:1] == b"\x80":
        return _open_legacy(path)
    raise CheckpointError(f"{path.name}: not a torch checkpoint (neither a zip nor a pickle)")


def _member_data_start(f: BinaryIO, info: zipfile.ZipInfo, file_size: int) -> int:
    """Absolute offset of a STORED member's bytes: after its local header, name and extra field."""
    f.seek(info.header_offset)
    header = f.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise CheckpointError(f"zip member {info.filename!r} has no local header where the directory says")
    fields = _LOCAL_HEADER.unpack(header)
    start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
    if start + info.file_size > file_size:
        raise CheckpointError(f"zip member {info.filename!r} runs past the end of the file; it is truncated")
    return start


def _open_zip(path: Path) -> TorchCheckpoint:
    size = path.stat().st_size
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path.name}: not a readable torch file ({exc}); is it truncated?") from exc
    with archive, open(path, "rb") as f:
        pickles = [i for i in archive.infolist() if i.filename.count("/") == 1 and i.filename.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path.name}: a zip without exactly one <archive>/data.pkl; not a torch file")
        prefix = pickles[0].filename[: -len("data.pkl")]
        members = {i.filename: i for i in archive.infolist() if i.filename.startswith(prefix)}
        for info in members.values():
            if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                raise CheckpointError(f"{path.name}: zip member {info.filename!r} is compressed; torch never does "
                                      "that, and compressed tensors cannot be read in place")
        byteorder = members.get(prefix + "byteorder")
        if byteorder is not None:
            order = archive.read(byteorder) if byteorder.file_size <= 16 else b"?"
            if order.strip() != b"little":
                raise CheckpointError(f"{path.name}: saved with byte order {order[:16]!r}; only little-endian is read")
        data_pkl = pickles[0]
        if data_pkl.file_size > MAX_PICKLE_BYTES:
            raise CheckpointError(f"{path.name}: data.pkl is {data_pkl.file_size} bytes, over the "
                                  f"{MAX_PICKLE_BYTES}-byte bound; refused")
        f.seek(_member_data_start(f, data_pkl, size))
        obj, storages = _unpickle(io.BytesIO(f.read(data_pkl.file_size)), legacy=False, what="data.pkl")
        starts = {}
        for key, ref in storages.items():
            member = members.get(f"{prefix}data/{key}")
            if member is None:
                raise CheckpointError(f"{path.name}: storage {key!r} has no zip member; the file is incomplete")
            if member.file_size < ref.nbytes:
                raise CheckpointError(f"{path.name}: storage {key!r} needs {ref.nbytes} bytes, its member holds "
                                      f"{member.file_size}; the file is corrupt")
            starts[key] = _member_data_start(f, member, size)
    return _checkpoint(path, "zip", obj, starts)


def _open_legacy(path: Path) -> TorchCheckpoint:
    size = path.stat().st_size
    with open(path, "rb") as f:
        def next_pickle(what: str, legacy: bool = False) -> tuple[Any, dict[str, StorageRef]]:
            return _unpickle(_Bounded(f, MAX_PICKLE_BYTES, what), legacy=legacy, what=what)  # type: ignore[arg-type]

        try:
            magic = next_pickle("the magic number")[0]
        except (CheckpointError, pickle.UnpicklingError):
            magic = None
        if magic != LEGACY_MAGIC:
            raise NotTorchFile(f"{path.name}: a pickle, but not a torch checkpoint (no torch magic number)")
        if next_pickle("the protocol version")[0] != LEGACY_PROTOCOL:
            raise CheckpointError(f"{path.name}: an unknown torch legacy protocol version")
        sys_info = next_pickle("sys_info")[0]
        if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
            raise CheckpointError(f"{path.name}: saved on a big-endian machine (or without sys_info); not read")
        obj, storages = next_pickle("the main pickle", legacy=True)
        keys = next_pickle("the storage key list")[0]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
            raise CheckpointError(f"{path.name}: the storage key list is malformed")
        missing = set(storages) - set(keys)
        if missing:
            raise CheckpointError(f"{path.name}: storages {sorted(missing)[:3]} are used but not stored")
        starts, position = {}, f.tell()
        for key in keys:
            f.seek(position)
            count = f.read(8)
            if len(count) != 8:
                raise CheckpointError(f"{path.name}: the file ends before storage {key!r}; it is truncated")
            (numel,) = struct.unpack("<q", count)
            ref = storages.get(key)
            if ref is None:
                raise CheckpointError(f"{path.name}: storage {key!r} is stored but never used; the file is corrupt")
            if numel != ref.numel:
                raise CheckpointError(f"{path.name}: storage {key!r} is stored with {numel} elements, the pickle "
                                      f"says {ref.numel}; the file is corrupt")
            starts[key] = position + 8
            position = starts[key] + ref.nbytes
            if position > size:
                raise CheckpointError(f"{path.name}: storage {key!r} runs past the end of the file; it is truncated")
    return _checkpoint(path, "legacy", obj, starts)


def _walk(obj: Any) -> list[tuple[tuple[Any, ...], TensorRef]]:
    """Every tensor in the object with its key path, depth first, in the containers' order (the reader has made sure
    that the object, walked as a tree, is small, shallow and without cycles)."""
    found: list[tuple[tuple[Any, ...], TensorRef]] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), obj)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, TensorRef):
            found.append((path, node))
        elif isinstance(node, dict):
            stack.extend((path + (k,), v) for k, v in reversed(node.items()))
        elif isinstance(node, (list, tuple)):
            stack.extend((path + (i,), v) for i, v in reversed(list(enumerate(node))))
    return found


def _checkpoint(path: Path, format: str, obj: Any, starts: dict[str, int]) -> TorchCheckpoint:
    tensors = []
    for key_path, ref in _walk(obj):
        start = starts[ref.storage.key]
        lo, hi = ref.extent()
        byte_range = (start + lo, start + hi) if ref.contiguous else None
        tensors.append(TensorInfo(key_path, ref, start, byte_range))
    return TorchCheckpoint(path, format, obj, tensors, starts)


__all__ = [
    "MAX_PICKLE_BYTES",
    "CheckpointError",
    "Layout",
    "NamespaceData",
    "NotTorchFile",
    "StorageRef",
    "TensorInfo",
    "TensorRef",
    "TorchCheckpoint",
    "TorchDtype",
    "open_torch",
]
