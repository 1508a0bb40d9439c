"""JSON files we read (config.json, provenance sidecars, hook results) and write (atomically)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import AbswinError
from .files import atomic_file


def read_json_object(path: Path) -> dict:
    """A JSON file holding one object, or a one-line error."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise AbswinError(f"{path}: cannot read it as JSON ({exc.__class__.__name__})") from exc
    if not isinstance(data, dict):
        raise AbswinError(f"{path}: holds no JSON object")
    return data


def write_json(dest: Path, data: object) -> None:
    """A JSON file (indented, keys sorted), through ``files.atomic_file`` (temp file, fsync, rename)."""
    with atomic_file(dest) as out:
        out.write((json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode())
