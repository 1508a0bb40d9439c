"""Provenance: what every output records about where it came from and what was done."""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import __version__

PREFIX = "abswin."


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def output_metadata(source: str, source_path: Path, stats: dict[str, str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """safetensors ``__metadata__``: ``format=pt`` (transformers expects it) plus ``abswin.*`` entries."""
    entries = {"version": __version__, "source": source, "source_sha256": sha256_of(source_path), **stats, **(extra or {})}
    return {"format": "pt", **{PREFIX + k: v for k, v in entries.items()}}


def read_provenance(metadata: dict[str, str]) -> dict[str, str]:
    """The ``abswin.*`` entries of a file's metadata, without the prefix."""
    return {k[len(PREFIX):]: v for k, v in metadata.items() if k.startswith(PREFIX)}
