"""Write a checkpoint as ``torch.save`` does (its zip format), without torch: ``torch.load`` reads it as its own.

The object is what a torch file holds: nested dicts, lists and plain values, with tensors of two kinds: an
``OutputTensor`` (a converted tensor, or one of a new state dict: its own storage) and a ``TensorRef`` of the source
torch file (the optimizer state, the other entries of a training checkpoint: its whole storage copied once, so views
and shared storages stay as they were). The archive holds ``data.pkl`` (protocol 2, opcode for opcode as torch's
pickler writes it), one ``data/N`` record per storage, and torch's small version records. Records are stored
uncompressed, their data aligned to 64 bytes as torch aligns them (``torch.load(mmap=True)`` maps them in place),
with zip64 sizes and a data descriptor after each record, as torch writes them: bytes taken from the source are
copied inside the kernel while their CRC-32 is computed beside the copy, and nothing has to be patched afterwards.
"""

from __future__ import annotations

import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import AbswinError
from .dtypes import TORCH_NAMES, DtypeError, itemsize, name_of
from .torch_zip import STORAGE_DTYPES, Layout, NamespaceData, StorageRef, TensorRef, TorchDtype
from .writer import OutputTensor, RawBytes, atomic_file, copy_range, start_writeback

ARCHIVE = "archive"  # the folder torch.save uses for a file object
ALIGNMENT = 64
_CRC_CHUNK = 8 << 20
_STORAGE_CLASSES = {dtype: name for name, dtype in STORAGE_DTYPES.items()}
_UTF8_AND_DESCRIPTOR = 0x0808  # general purpose flags: names in UTF-8, sizes and CRC after the data
_ZIP64_VERSION = 45
_FULL = 0xFFFFFFFF  # a 32-bit field whose value is in the zip64 extra field
_EMPTY_ORDERED_DICT = b"ccollections\nOrderedDict\n)R"  # OrderedDict(): also a tensor's (absent) backward hooks


@dataclass(frozen=True)
class SourceStorages:
    """Where the storages of a source torch file's ``TensorRef``s lie: the file, and each storage's first byte."""

    path: Path
    starts: dict[str, int]


class TorchZip:
    """``obj`` pickled as torch pickles it, its storages gathered; ``write`` streams the archive. ``TensorRef``s are
    read from ``source``."""

    def __init__(self, obj: Any, source: SourceStorages | None = None) -> None:
        pickler = _Pickler(source)
        self.data_pkl = pickler.dump(obj)
        self.records = pickler.records  # storage key -> its bytes

    @property
    def nbytes(self) -> int:
        """The bytes of every storage: what ``write`` copies or writes."""
        return sum(int(data.nbytes) for data in self.records.values())

    def write(self, dest: Path, progress: Callable[[int], object] | None = None) -> None:
        """The archive at ``dest``, atomically; ``progress(n)`` is called with each storage's byte count once written."""
        with atomic_file(dest) as out:
            archive = _ZipWriter(out)
            archive.add_bytes(f"{ARCHIVE}/data.pkl", self.data_pkl)
            archive.add_bytes(f"{ARCHIVE}/.format_version", b"1")
            archive.add_bytes(f"{ARCHIVE}/.storage_alignment", str(ALIGNMENT).encode())
            archive.add_bytes(f"{ARCHIVE}/byteorder", b"little")
            with ThreadPoolExecutor(1, thread_name_prefix="crc32") as crc_thread:
                for key, data in self.records.items():
                    archive.add_storage(f"{ARCHIVE}/data/{key}", data, crc_thread)
                    if progress is not None:
                        progress(int(data.nbytes))
            archive.add_bytes(f"{ARCHIVE}/version", b"3\n")
            archive.finish()


# ---- data.pkl -------------------------------------------------------------------------------------------------


