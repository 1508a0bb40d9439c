"""Read a safetensors file: parse and check its header without trusting it (the pair of ``safetensors_writer.py``).

We read the header ourselves (rather than through ``safe_open``) because the writer copies untouched tensors
as raw byte ranges, and because a header that lies must be refused with a clear message, not a crash.

The header is never parsed as one JSON document: ``json.loads`` would build a dict, two lists and a few ints per
tensor (17x the header's size in memory for the smallest entries), and whatever else a hostile header nests
(``[[],[],...]`` costs 20x). Runs of entries spelled as safetensors writes them are matched by one regular
expression and checked as columns (numpy); any other spelling of an entry goes through ``json`` on that entry's
text alone (a bounded slice), and through the same checks one by one. The tensors are kept in flat arrays
(``SafetensorsEntries``): memory stays within a few times the header's size (``scripts/bench_header.py``).
"""

from __future__ import annotations

import json
import math
import re
import struct
from array import array
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from ..errors import AbswinError
from .dtypes import MAX_SIZE, RAW_DTYPES
from .tensors import FileTensor

MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit: a longer header is no safetensors file
MAX_METADATA_ENTRIES = 65_536  # far past any writer's; a dict entry costs ~200 bytes however short its JSON
_MAX_ENTRY_CHARS = 4_096  # one tensor's {"dtype", "shape", "data_offsets"}: a 64-dimension shape takes ~1,300
_RUN_LENGTH = 4_096  # entries matched and checked together
_EXACT_FLOAT = 2**53  # a float64 product of whole numbers up to this size is exact

_DTYPE_NAMES = tuple(RAW_DTYPES)
_DTYPE_CODES = {name: code for code, name in enumerate(_DTYPE_NAMES)}
_ITEMSIZES = np.array([dtype.itemsize for dtype in RAW_DTYPES.values()], np.int64)
_WS = "[ \t\n\r]*"  # JSON's whitespace (``\s`` would also take Unicode spaces, which JSON refuses)
_SKIP_WS = re.compile(_WS)
_STRING = re.compile(r'"[^"\\\x00-\x1f]*(?:\\.[^"\\\x00-\x1f]*)*"')  # json.loads then checks the escapes
_INT = "(?:0|[1-9][0-9]*)"
# An entry as safetensors writes it (any JSON whitespace), and the comma after it: a name without escapes, then
# dtype, shape and offsets; the last entry (no comma) and every other spelling take the general path.
_CANONICAL_ENTRY = re.compile(
    rf'"([^"\\\x00-\x1f]*)"{_WS}:{_WS}\{{{_WS}"dtype"{_WS}:{_WS}"([A-Z0-9_]+)"{_WS},{_WS}"shape"{_WS}:{_WS}'
    rf'\[{_WS}((?:{_INT}{_WS}(?:,{_WS}{_INT}{_WS})*)?)\]{_WS},{_WS}"data_offsets"{_WS}:{_WS}'
    rf"\[{_WS}({_INT}){_WS},{_WS}({_INT}){_WS}\]{_WS}\}}{_WS},{_WS}"
)
_CANONICAL_RUN = re.compile(rf"(?:{_CANONICAL_ENTRY.pattern}){{1,{_RUN_LENGTH}}}+")


class _NotJson(ValueError):
    pass


