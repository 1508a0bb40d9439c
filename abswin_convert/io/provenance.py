"""Provenance: what every output records about where it came from and what was done."""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

from .. import __version__
from ..errors import AbswinError
from .hash_cache import cached_sha256, remember_sha256

PREFIX = "abswin."
SOURCE_SHA256 = PREFIX + "source_sha256"


def sha256_of(path: Path) -> str:
    """A file's sha256: from the hash cache while the file is unchanged since it was hashed, else computed."""
    known = cached_sha256(path)
    if known is not None:
        return known
    stat = path.stat()
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    remember_sha256(path, digest, stat)
    return digest


class SourceDigest:
    """The sha256 of a file, hashed in a background thread so that it overlaps the plan and the copy instead of
    preceding them (hashlib and file reads release the GIL); a file hashed before comes from the hash cache.
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

    def ready(self) -> bool:
        """Whether the hash is done (``hexdigest`` will not wait)."""
        return not self._thread.is_alive()

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


def public_name(location: str | Path) -> str:
    """A local file or folder by its own name, not by where it sat on this disk (``/home/me/ckpts/x.pth`` -> ``x.pth``):
    outputs are shared and uploaded, and the name with the sha256 identifies the source; a data set spec
    ``kind:PATH`` keeps its kind (``imagefolder:/data/pets`` -> ``imagefolder:pets``)."""
    text = str(location)
    kind, sep, path = text.partition(":")
    if sep and re.fullmatch(r"[a-z][a-z0-9_-]+", kind):  # a spec (not a Windows drive letter)
        return f"{kind}:{public_name(path)}" if path else text
    return Path(text.rstrip("/\\")).name or text


def output_metadata(
    source: str | Path,
    source_file: Path,
    stats: dict[str, str],
    extra: dict[str, str] | None = None,
    *,
    hash_now: bool = True,
) -> dict[str, str]:
    """safetensors ``__metadata__``: ``format=pt`` (transformers expects it) plus ``abswin.*`` entries.

    The source is recorded by name (``source``, ``source_file``) and sha256, never by its local path; ``extra``
    (a Hub source's repo and commit, the zoo's options) comes last. ``hash_now=True`` hashes ``source_file`` now;
    ``False`` leaves the sha256 out, for a writer that adds it from a ``SourceDigest`` hashing beside its copy.
    """
    digest = {"source_sha256": sha256_of(source_file)} if hash_now else {}
    named = {"source": public_name(source), "source_file": source_file.name}
    entries = {"version": __version__, **named, **digest, **stats, **(extra or {})}
    return {"format": "pt", **{PREFIX + k: v for k, v in entries.items()}}


def read_provenance(metadata: dict[str, str]) -> dict[str, str]:
    """The ``abswin.*`` entries of a file's metadata, without the prefix."""
    return {k[len(PREFIX):]: v for k, v in metadata.items() if k.startswith(PREFIX)}