class _Pickler:
    """Protocol-2 opcodes for the values a torch file holds; ``records`` gathers each storage's bytes under its new
    key, keys numbered in order of first use as torch numbers them. An object met twice (a tensor under two names,
    a list the source's pickle named many times) is written once and then named by the memo, as pickle does: a
    graph of shared references stays as small as the source held it, never expanded into a tree."""

    def __init__(self, source: SourceStorages | None) -> None:
        self.source = source
        self.records: dict[str, RawBytes | np.ndarray] = {}
        self._source_keys: dict[str, str] = {}  # a source storage's key -> its key in the output
        self._memo: dict[int, tuple[int, Any]] = {}  # id -> (memo index, the object, kept alive so its id stays its)
        self._shared: set[int] = set()  # ids of the objects the dumped object holds more than once

    def dump(self, obj: Any) -> bytes:
        self._shared = _shared_ids(obj)
        return b"\x80\x02" + self._value(obj) + b"."

    def _value(self, value: Any) -> bytes:
        if id(value) not in self._shared:  # met once: written as it is (a file without sharing has no memo)
            return self._spelled(value)
        seen = self._memo.get(id(value))
        if seen is not None:
            return _memo_get(seen[0])
        spelled = self._spelled(value)
        index = len(self._memo)
        self._memo[id(value)] = (index, value)
        return spelled + _memo_put(index)

    def _spelled(self, value: Any) -> bytes:  # one branch per kind of value a torch file holds
        if value is None:
            return b"N"
        if isinstance(value, bool):
            return _bool(value)
        if isinstance(value, int):
            return _int(value)
        if isinstance(value, float):
            return b"G" + struct.pack(">d", value)
        if isinstance(value, str):
            return _text(value)
        if isinstance(value, (bytes, bytearray)):  # protocol 2 spells bytes as _codecs.encode(text, "latin1")
            spelled = _global("_codecs", "encode") + _text(bytes(value).decode("latin1")) + _text("latin1") + b"\x86R"
            return spelled if isinstance(value, bytes) else _global("builtins", "bytearray") + spelled + b"\x85R"
        if isinstance(value, np.generic):  # a numpy scalar (a pickle's metrics): the plain number
            return self._spelled(value.item())
        if isinstance(value, np.ndarray):  # a pickle's array: a tensor of its own
            value = OutputTensor("", _dtype_name(value), tuple(value.shape), value)
        if isinstance(value, OutputTensor):
            storage = StorageRef("", value.dtype, 0, "cpu")  # its own storage, of its own dtype
            return self._tensor(self._new_storage(value), storage, value.dtype, value.shape, 0, _contiguous(value.shape))
        if isinstance(value, TensorRef):
            return self._tensor_ref(value)
        if isinstance(value, StorageRef):  # a bare storage (torch.save of a storage object)
            return self._storage_id(self._source_storage(value), value, value.dtype in _STORAGE_CLASSES)
        if isinstance(value, TorchDtype):
            return _global("torch", value.torch_name)
        if isinstance(value, Layout):
            return _global("torch.serialization", "_get_layout") + _text(value.name) + b"\x85R"
        if isinstance(value, NamespaceData):  # argparse.Namespace: NEWOBJ, then its attributes by BUILD
            return _global("argparse", "Namespace") + b")\x81" + self._dict(dict(value)) + b"b"
        if isinstance(value, OrderedDict):  # a module's state dict: its ``_metadata`` (versions) BUILT on after
            attributes = vars(value)
            return _EMPTY_ORDERED_DICT + self._items(value) + (self._dict(attributes) + b"b" if attributes else b"")
        if isinstance(value, dict):
            return self._dict(value)
        if isinstance(value, list):
            return b"]" + (b"(" + b"".join(map(self._value, value)) + b"e" if value else b"")
        if isinstance(value, tuple):
            return b"(" + b"".join(map(self._value, value)) + b"t"
        if isinstance(value, (set, frozenset)):
            return _global("builtins", type(value).__name__) + self._value(list(value)) + b"\x85R"
        raise AbswinError(f"a {type(value).__name__} cannot be written to a torch file here; this is a bug, please report it")

    def _dict(self, value: dict) -> bytes:
        return b"}" + self._items(value)

    def _items(self, value: dict) -> bytes:
        if not value:
            return b""
        return b"(" + b"".join(self._value(k) + self._value(v) for k, v in value.items()) + b"u"

    def _new_storage(self, tensor: OutputTensor) -> str:
        key = str(len(self.records))
        self.records[key] = tensor.data
        return key

    def _source_storage(self, storage: StorageRef) -> str:
        if self.source is None:
            raise AbswinError("a tensor of the source file was given without the file; this is a bug, please report it")
        if storage.key not in self._source_keys:
            key = self._source_keys[storage.key] = str(len(self.records))
            self.records[key] = RawBytes(self.source.path, self.source.starts[storage.key], storage.nbytes)
        return self._source_keys[storage.key]

    def _tensor_ref(self, ref: TensorRef) -> bytes:
        key = self._source_storage(ref.storage)
        tensor = self._tensor(key, ref.storage, ref.dtype, ref.shape, ref.storage_offset, ref.strides, ref.requires_grad)
        if not ref.parameter:
            return tensor
        rebuild = _global("torch._utils", "_rebuild_parameter")
        return rebuild + b"(" + tensor + _bool(ref.requires_grad) + _EMPTY_ORDERED_DICT + b"tR"

    def _tensor(self, key: str, storage: StorageRef, dtype: str, shape: tuple[int, ...], offset: int,
                strides: tuple[int, ...], requires_grad: bool = False) -> bytes:
        """A tensor on storage ``key``: ``_rebuild_tensor_v2`` on a typed storage of its own dtype; else (float8 and
        other dtypes without a storage class, a view of another dtype's storage) ``_rebuild_tensor_v3`` on the
        storage's bytes, with the dtype, as torch saves them."""
        typed = storage.dtype == dtype and dtype in _STORAGE_CLASSES
        args = self._storage_id(key, storage, typed) + _int(offset) + _ints(shape) + _ints(strides)
        args += _bool(requires_grad) + _EMPTY_ORDERED_DICT
        if typed:
            return _global("torch._utils", "_rebuild_tensor_v2") + b"(" + args + b"tR"
        return _global("torch._utils", "_rebuild_tensor_v3") + b"(" + args + _global("torch", TORCH_NAMES[dtype]) + b"tR"

    def _storage_id(self, key: str, storage: StorageRef, typed: bool) -> bytes:
        """``('storage', storage class, key, location, numel)``, then BINPERSID."""
        nbytes = int(self.records[key].nbytes)
        if typed:
            storage_class, numel = _global("torch", _STORAGE_CLASSES[storage.dtype]), nbytes // itemsize(storage.dtype)
        else:
            storage_class, numel = _global("torch.storage", "UntypedStorage"), nbytes
        return b"(" + _text("storage") + storage_class + _text(key) + _text(storage.location) + _int(numel) + b"tQ"