class SafetensorsEntries(Mapping[str, FileTensor]):
    """The tensors of a safetensors file, in header order, kept as flat arrays: a ``FileTensor`` is made when asked
    for (a header near the 100 MB limit describes two million tensors)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._rows: dict[str, int] = {}
        self._dtypes = array("B")
        self._shape_ends = array("q")  # row i's dimensions are _dims[_shape_ends[i - 1]:_shape_ends[i]]
        self._dims = array("q")
        self._starts = array("q")  # absolute file offsets
        self._ends = array("q")

    def _add(self, name: str, dtype: str, shape: tuple[int, ...], start: int, end: int) -> None:
        self._rows[name] = len(self._rows)
        self._dtypes.append(_DTYPE_CODES[dtype])
        self._dims.extend(shape)
        self._shape_ends.append(len(self._dims))
        self._starts.append(start)
        self._ends.append(end)

    def _extend(self, names: tuple[str, ...], codes: np.ndarray, ndims: np.ndarray, dims: np.ndarray,
                starts: np.ndarray, ends: np.ndarray) -> None:
        first = len(self._rows)
        self._rows.update(zip(names, range(first, first + len(names))))
        self._dtypes.frombytes(codes.astype(np.uint8).tobytes())
        self._shape_ends.frombytes((len(self._dims) + np.cumsum(ndims)).astype(np.int64).tobytes())
        self._dims.frombytes(dims.astype(np.int64).tobytes())
        self._starts.frombytes(starts.astype(np.int64).tobytes())
        self._ends.frombytes(ends.astype(np.int64).tobytes())

    def holds_any(self, names: tuple[str, ...]) -> bool:
        return not self._rows.keys().isdisjoint(names)

    def __getitem__(self, name: str) -> FileTensor:
        row = self._rows[name]
        shape = tuple(self._dims[self._shape_ends[row - 1] if row else 0:self._shape_ends[row]])
        return FileTensor(self.path, _DTYPE_NAMES[self._dtypes[row]], shape, self._starts[row], self._ends[row])

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, name: object) -> bool:
        return name in self._rows

    def byte_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """Every tensor's start and end offsets, as int64 arrays (views of the stored ones)."""
        return np.frombuffer(self._starts, np.int64), np.frombuffer(self._ends, np.int64)


def read_header(path: Path, tensors: bool = True) -> tuple[SafetensorsEntries, dict[str, str]]:
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
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AbswinError(f"{path.name}: the safetensors header is not valid JSON ({exc.__class__.__name__})") from exc
    del raw
    entries = SafetensorsEntries(path)
    try:
        metadata = _parse(text, _Reader(path.name, entries, 8 + header_len, file_size, tensors))
    except (_NotJson, json.JSONDecodeError, RecursionError) as exc:
        raise AbswinError(f"{path.name}: the safetensors header is not valid JSON ({exc.__class__.__name__})") from exc
    if tensors:
        _check_layout(path.name, entries, 8 + header_len, file_size)
    return entries, metadata


