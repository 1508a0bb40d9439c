"""Write a state dict as ``torch.save`` does (its zip format), without torch: ``torch.load`` reads it as its own.

The archive holds ``data.pkl`` (the dict, each tensor a ``_rebuild_tensor_v2`` of a storage, protocol 2 as torch
writes it), one ``data/N`` record per tensor, and torch's small version records. Records are stored uncompressed,
their data aligned to 64 bytes as torch aligns them (``torch.load(mmap=True)`` maps them in place), with zip64
sizes and a data descriptor after each record, as torch writes them: a tensor taken unchanged from the source is
copied inside the kernel while its CRC-32 is computed beside the copy, and nothing has to be patched afterwards.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .dtypes import TORCH_NAMES
from .torch_zip import STORAGE_DTYPES
from .writer import OutputTensor, RawBytes, atomic_file, copy_range, start_writeback

ARCHIVE = "archive"  # the folder torch.save uses for a file object
ALIGNMENT = 64
_CRC_CHUNK = 8 << 20
_STORAGE_CLASSES = {dtype: name for name, dtype in STORAGE_DTYPES.items()}
_UTF8_AND_DESCRIPTOR = 0x0808  # general purpose flags: names in UTF-8, sizes and CRC after the data
_ZIP64_VERSION = 45
_FULL = 0xFFFFFFFF  # a 32-bit field whose value is in the zip64 extra field


def write_torch_zip(dest: Path, tensors: list[OutputTensor], wrapper: str | None = None,
                    progress: Callable[[int], object] | None = None) -> None:
    """Write ``{name: tensor}`` (inside ``{wrapper: ...}`` when given) at ``dest`` as ``torch.save`` would, in the
    given order, atomically; ``progress(n)`` is called with each tensor's byte count once written."""
    with atomic_file(dest) as out:
        _write_archive(_ZipWriter(out), tensors, wrapper, progress)


def _write_archive(archive: _ZipWriter, tensors: list[OutputTensor], wrapper: str | None,
                   progress: Callable[[int], object] | None) -> None:
    archive.add_bytes(f"{ARCHIVE}/data.pkl", state_dict_pickle(tensors, wrapper))
    archive.add_bytes(f"{ARCHIVE}/.format_version", b"1")
    archive.add_bytes(f"{ARCHIVE}/.storage_alignment", str(ALIGNMENT).encode())
    archive.add_bytes(f"{ARCHIVE}/byteorder", b"little")
    with ThreadPoolExecutor(1, thread_name_prefix="crc32") as crc_thread:
        for index, tensor in enumerate(tensors):
            archive.add_tensor(f"{ARCHIVE}/data/{index}", tensor.data, crc_thread)
            if progress is not None:
                progress(tensor.nbytes)
    archive.add_bytes(f"{ARCHIVE}/version", b"3\n")
    archive.finish()


# ---- data.pkl -------------------------------------------------------------------------------------------------


def state_dict_pickle(tensors: list[OutputTensor], wrapper: str | None = None) -> bytes:
    """The pickle of the state dict, tensor ``i`` on storage ``"i"``, opcode for opcode as torch's pickler writes
    it (protocol 2, no memo): ``GLOBAL`` names, which are all ``torch.load(weights_only=True)`` accepts."""
    items = b"".join(_text(t.name) + _tensor(str(i), t) for i, t in enumerate(tensors))
    state = b"}(" + items + b"u" if tensors else b"}"  # EMPTY_DICT, MARK, key value ..., SETITEMS
    if wrapper is not None:
        state = b"}" + _text(wrapper) + state + b"s"  # EMPTY_DICT, key, value, SETITEM
    return b"\x80\x02" + state + b"."


def _tensor(key: str, tensor: OutputTensor) -> bytes:
    shape = tensor.shape
    strides = [int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape))]
    numel = int(np.prod(shape, dtype=np.int64))
    storage_class = _STORAGE_CLASSES.get(tensor.dtype)
    if storage_class is not None:
        storage, rebuild, dtype = _global("torch", storage_class), "_rebuild_tensor_v2", b""
    else:  # float8 and other dtypes without a storage class: bytes plus the dtype, as torch saves them
        storage, rebuild = _global("torch.storage", "UntypedStorage"), "_rebuild_tensor_v3"
        numel, dtype = tensor.nbytes, _global("torch", TORCH_NAMES[tensor.dtype])
    persistent_id = b"(" + _text("storage") + storage + _text(key) + _text("cpu") + _int(numel) + b"tQ"
    hooks = _global("collections", "OrderedDict") + b")R"  # OrderedDict(): no backward hooks
    args = persistent_id + _int(0) + _ints(shape) + _ints(strides) + b"\x89" + hooks + dtype  # offset 0, no grad
    return _global("torch._utils", rebuild) + b"(" + args + b"tR"


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data  # LONG1


def _ints(values: tuple[int, ...] | list[int]) -> bytes:
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

    def add_tensor(self, name: str, data: RawBytes | np.ndarray, crc_thread: ThreadPoolExecutor) -> None:
        """A tensor's bytes: copied from the source file (its CRC-32 read beside the copy) or from memory."""
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
