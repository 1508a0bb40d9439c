"""Write a safetensors file, the pair of ``safetensors_reader.py`` (the file's safety: ``files.atomic_file``).

The writer streams: the header is computed from shapes alone, then each tensor is written in turn;
a tensor the plan does not touch is copied from the source file as raw bytes, never decoded, inside the kernel
(``copy_file_range``) where it can. The source's sha256 is hashed in a thread alongside the copy and patched into
the header (its placeholder has the same length). Finished parts are handed to the disk while the rest is copied,
so that the closing fsync has less left to wait for.
"""

from __future__ import annotations

import errno
import json
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import AbswinError
from .dtypes import RAW_DTYPES
from .files import atomic_file
from .provenance import SOURCE_SHA256, SourceDigest

_COPY_CHUNK = 64 * 1024 * 1024
_WRITEBACK_STEP = 32 * 1024 * 1024
# copy_file_range refuses some pairs of files (other file systems, old kernels, sandboxes): copy through a buffer.
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EPERM}


@dataclass(frozen=True, slots=True)  # slots: an output may hold two million of these
class RawBytes:
    """A byte range of an existing file, copied verbatim."""

    path: Path
    start: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class OutputTensor:
    """One tensor of the output: its name, dtype, shape and where its bytes come from."""

    name: str
    dtype: str  # safetensors name
    shape: tuple[int, ...]
    data: RawBytes | np.ndarray  # a byte range of the source, or raw elements in memory

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


def safetensors_header(tensors: list[OutputTensor], metadata: dict[str, str]) -> bytes:
    """The length-prefixed JSON header, padded with spaces to 8 bytes as the reference writer does.

    The text is what ``json.dumps`` gives for the header as a dict (compact separators, ASCII), written one entry
    at a time: a dict of dicts for two million tensors would take ten times the header's size."""
    pieces = [b'{"__metadata__":' + json.dumps(dict(sorted(metadata.items())), separators=(",", ":")).encode()]
    offset = 0
    for t in tensors:
        if t.dtype not in RAW_DTYPES:
            raise AbswinError(f"tensor {t.name!r} has dtype {t.dtype}, which safetensors cannot hold; use --format pt")
        shape = ",".join(map(str, t.shape))
        end = offset + t.nbytes
        pieces.append(f',{encode_basestring_ascii(t.name)}:{{"dtype":"{t.dtype}","shape":[{shape}],'
                      f'"data_offsets":[{offset},{end}]}}'.encode())
        offset = end
    length = sum(map(len, pieces)) + 1
    padded = length + -(8 + length) % 8
    return b"".join([struct.pack("<Q", padded), *pieces, b"}", b" " * (padded - length)])


def write_safetensors(
    dest: Path,
    tensors: list[OutputTensor],
    metadata: dict[str, str],
    digest: SourceDigest | None = None,
    progress: Callable[[int], object] | None = None,
) -> None:
    """Stream ``tensors`` (in the given order) into a safetensors file at ``dest``, atomically.

    With a ``digest`` (the source's sha256, being hashed in its thread), the hash is recorded as
    ``abswin.source_sha256`` in the header and in ``metadata`` (updated in place): written with the header when the
    hash is done (or came from the hash cache), else patched into it once the data is written; a digest
    that checks the source against an expected value fails the write on a mismatch (AbswinError, nothing written).
    ``progress(n)`` is called with each tensor's byte count once written.
    """
    if len({t.name for t in tensors}) != len(tensors):
        raise AbswinError("the conversion would write a key twice; this is a bug, please report it")
    pending = digest is not None and not digest.ready()  # a hash still running is patched in at the end
    if digest is not None:
        metadata[SOURCE_SHA256] = digest.PLACEHOLDER if pending else digest.hexdigest()
    header = safetensors_header(tensors, metadata)
    with atomic_file(dest) as out:
        out.write(header)
        handed_over = 0
        for data in _coalesced(t.data for t in tensors):
            _write_tensor(out, data)
            handed_over = start_writeback(out, handed_over)
            if progress is not None:
                progress(data.nbytes)
        if digest is not None and pending:
            if not digest.ready():  # the data goes to the disk while the hash finishes, not after it
                out.flush()
                os.fdatasync(out.fileno())
            metadata[SOURCE_SHA256] = digest.hexdigest()
            _patch_header(out, header, SOURCE_SHA256, digest.PLACEHOLDER, metadata[SOURCE_SHA256])