class _Reader:
    """Checks each entry as it is parsed and files it into ``entries`` (or skips it when only metadata is wanted)."""

    def __init__(self, file_name: str, entries: SafetensorsEntries, data_start: int, file_size: int,
                 keep: bool) -> None:
        self.file_name = file_name
        self.entries = entries
        self.data_start = data_start
        self.data_size = file_size - data_start
        self.keep = keep

    def add(self, name: str, dtype: str, shape: tuple[int, ...], begin: int, end: int) -> None:
        if name == "__metadata__":
            raise AbswinError(f"{self.file_name}: safetensors __metadata__ must map strings to strings")
        if name in self.entries:
            raise AbswinError(f"{self.file_name}: the safetensors header names {name!r} twice; the file is corrupt")
        if not self.keep:
            return
        file_name = self.file_name
        if dtype not in _DTYPE_CODES:
            raise AbswinError(f"{file_name}: header entry {name!r} is malformed or has an unknown dtype")
        if min(shape, default=0) < 0 or begin < 0 or end < begin:
            raise AbswinError(f"{file_name}: header entry {name!r} has negative sizes or offsets")
        if max(shape, default=0) > MAX_SIZE:
            raise AbswinError(f"{file_name}: header entry {name!r} has a dimension over 2**63 - 1; the file is corrupt")
        expected = RAW_DTYPES[dtype].itemsize * math.prod(shape)
        if end - begin != expected:
            raise AbswinError(
                f"{file_name}: tensor {name!r} {list(shape)} {dtype} needs {expected} bytes, the header gives {end - begin}"
            )
        if end > self.data_size:
            raise AbswinError(
                f"{file_name}: the header describes {end} data bytes but the file holds {self.data_size}; "
                "the file is truncated or corrupt"
            )
        self.entries._add(name, dtype, shape, self.data_start + begin, self.data_start + end)

    def add_run(self, rows: list[tuple[str, str, str, str, str]]) -> None:
        """Canonical entries (name, dtype, shape and offsets as matched text), checked as columns; a run the
        columns cannot pass goes through ``add`` one entry at a time, which says what is wrong."""
        if not self.keep:
            return
        names, dtypes, shapes, begins, ends = zip(*rows)
        try:
            columns = self._checked_columns(names, dtypes, shapes, begins, ends)
        except OverflowError:  # a number past int64: the exact checks say which
            columns = None
        if columns is None:
            for name, dtype, shape, begin, end in rows:
                self.add(name, dtype, tuple(int(d) for d in shape.split(",")) if shape else (), int(begin), int(end))
            return
        self.entries._extend(names, *columns)

    def _checked_columns(self, names: tuple[str, ...], dtypes: tuple[str, ...], shapes: tuple[str, ...],
                         begins: tuple[str, ...], ends: tuple[str, ...]) -> tuple[np.ndarray, ...] | None:
        """codes, dimension counts, dimensions, start and end offsets of a run of entries that pass every check
        of ``add``; None when one does not (or the floats cannot decide)."""
        if "__metadata__" in names or len(set(names)) != len(names) or self.entries.holds_any(names):
            return None
        codes = np.array([_DTYPE_CODES.get(dtype, -1) for dtype in dtypes], np.int64)
        ndims = np.array([shape.count(",") + 1 if shape else 0 for shape in shapes], np.int64)
        dims = np.array(",".join(filter(None, shapes)).split(",") if ndims.any() else [], np.int64)
        begin, end = np.array(begins, np.int64), np.array(ends, np.int64)
        if codes.min() < 0 or np.any(end < begin) or end.max() > self.data_size:
            return None
        elements = np.ones(len(names))  # float64: exact up to 2**53, and a shape with a 0 dimension gives 0
        shaped = ndims > 0
        if shaped.any():
            elements[shaped] = np.multiply.reduceat(dims.astype(np.float64), (np.cumsum(ndims) - ndims)[shaped])
        if not np.all(elements <= _EXACT_FLOAT) or np.any(_ITEMSIZES[codes] * elements.astype(np.int64) != end - begin):
            return None
        return codes, ndims, dims, self.data_start + begin, self.data_start + end


def _parse(text: str, reader: _Reader) -> dict[str, str]:
    """Walk the header's top-level object, filing each tensor entry with ``reader``; the ``__metadata__``."""
    at = _after_ws(text, 0)
    if not text.startswith("{", at):  # never parsed: a hostile array would be built whole before it was refused
        raise AbswinError(f"{reader.file_name}: the safetensors header is not a JSON object")
    at = _after_ws(text, at + 1)
    metadata: dict[str, str] | None = None
    closing = text.startswith("}", at)
    while not closing:
        run = _CANONICAL_RUN.match(text, at)
        if run is not None:
            reader.add_run(_CANONICAL_ENTRY.findall(text, at, run.end()))
            at = run.end()
            continue
        name, at = _string(text, at)
        at = _expect(text, at, ":")
        if name == "__metadata__":
            if metadata is not None:
                raise AbswinError(f"{reader.file_name}: the safetensors header names '__metadata__' twice; "
                                  "the file is corrupt")
            metadata, at = _metadata(text, at, reader.file_name)
        else:
            spec, at = _bounded_object(text, at, reader.file_name, name)
            reader.add(name, *_spec_fields(reader.file_name, name, spec))
        at = _after_ws(text, at)
        closing = text.startswith("}", at)
        if not closing:
            at = _after_ws(text, _expect(text, at, ","))
    if _after_ws(text, at + 1) != len(text):
        raise _NotJson("extra data after the header's object")
    return metadata or {}


def _expect(text: str, at: int, char: str) -> int:
    """The position after ``char``, which must come next (after whitespace)."""
    at = _after_ws(text, at)
    if not text.startswith(char, at):
        raise _NotJson(f"expected {char!r} at {at}")
    return at + 1


