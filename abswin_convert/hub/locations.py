"""What a source names, a local path or a file on the Hugging Face Hub, and opening it.

A source is written ``org/repo``, ``org/repo@revision``, ``hf://org/repo[@revision]/path/in/repo`` or
``hf://org/repo[@revision]``; the revision defaults to ``main``. An existing local path always wins over a Hub name.
The Hub client (``huggingface_hub``) is imported only when a Hub file is opened (``hub/sources.py``): a local
conversion does not pay for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from ..errors import AbswinError
from ..io.checkpoint import Checkpoint, open_checkpoint
from ..io.outputs import WEIGHT_SUFFIXES

DEFAULT_REVISION = "main"

_HF_PREFIX = "hf://"
_NAME_PART = r"[A-Za-z0-9_](?:[\w.-]*[A-Za-z0-9_])?"
_REPO_ID_RE = re.compile(rf"{_NAME_PART}/{_NAME_PART}", re.ASCII)
# The revision of an hf:// name ends at the next '/', except a pull-request ref, which contains two of them;
# any other revision with a '/' in it is written percent-encoded (feature%2Fx).
_HF_URI_RE = re.compile(r"(?P<repo_id>[^/@]+/[^/@]+)(?:@(?P<revision>refs/pr/\d+|[^/]+))?(?:/(?P<filename>.+))?")
_PR_REF_RE = re.compile(r"refs/pr/\d+")
_OTHER_REPO_TYPES = ("datasets", "spaces", "kernels", "buckets")


@dataclass(frozen=True)
class HubSource:
    """A Hub repo at a revision, and the file to convert when the name gives one."""

    repo_id: str
    revision: str = DEFAULT_REVISION
    filename: str | None = None

    def __str__(self) -> str:
        revision = self.revision if _PR_REF_RE.fullmatch(self.revision) else quote(self.revision, safe="")
        text = f"{_HF_PREFIX}{self.repo_id}@{revision}"
        return f"{text}/{self.filename}" if self.filename else text


@dataclass(frozen=True)
class ResolvedHubFile:
    """A weight file fetched from the Hub into the local cache, and where it came from."""

    path: Path
    config_path: Path | None
    repo_id: str
    revision: str
    commit_sha: str  # the 40-hex commit the revision pointed to
    filename: str
    preprocessor_config_path: Path | None = None
    license: str | None = None  # from the repo's model card, when it names one
    # The file's sha256 as the Hub's LFS metadata gives it; None for a file stored in git, or one found offline
    sha256: str | None = None

    def to_json(self) -> dict:
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit_sha,
            "filename": self.filename,
            "license": self.license,
        }

    def provenance(self) -> dict[str, str]:
        """What an output converted from this file records about its source (``abswin.*`` entries)."""
        entries = {
            "source": self.repo_id,
            "source_revision": self.revision,
            "source_commit": self.commit_sha,
            "source_file": self.filename,
        }
        return entries | ({"source_license": self.license} if self.license else {})


def parse_hub_source(text: str) -> HubSource | None:
    """The Hub source ``text`` names, or None when it should be read as a local path.

    Raises AbswinError for a malformed ``hf://`` name.
    """
    if Path(text).expanduser().exists():
        return None
    if text.startswith(_HF_PREFIX):
        return _parse_hf_uri(text)
    return _parse_repo_reference(text)


def open_source(source: str | Path) -> tuple[Checkpoint, ResolvedHubFile | None]:
    """Open a local path, or a Hub name (fetched through the cache): the checkpoint, and the Hub file it came
    from (None for a local path)."""
    hub = parse_hub_source(source) if isinstance(source, str) else None
    if hub is None:
        return open_checkpoint(source), None
    from .sources import resolve_hub_source

    resolved = resolve_hub_source(hub)
    try:
        return open_checkpoint(resolved.path, resolved.config_path), resolved
    except AbswinError as error:  # name the file by its Hub name, not by its place in the cache
        pinned = HubSource(resolved.repo_id, resolved.commit_sha, resolved.filename)
        raise AbswinError(str(error).replace(str(resolved.path), str(pinned))) from error


def _parse_hf_uri(text: str) -> HubSource:
    body = text[len(_HF_PREFIX) :].rstrip("/")
    if body.startswith(tuple(f"{kind}/" for kind in _OTHER_REPO_TYPES)):
        raise AbswinError(f"{text!r} is not a model repo; only model repos hold checkpoints")
    match = _HF_URI_RE.fullmatch(body.removeprefix("models/"))
    if match is None or not is_repo_id(match["repo_id"]):
        raise AbswinError(f"{text!r} is not a Hub name; write hf://org/repo[@revision][/path/in/repo]")
    revision = unquote(match["revision"]) if match["revision"] else DEFAULT_REVISION
    filename = _checked_name(match["filename"], "file", text) if match["filename"] else None
    return HubSource(match["repo_id"], _checked_name(revision, "revision", text), filename)


def _parse_repo_reference(text: str) -> HubSource | None:
    """``org/repo`` or ``org/repo@revision``; None for what reads as a local path (e.g. ``runs/best.pt``)."""
    repo_id, at, revision = text.partition("@")
    if not is_repo_id(repo_id) or (at and not revision):
        return None
    if text.lower().endswith(WEIGHT_SUFFIXES):
        return None
    return HubSource(repo_id, _checked_name(revision or DEFAULT_REVISION, "revision", text))


def _checked_name(name: str, what: str, text: str) -> str:
    """A revision or a file in a repo: ``..`` or a leading ``/`` would make the Hub cache read (or write) a file
    outside its own folder."""
    if name.startswith("/") or ".." in name.split("/") or "\\" in name or "\0" in name:
        raise AbswinError(f"{text!r}: {what} {name!r} leaves the repo (.., / or \\); name a branch, tag, commit or file in it")
    return name


def is_repo_id(text: str) -> bool:
    """Whether ``text`` is a valid Hub repo id, ``org/name``."""
    return bool(_REPO_ID_RE.fullmatch(text)) and not _has_bad_sequence(text)


def _has_bad_sequence(repo_id: str) -> bool:
    return "--" in repo_id or ".." in repo_id  # the Hub forbids both in repo ids
