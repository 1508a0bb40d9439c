"""Safetensors files written byte by byte, for the header reader's tests and ``scripts/bench_header.py``.

    python -m tests.big_headers DEST COUNT    # writes the example with COUNT tensors more; prints the header's length
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parents[1] / "abswin_convert" / "examples" / "hiera_tiny" / "model.safetensors"


def write_safetensors_file(path: Path, header_text: str, data: bytes | int) -> Path:
    """A safetensors file of that header (padded as safetensors pads it) and ``data`` (or that many zero bytes)."""
    raw = header_text.encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + (bytes(data) if isinstance(data, int) else data))
    return path


def with_many_entries(dest: Path, count: int) -> int:
    """The shipped example with ``count`` zero-byte tensors more (spelled as safetensors writes them); the header's
    length in bytes."""
    data = EXAMPLE.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    body = data[8 + length:]
    extra = "".join(f',"extra.{i:x}":{{"dtype":"U8","shape":[0],"data_offsets":[{len(body)},{len(body)}]}}'
                    for i in range(count))
    text = json.dumps(json.loads(data[8:8 + length]), separators=(",", ":"))[:-1] + extra + "}"
    with open(write_safetensors_file(dest, text, body), "rb") as f:
        return struct.unpack("<Q", f.read(8))[0]


if __name__ == "__main__":
    print(with_many_entries(Path(sys.argv[1]), int(sys.argv[2])))