def _string(text: str, at: int) -> tuple[str, int]:
    """The JSON string at ``at`` (after whitespace) and the position after it."""
    literal = _STRING.match(text, _after_ws(text, at))
    if literal is None:
        raise _NotJson(f"expected a string at {at}")
    return json.loads(literal[0]), literal.end()


def _after_ws(text: str, at: int) -> int:
    """The position of the first character at or after ``at`` that is not JSON whitespace."""
    blank = _SKIP_WS.match(text, at)
    assert blank is not None  # the pattern matches the empty string too
    return blank.end()


def _bounded_object(text: str, at: int, file_name: str, name: str) -> tuple[object, int]:
    """A tensor's description: a flat JSON object, parsed from its own text only (at most ``_MAX_ENTRY_CHARS``,
    up to its first ``}``: no safetensors writer nests objects or writes braces there)."""
    at = _after_ws(text, at)
    close = text.find("}", at, at + _MAX_ENTRY_CHARS) if text.startswith("{", at) else -1
    try:
        if close < 0:
            raise _NotJson(name)
        return json.loads(text[at:close + 1]), close + 1
    except (_NotJson, json.JSONDecodeError) as exc:
        raise AbswinError(f"{file_name}: header entry {name!r} is malformed or has an unknown dtype") from exc


def _spec_fields(file_name: str, name: str, spec: object) -> tuple[str, tuple[int, ...], int, int]:
    """dtype, shape and offsets of a tensor description read by ``json``."""
    try:
        if not isinstance(spec, dict):
            raise TypeError(spec)
        dtype = spec["dtype"]
        shape = tuple(_whole(d) for d in spec["shape"])
        begin, end = (_whole(o) for o in spec["data_offsets"])
        if not isinstance(dtype, str):
            raise TypeError(dtype)
    except (KeyError, TypeError, ValueError) as exc:
        raise AbswinError(f"{file_name}: header entry {name!r} is malformed or has an unknown dtype") from exc
    return dtype, shape, begin, end


def _metadata(text: str, at: int, file_name: str) -> tuple[dict[str, str], int]:
    """The ``__metadata__`` object: strings to strings, read one string at a time (no nested values are built)."""
    refused = AbswinError(f"{file_name}: safetensors __metadata__ must map strings to strings")
    at = _after_ws(text, at)
    if text.startswith("null", at):  # as an empty metadata
        return {}, at + 4
    if not text.startswith("{", at):
        raise refused
    metadata: dict[str, str] = {}
    at = _after_ws(text, at + 1)
    while not text.startswith("}", at):
        if metadata:
            at = _expect(text, at, ",")
        key, at = _string(text, at)
        at = _after_ws(text, _expect(text, at, ":"))
        if not text.startswith('"', at):
            raise refused
        value, at = _string(text, at)
        if key in metadata:
            raise AbswinError(f"{file_name}: the safetensors header names {key!r} twice; the file is corrupt")
        if len(metadata) == MAX_METADATA_ENTRIES:
            raise AbswinError(f"{file_name}: safetensors __metadata__ holds over {MAX_METADATA_ENTRIES:,} entries; "
                              "not a file this tool reads")
        metadata[key] = value
        at = _after_ws(text, at)
    return metadata, at + 1


def _whole(value: object) -> int:
    """A JSON integer; floats, strings and booleans are not sizes."""
    if type(value) is not int:
        raise TypeError(value)
    return value


def _check_layout(file_name: str, entries: SafetensorsEntries, data_start: int, file_size: int) -> None:
    """Tensors must tile the data section exactly: no overlap, no gap, nothing past the end."""
    starts, ends = entries.byte_ranges()
    order = np.lexsort((ends, starts))
    starts, ends = starts[order], ends[order]
    if len(starts) and (starts[0] != data_start or np.any(starts[1:] != ends[:-1])):
        raise AbswinError(f"{file_name}: safetensors header offsets overlap or leave gaps; the file is corrupt")
    position = int(ends[-1]) if len(ends) else data_start
    if position != file_size:
        raise AbswinError(
            f"{file_name}: the header describes {position - data_start} data bytes but the file holds "
            f"{file_size - data_start}; the file is truncated or corrupt"
        )