def _patch_header(out: BinaryIO, header: bytes, key: str, placeholder: str, value: str) -> None:
    """Overwrite a metadata placeholder in the written header with its final value of the same length."""
    entry = f"{json.dumps(key)}:{json.dumps(placeholder)}".encode()
    at = header.find(entry)
    if at < 0 or len(value) != len(placeholder) or header.find(entry, at + 1) >= 0:
        raise AbswinError(f"cannot place {key} in the safetensors header; this is a bug, please report it")
    end = out.tell()
    out.seek(at + len(entry) - len(placeholder) - 1)
    out.write(value.encode())
    out.seek(end)


def start_writeback(out: BinaryIO, handed_over: int) -> int:
    """Have the kernel start writing out what was written after ``handed_over``; the new mark.

    ``POSIX_FADV_DONTNEED`` starts the writeback of dirty pages without waiting for it (and drops pages already
    written). Many files in a row (a zoo) then overlap their copying with the disk instead of taking turns.
    """
    position = out.tell()
    if position - handed_over < _WRITEBACK_STEP or not hasattr(os, "posix_fadvise"):
        return handed_over
    out.flush()
    os.posix_fadvise(out.fileno(), handed_over, position - handed_over, os.POSIX_FADV_DONTNEED)
    return position


def _coalesced(pieces: Iterable[RawBytes | np.ndarray]) -> Iterator[RawBytes | np.ndarray]:
    """The pieces in order, with byte ranges that follow each other in one file joined (untouched tensors of a
    source usually do) up to ``_COPY_CHUNK``: one kernel copy for many small tensors."""
    run: RawBytes | None = None
    for piece in pieces:
        # ``is`` first: pieces of one source share its Path object, and pathlib's == costs a microsecond a piece
        if (isinstance(piece, RawBytes) and run is not None and (piece.path is run.path or piece.path == run.path)
                and piece.start == run.start + run.nbytes and run.nbytes + piece.nbytes <= _COPY_CHUNK):
            run = RawBytes(run.path, run.start, run.nbytes + piece.nbytes)
            continue
        if run is not None:
            yield run
        run = piece if isinstance(piece, RawBytes) else None
        if run is None:
            yield piece
    if run is not None:
        yield run


def _write_tensor(out: BinaryIO, data: RawBytes | np.ndarray) -> None:
    if isinstance(data, RawBytes):
        copy_range(out, data)
    elif data.size:
        out.write(np.ascontiguousarray(data).data)


def copy_range(out: BinaryIO, data: RawBytes) -> None:
    """Append a byte range of another file to ``out``, without passing the bytes through Python when possible."""
    out.flush()
    position = out.tell()
    with open(data.path, "rb") as src:
        done = 0
        while done < data.nbytes:
            count = min(_COPY_CHUNK, data.nbytes - done)
            copied = _copy_chunk(src.fileno(), out.fileno(), data.start + done, position + done, count)
            if not copied:
                raise AbswinError(f"{data.path.name} ended while copying; the input is truncated")
            done += copied
    out.seek(position + data.nbytes)


def _copy_chunk(src: int, dst: int, src_offset: int, dst_offset: int, count: int) -> int:
    """Copy up to ``count`` bytes between file offsets; the number copied, 0 at the end of ``src``."""
    if hasattr(os, "copy_file_range"):
        try:
            return os.copy_file_range(src, dst, count, src_offset, dst_offset)
        except OSError as exc:
            if exc.errno not in _NO_KERNEL_COPY:
                raise
    chunk = os.pread(src, count, src_offset)
    return os.pwrite(dst, chunk, dst_offset) if chunk else 0
