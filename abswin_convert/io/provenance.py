"""Provenance: what every output records about where it came from and what was done."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from .. import __version__
from ..errors import AbswinError

PREFIX = "abswin."
SOURCE_SHA256 = PREFIX + "source_sha256"


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class SourceDigest:
    """The sha256 of a file, hashed in a background thread so that it overlaps the copy instead of preceding it.

    hashlib and file reads release the GIL, so on two cores hashing a 2.5 GB checkpoint costs almost no wall time.
    ``PLACEHOLDER`` is as long as a hex digest: a header can be written before the digest is known, then patched.
    With ``expected`` (a digest the file's source gave, e.g. the Hub's LFS metadata), the hash checks the file.
    """

    PLACEHOLDER = "pending-sha256-" + "0" * 49

    def __init__(self, path: Path, expected: str | None = None) -> None:
        self.path = path
        self.expected = expected
        self._digest: str | None = None
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name=f"sha256 {path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._digest = sha256_of(self.path)
        except OSError as exc:
            self._error = exc

    def hexdigest(self) -> str:
        """Wait for the hash; an unreadable source is the user's error."""
        self._thread.join()
        if self._error is not None or self._digest is None:
            reason = self._error.strerror if self._error else "unknown error"
            raise AbswinError(f"{self.path.name}: cannot read it to hash it ({reason})")
        if self.expected is not None and self._digest != self.expected:
            raise AbswinError(
                f"{self.path}: its sha256 is {self._digest}, its source says {self.expected}; the file changed "
                "after it was fetched: delete it (from the Hugging Face cache) and run again"
            )
        return self._digest


def output_metadata(
    source: str,
    source_path: Path | None,
    stats: dict[str, str],
    extra: dict[str, str] | None = None,
    source_sha256: str | None = None,
) -> dict[str, str]:
    """safetensors ``__metadata__``: ``format=pt`` (transformers expects it) plus ``abswin.*`` entries.

    ``source_sha256`` (a digest already known, e.g. from the Hub) is recorded as given; else ``source_path`` is
    hashed. Neither leaves it out: the safetensors writer adds it, hashing alongside the copy.
    """
    if source_sha256 is None and source_path is not None:
        source_sha256 = sha256_of(source_path)
    digest = {"source_sha256": source_sha256} if source_sha256 is not None else {}
    entries = {"version": __version__, "source": source, **digest, **stats, **(extra or {})}
    return {"format": "pt", **{PREFIX + k: v for k, v in entries.items()}}


def read_provenance(metadata: dict[str, str]) -> dict[str, str]:
    """The ``abswin.*`` entries of a file's metadata, without the prefix."""
    return {k[len(PREFIX):]: v for k, v in metadata.items() if k.startswith(PREFIX)}
