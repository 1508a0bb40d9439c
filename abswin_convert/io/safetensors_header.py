"""Parse and check a safetensors header without trusting it.

We read the header ourselves (rather than through ``safe_open``) because the writer copies untouched tensors
as raw byte ranges, and because a header that lies must be refused with a clear message, not a crash.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from ..errors import AbswinError
from .dtypes import MAX_SIZE, RAW_DTYPES
from .tensors import FileTensor

MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit: a longer header is no safetensors file


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    found = dict(pairs)
    if len(found) != len(pairs):  # rare: find which key, the slow way
        raise _DuplicateKey(next(k for i, (k, _) in enumerate(pairs) if any(k == other for other, _ in pairs[:i])))
    return found


def read_header(path: Path, tensors: bool = True) -> tuple[dict[str, FileTensor], dict[str, str]]:
    """Entries and ``__metadata__`` of a safetensors file, every offset checked against the file; with
    ``tensors=False`` the metadata alone (no entries, their offsets unchecked), for reading an output's provenance."""
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise AbswinError(f"{path.name}: too short to be a safetensors file ({file_size} bytes)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > MAX_HEADER_BYTES:
            raise AbswinError(f"{path.name}: the safetensors header claims {header_len:,} bytes, over safetensors' own "
                              f"limit of {MAX_HEADER_BYTES:,}; not a safetensors file")
        if header_len > file_size - 8:
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
    if not tensors:
        return {}, metadata
    data_start = 8 + header_len
    entries = {name: _entry(path, name, spec, data_start) for name, spec in header.items()}
    _check_layout(path.name, entries, file_size - data_start, data_start)
    return entries, metadata


def _entry(path: Path, name: str, spec: object, data_start: int) -> FileTensor:
    file_name = path.name
    try:
        dtype = spec["dtype"]  # type: ignore[index]
        expected = RAW_DTYPES[dtype].itemsize
        shape = tuple(_whole(d) for d in spec["shape"])  # type: ignore[index]
        begin, end = (_whole(o) for o in spec["data_offsets"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError) as exc:
        raise AbswinError(f"{file_name}: header entry {name!r} is malformed or has an unknown dtype") from exc
    if min(shape, default=0) < 0 or begin < 0 or end < begin:
        raise AbswinError(f"{file_name}: header entry {name!r} has negative sizes or offsets")
    if max(shape, default=0) > MAX_SIZE:
        raise AbswinError(f"{file_name}: header entry {name!r} has a dimension over 2**63 - 1; the file is corrupt")
    for d in shape:
        expected *= d
    if end - begin != expected:
        raise AbswinError(
            f"{file_name}: tensor {name!r} {list(shape)} {spec['dtype']} needs {expected} bytes, "  # type: ignore[index]
            f"the header gives {end - begin}"
        )
    return FileTensor(path, dtype, shape, data_start + begin, data_start + end)


def _whole(value: object) -> int:
    """A JSON integer; floats, strings and booleans are not sizes."""
    if type(value) is not int:
        raise TypeError(value)
    return value


def _check_layout(file_name: str, entries: dict[str, FileTensor], data_size: int, data_start: int) -> None:
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