def _shared_ids(obj: Any) -> set[int]:
    """The ids of the objects ``obj`` refers to more than once (numbers aside), each container looked into once."""
    seen: set[int] = set()
    shared: set[int] = set()
    stack = [obj]
    while stack:
        node = stack.pop()
        if node is None or isinstance(node, (bool, int, float, np.generic)):
            continue
        if id(node) in seen:
            shared.add(id(node))
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            stack.extend([*node.keys(), *node.values(), *vars(node).values()] if hasattr(node, "__dict__")
                         else [*node.keys(), *node.values()])
        elif isinstance(node, (list, tuple, set, frozenset)):
            stack.extend(node)
    return shared


def _dtype_name(array: np.ndarray) -> str:
    try:
        return name_of(array.dtype)
    except DtypeError as exc:
        raise AbswinError(f"the checkpoint holds a {array.dtype} array beside its weights, which a .pt output cannot "
                          "hold; a safetensors output (--format safetensors) keeps the weights alone") from exc


def _contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape)))


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _text(value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(data)) + data


def _bool(value: bool) -> bytes:
    return b"\x88" if value else b"\x89"


def _int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    if len(data) < 256:
        return b"\x8a" + bytes([len(data)]) + data  # LONG1
    return b"\x8b" + struct.pack("<i", len(data)) + data  # LONG4: an int of over 2,000 bits


