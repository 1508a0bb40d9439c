"""Write outputs safely: a temp file in the destination folder, fsync, rename. Nothing is left half-written.

The safetensors writer streams: the header is computed from shapes alone, then each tensor is written in turn;
a tensor the plan does not touch is copied from the source file as raw bytes, never decoded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from .errors import AbswinError
from .safetensors_header import DTYPE_NAMES

TEMP_MARK = ".abswin-tmp-"
_COPY_CHUNK = 16 * 1024 * 1024


@dataclass(frozen=True)
class RawBytes:
    """A byte range of an existing file, copied verbatim."""

    path: Path
    start: int
    nbytes: int


@dataclass(frozen=True)
class OutputTensor:
    """One tensor of the output: its name, dtype, shape and where its bytes come from."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    data: RawBytes | torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.data.nbytes if isinstance(self.data, RawBytes) else self.data.numel() * self.data.element_size()


def check_destination(dest: Path, inputs: list[Path], force: bool) -> None:
    """Refuse to write onto an input, or over an existing file without ``force``."""
    for source in inputs:
        if dest.exists() and source.exists() and os.path.samefile(dest, source) or dest.resolve() == source.resolve():
            raise AbswinError(f"output {dest} is the input file; choose another output path")
    if dest.exists() and not force:
        raise AbswinError(f"output {dest} already exists; pass --force to overwrite it")
    if dest.exists() and dest.is_dir():
        raise AbswinError(f"output {dest} is a folder; give a file name")


def remove_stale_temps(dest: Path) -> list[Path]:
    """Delete temp files left next to ``dest`` by a run that was killed (their writer pid is gone)."""
    removed = []
    folder = dest.parent if dest.parent.exists() else None
    if folder is None:
        return removed
    for candidate in folder.glob(f".{dest.name}{TEMP_MARK}*"):
        pid = candidate.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_file(dest: Path) -> Iterator[BinaryIO]:
    """Yield a temp file beside ``dest``; on success fsync and rename it over ``dest``, else delete it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest)
    temp = dest.parent / f".{dest.name}{TEMP_MARK}{os.getpid()}"
    try:
        with open(temp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, dest)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_folder(dest.parent)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def safetensors_header(tensors: list[OutputTensor], metadata: dict[str, str]) -> bytes:
    """The length-prefixed JSON header, padded with spaces to 8 bytes as the reference writer does."""
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    for t in tensors:
        header[t.name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-(8 + len(body)) % 8)
    return struct.pack("<Q", len(body)) + body


def write_safetensors(dest: Path, tensors: list[OutputTensor], metadata: dict[str, str]) -> None:
    """Stream ``tensors`` (in the given order) into a safetensors file at ``dest``, atomically."""
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise AbswinError("the conversion would write a key twice; this is a bug, please report it")
    with atomic_file(dest) as out:
        out.write(safetensors_header(tensors, metadata))
        for t in tensors:
            _write_tensor(out, t.data)


def _write_tensor(out: BinaryIO, data: RawBytes | torch.Tensor) -> None:
    if isinstance(data, RawBytes):
        with open(data.path, "rb") as src:
            src.seek(data.start)
            remaining = data.nbytes
            while remaining:
                chunk = src.read(min(_COPY_CHUNK, remaining))
                if not chunk:
                    raise AbswinError(f"{data.path.name} ended while copying; the input is truncated")
                out.write(chunk)
                remaining -= len(chunk)
        return
    flat = data.detach().contiguous().reshape(-1)
    if flat.numel():
        out.write(memoryview(flat.view(torch.uint8).numpy()))


def write_torch(dest: Path, obj: object) -> None:
    """``torch.save`` through the same temp-file-and-rename path."""
    with atomic_file(dest) as out:
        torch.save(obj, out)


def copy_file(source: Path, dest: Path) -> None:
    """Copy a small side file (config.json) atomically."""
    with atomic_file(dest) as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out)
