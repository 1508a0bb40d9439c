"""Provenance: what every output records about where it came from and what was done."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from .. import __version__
from ..errors import AbswinError
from ..maths.grid import format_size, parse_size
from ..maths.resize import Size
from .hash_cache import cached_sha256, remember_sha256

PREFIX = "abswin."
SOURCE_SHA256 = PREFIX + "source_sha256"
NO_GLOBAL_PART = "none"  # global_size of a recipe whose global part is zero (ViTDet's tiling)
ONE_WINDOW = "undefined (one window)"  # window_energy where the window covers the whole grid


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


@dataclass(frozen=True)
class Conversion:
    """What a conversion did: the family read, the target written, the sizes and how well the global part fits."""

    family: str
    spelling: str  # how the source names its tensors within its family (``official``, ``timm``, ...): on disk ``format``
    target: str
    position_key: str
    native_input: Size
    window: Size
    global_size: Size | None  # None: no global part (``none`` on disk)
    resize: str
    residual: float
    window_energy: float | None  # None where undefined: the window covers the whole grid

    def entries(self) -> dict[str, str]:
        return {
            "family": self.family,
            "format": self.spelling,
            "target": self.target,
            "position_key": self.position_key,
            "native_input": format_size(self.native_input),
            "window": format_size(self.window),
            "global_size": NO_GLOBAL_PART if self.global_size is None else format_size(self.global_size),
            "resize": self.resize,
            "residual": f"{self.residual:.6g}",
            "window_energy": ONE_WINDOW if self.window_energy is None else f"{self.window_energy:.6g}",
        }

    @classmethod
    def from_entries(cls, entries: Mapping[str, str], where: str) -> Conversion:
        try:
            return cls(
                family=entries["family"],
                spelling=entries["format"],
                target=entries["target"],
                position_key=entries["position_key"],
                native_input=parse_size(entries["native_input"]),
                window=parse_size(entries["window"]),
                global_size=None if entries["global_size"] == NO_GLOBAL_PART else parse_size(entries["global_size"]),
                resize=entries["resize"],
                residual=float(entries["residual"]),
                window_energy=None if entries["window_energy"] == ONE_WINDOW else float(entries["window_energy"]),
            )
        except (KeyError, ValueError, AbswinError) as exc:
            raise AbswinError(f"{where}: its abswin provenance is incomplete or damaged ({exc}); convert it again") from exc


_RECORDS = ("conversion", "window_change", "also_rewritten", "others")  # fields written as entries of their own
_CONVERSION_KEYS = ("family", "format", "target", "position_key", "native_input", "window", "global_size", "resize",
                    "residual", "window_energy")


NOT_APPLIED = "none"  # a --window-size option that did not apply: on disk ``none (why)``


@dataclass(frozen=True)
class WindowChangeRecord:
    """A ``--window-size`` change (``families/window_change.py``): the new window as the user spelled it (``16``,
    ``16x16``, a SAM2 spec ``8,4,16,8``), the two options as recorded (``none (why)`` where one did not apply), the
    measured change of the encoder's output at the native size (a number, or why there is none)."""

    window_size: str
    relpos_resize: str
    window_part: str
    changes_output: str
    effect: str | None = None

    def entries(self) -> dict[str, str]:
        text = {"window_size": self.window_size, "relpos_resize": self.relpos_resize, "window_part": self.window_part,
                "changes_output": self.changes_output}
        return text if self.effect is None else {**text, "window_change_effect": self.effect}

    def option(self, name: str) -> str | None:
        """``relpos_resize`` or ``window_part`` as the flag took it; None where it did not apply."""
        value = getattr(self, name)
        return None if value.startswith(NOT_APPLIED) else value

    @classmethod
    def from_entries(cls, entries: Mapping[str, str], where: str) -> WindowChangeRecord:
        try:
            return cls(entries["window_size"], entries["relpos_resize"], entries["window_part"],
                       entries["changes_output"], entries.get("window_change_effect"))
        except KeyError as exc:
            raise AbswinError(f"{where}: its abswin provenance is incomplete or damaged ({exc}); convert it again") from exc


_WINDOW_CHANGE_KEYS = ("window_size", "relpos_resize", "window_part", "changes_output", "window_change_effect")


@dataclass(frozen=True)
class Provenance:
    """The ``abswin.*`` record of an output: where it came from and what was done. Written and read here only;
    on disk every value is text (safetensors ``__metadata__``, or a ``.pt`` output's sidecar), in here sizes are
    sizes and numbers are numbers. ``others`` keeps entries without a field of their own (``finetune.*``)."""

    version: str
    source: str  # a Hub repo id, or a local file's name
    source_file: str | None = None
    source_sha256: str | None = None
    source_revision: str | None = None
    source_commit: str | None = None  # set for Hub sources only
    source_license: str | None = None
    img_size: Size | None = None
    conversion: Conversion | None = None  # None: not a conversion (a finetune's output)
    layout: str | None = None  # what the user said of a generic family's tensor
    recipe: str | None = None
    state_dict: str | None = None  # which state dict of a training checkpoint a safetensors output holds
    zoo_options: str | None = None
    window_change: WindowChangeRecord | None = None  # --window-size: the output computes something else at its size
    also_rewritten: tuple[str, ...] = ()  # tensors rewritten beside the embedding (relative-position tables, ...)
    others: Mapping[str, str] = field(default_factory=dict)

    @property
    def from_hub(self) -> bool:
        return self.source_commit is not None

    def entries(self) -> dict[str, str]:
        """The record as text, without the prefix."""
        text: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _RECORDS or value is None:
                continue
            text[f.name] = format_size(value) if f.name == "img_size" else value
        if self.also_rewritten:
            text["also_rewritten"] = ", ".join(self.also_rewritten)
        records = (self.conversion, self.window_change)
        return {**text, **{k: v for r in records if r is not None for k, v in r.entries().items()}, **self.others}

    def metadata(self) -> dict[str, str]:
        """safetensors ``__metadata__``: ``format=pt`` (transformers expects it) plus the ``abswin.*`` entries."""
        return {"format": "pt", **{PREFIX + k: v for k, v in self.entries().items()}}

    @classmethod
    def from_entries(cls, entries: Mapping[str, str], where: str = "output") -> Provenance:
        own = {f.name for f in fields(cls)} - set(_RECORDS) - {"img_size"}
        known = {k: v for k, v in entries.items() if k in own}
        img_size = entries.get("img_size")
        conversion = Conversion.from_entries(entries, where) if "family" in entries else None
        changed = WindowChangeRecord.from_entries(entries, where) if "window_size" in entries else None
        also = tuple(name for name in entries.get("also_rewritten", "").split(", ") if name)
        try:
            size = parse_size(img_size) if img_size is not None else None
        except AbswinError as exc:
            raise AbswinError(f"{where}: its abswin.img_size {img_size!r} is not a size; convert it again") from exc
        typed = {*own, *_CONVERSION_KEYS, *_WINDOW_CHANGE_KEYS, "img_size", "also_rewritten"}
        rest = {k: v for k, v in entries.items() if k not in typed}
        return cls(**{"version": "", "source": "", **known}, img_size=size, conversion=conversion,
                   window_change=changed, also_rewritten=also, others=rest)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], where: str = "output") -> Provenance | None:
        """The record in a file's metadata; None when it holds no ``abswin.*`` entries."""
        entries = {k[len(PREFIX):]: v for k, v in metadata.items() if k.startswith(PREFIX)}
        return cls.from_entries(entries, where) if entries else None


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
    return Provenance.from_entries(entries).metadata()
