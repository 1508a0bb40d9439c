"""Parse and check a safetensors header without trusting it.

We read the header ourselves (rather than through ``safe_open``) because the writer copies untouched tensors
as raw byte ranges, and because a header that lies must be refused with a clear message, not a crash.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import AbswinError

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file: dtype, shape and its absolute byte range in the file."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def read_header(path: Path) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """Entries and ``__metadata__`` of a safetensors file, every offset checked against the file."""
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise AbswinError(f"{path.name}: too short to be a safetensors file ({file_size} bytes)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(MAX_HEADER_BYTES, file_size - 8):
            raise AbswinError(
                f"{path.name}: the safetensors header claims {header_len} bytes but only {file_size - 8} follow its "
                "length; the file is truncated or not safetensors"
            )
        raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise AbswinError(f"{path.name}: the safetensors header names {exc.args[0]!r} twice; the file is corrupt") from exc
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise AbswinError(f"{path.name}: the safetensors header is not valid JSON ({exc.__class__.__name__})") from exc
    if not isinstance(header, dict):
        raise AbswinError(f"{path.name}: the safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise AbswinError(f"{path.name}: safetensors __metadata__ must map strings to strings")
    data_start = 8 + header_len
    entries = {name: _entry(path.name, name, spec, data_start) for name, spec in header.items()}
    _check_layout(path.name, entries, file_size - data_start, data_start)
    return entries, metadata


def _entry(file_name: str, name: str, spec: object, data_start: int) -> TensorEntry:
    try:
        dtype = DTYPES[spec["dtype"]]  # type: ignore[index]
        shape = tuple(_whole(d) for d in spec["shape"])  # type: ignore[index]
        begin, end = (_whole(o) for o in spec["data_offsets"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError) as exc:
        raise AbswinError(f"{file_name}: header entry {name!r} is malformed or has an unknown dtype") from exc
    if min(shape, default=0) < 0 or begin < 0 or end < begin:
        raise AbswinError(f"{file_name}: header entry {name!r} has negative sizes or offsets")
    expected = dtype.itemsize
    for d in shape:
        expected *= d
    if end - begin != expected:
        raise AbswinError(
            f"{file_name}: tensor {name!r} {list(shape)} {spec['dtype']} needs {expected} bytes, "  # type: ignore[index]
            f"the header gives {end - begin}"
        )
    return TensorEntry(dtype, shape, data_start + begin, data_start + end)


def _whole(value: object) -> int:
    """A JSON integer; floats, strings and booleans are not sizes."""
    if type(value) is not int:
        raise TypeError(value)
    return value


def _check_layout(file_name: str, entries: dict[str, TensorEntry], data_size: int, data_start: int) -> None:
    """Tensors must tile the data section exactly: no overlap, no gap, nothing past the end."""
    position = data_start
    for entry in sorted(entries.values(), key=lambda e: (e.start, e.end)):
        if entry.start != position:
            raise AbswinError(f"{file_name}: safetensors header offsets overlap or leave gaps; the file is corrupt")
        position = entry.end
    if position != data_start + data_size:
        raise AbswinError(
            f"{file_name}: the header describes {position - data_start} data bytes but the file holds {data_size}; "
            "the file is truncated or corrupt"
        )


def read_tensor(path: Path, entry: TensorEntry) -> torch.Tensor:
    """Read one tensor's bytes and view them with its dtype and shape."""
    with open(path, "rb") as f:
        f.seek(entry.start)
        data = bytearray(f.read(entry.nbytes))
    if len(data) != entry.nbytes:
        raise AbswinError(f"{path.name}: file ended while reading a tensor; it is truncated")
    if entry.nbytes == 0:
        return torch.empty(entry.shape, dtype=entry.dtype)
    return torch.frombuffer(data, dtype=entry.dtype).reshape(entry.shape)