def _memo_put(index: int) -> bytes:
    return b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index)


def _memo_get(index: int) -> bytes:
    return b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index)


def _ints(values: tuple[int, ...]) -> bytes:
    return b"(" + b"".join(_int(v) for v in values) + b"t"


# ---- the zip container ----------------------------------------------------------------------------------------


class _ZipWriter:
    """Stored (uncompressed) records with zip64 sizes, data aligned to ``ALIGNMENT``, then the central directory."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.records: list[tuple[bytes, int, int, int]] = []  # name, local header offset, size, CRC-32
        self.handed_over = 0  # how far the kernel was asked to start writing the file out

    def add_bytes(self, name: str, data: bytes) -> None:
        self._start(name)
        self.out.write(data)
        self._end(name, len(data), zlib.crc32(data))

    def add_storage(self, name: str, data: RawBytes | np.ndarray, crc_thread: ThreadPoolExecutor) -> None:
        """A storage's bytes: copied from the source file (its CRC-32 read beside the copy) or from memory."""
        self._start(name)
        if isinstance(data, RawBytes):
            crc: Future[int] = crc_thread.submit(_crc32_of_range, data)
            copy_range(self.out, data)
            self._end(name, data.nbytes, crc.result())
        else:
            raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
            self.out.write(raw.data)
            self._end(name, raw.nbytes, zlib.crc32(raw.data))
        self.handed_over = start_writeback(self.out, self.handed_over)

    def _start(self, name: str) -> None:
        encoded = name.encode()
        offset = self.out.tell()
        zip64 = struct.pack("<HHQQ", 1, 16, 0, 0)  # sizes follow in the data descriptor
        unpadded = offset + 30 + len(encoded) + len(zip64) + 4  # + the padding field's own 4-byte header
        padding = struct.pack("<HH", 0x4246, -unpadded % ALIGNMENT) + b"Z" * (-unpadded % ALIGNMENT)  # "FB" as torch
        self.out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, _ZIP64_VERSION, _UTF8_AND_DESCRIPTOR, 0, 0, 0x21,
                                   0, _FULL, _FULL, len(encoded), len(zip64) + len(padding)))
        self.out.write(encoded + zip64 + padding)
        self.records.append((encoded, offset, 0, 0))

    def _end(self, name: str, size: int, crc: int) -> None:
        self.out.write(struct.pack("<IIQQ", 0x08074B50, crc, size, size))  # the zip64 data descriptor
        encoded, offset, _, _ = self.records[-1]
        self.records[-1] = (encoded, offset, size, crc)

    def finish(self) -> None:
        """The central directory, the zip64 end records, and the end record."""
        start = self.out.tell()
        for encoded, offset, size, crc in self.records:
            extra = struct.pack("<HHQQQ", 1, 24, size, size, offset)
            self.out.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, _ZIP64_VERSION, _ZIP64_VERSION,
                                       _UTF8_AND_DESCRIPTOR, 0, 0, 0x21, crc, _FULL, _FULL, len(encoded), len(extra),
                                       0, 0, 0, 0, _FULL))
            self.out.write(encoded + extra)
        end = self.out.tell()
        count = len(self.records)
        self.out.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, _ZIP64_VERSION, _ZIP64_VERSION, 0, 0, count, count,
                                   end - start, start))
        self.out.write(struct.pack("<IIQI", 0x07064B50, 0, end, 1))
        self.out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF), _FULL,
                                   _FULL, 0))


def _crc32_of_range(data: RawBytes) -> int:
    crc = 0
    with open(data.path, "rb", buffering=0) as src:
        src.seek(data.start)
        left = data.nbytes
        buffer = bytearray(min(_CRC_CHUNK, max(left, 1)))
        while left:
            got = src.readinto(memoryview(buffer)[: min(left, len(buffer))])
            if not got:
                break  # a source that ended early: the copy beside this reports it
            crc = zlib.crc32(memoryview(buffer)[:got], crc)
            left -= got
    return crc
