"""Checkpoints on the Hugging Face Hub as conversion sources.

A source is written ``org/repo``, ``org/repo@revision``, ``hf://org/repo[@revision]/path/in/repo`` or
``hf://org/repo[@revision]``; the revision defaults to ``main``. An existing local path always wins over a Hub name.
Files are fetched with ``huggingface_hub`` into the normal Hugging Face cache, so ``HF_ENDPOINT``, ``HF_TOKEN``,
``HF_HOME``/``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` behave as they do for every other Hub tool.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import yaml
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError
from huggingface_hub.repocard import metadata_load

from ..errors import AbswinError
from ..io.outputs import CONFIG_FILE, WEIGHT_SUFFIXES, WEIGHTS_FILE, WeightFileChoiceError, choose_weight_file
from ..io.shards import INDEX_SUFFIX, index_name, shard_files, weight_map_of
from .errors import hub_errors
from .locations import HubSource, ResolvedHubFile

PREPROCESSOR_CONFIG_FILE = "preprocessor_config.json"
MODEL_CARD_FILE = "README.md"

_API_TIMEOUT_S = 30
_LISTED_FILES_MAX = 10


def pick_weight_file(filenames: Iterable[str], source: HubSource) -> str:
    """The weight file among a repo's ``filenames``, by ``checkpoint.choose_weight_file``'s rules; several
    candidates or none raise AbswinError, naming the ``hf://`` form that picks one."""
    names = sorted(filenames)
    try:
        return choose_weight_file(names)
    except WeightFileChoiceError as error:
        if error.candidates:
            example = HubSource(source.repo_id, source.revision, error.candidates[0])
            raise AbswinError(
                f"{_where(source)} holds several weight files ({_listing(error.candidates)}); pick one, e.g. {example}"
            ) from error
        raise AbswinError(
            f"{_where(source)} holds no weight file ({', '.join('*' + s for s in WEIGHT_SUFFIXES)}); "
            f"its files: {_listing(names) or 'none'}"
        ) from error


def resolve_hub_source(source: HubSource) -> ResolvedHubFile:
    """Download the weight file of ``source`` (and the repo's configs, when present) and pin the commit it came from.

    In offline mode (``HF_HUB_OFFLINE=1``) the repo cannot be listed, so only a named file or ``model.safetensors``
    already in the cache can be used. Hub and network failures raise AbswinError with a one-line message.
    """
    check_token()
    with hub_errors(f"fetch {source}", source.repo_id, source.revision):
        if offline_mode():
            return _resolve_from_cache(source)
        return _resolve_online(source)


def check_token() -> None:
    """A Hub token goes into an HTTP header, which holds ASCII only: say so, rather than fail inside the request."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if not os.environ.get(name, "").isascii():
            raise AbswinError(f"{name} holds characters that are not ASCII; a Hub token is plain ASCII (hf_...)")


def offline_mode() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; read it again so a later setting counts too.
    from_env = os.environ.get("HF_HUB_OFFLINE", "").upper() in constants.ENV_VARS_TRUE_VALUES
    return from_env or constants.is_offline_mode()


def _resolve_online(source: HubSource) -> ResolvedHubFile:
    # files_metadata: the LFS entry of each file carries its sha256, which provenance then need not hash again
    info = HfApi().model_info(source.repo_id, revision=source.revision, files_metadata=True, timeout=_API_TIMEOUT_S)
    siblings = {sibling.rfilename: sibling for sibling in info.siblings or []}
    files = set(siblings)
    filename = source.filename or _sharded_index(files) or pick_weight_file(files, source)
    if filename not in files:
        weights = [name for name in sorted(files) if name.lower().endswith(WEIGHT_SUFFIXES)]
        raise AbswinError(f"{_where(source)} has no file {filename!r}; its weight files: {_listing(weights) or 'none'}")
    # Download by the revision as given, so the cache records where a branch pointed (offline runs need that).
    path = Path(hf_hub_download(source.repo_id, filename, revision=source.revision))
    commit = _snapshot_commit(path, filename)
    # A branch that moved between the listing and the download: the listed LFS entry is another version's
    lfs = siblings[filename].lfs if info.sha == commit else None
    if lfs is not None and path.stat().st_size != lfs.size:  # the cheap check; the writer compares the sha256
        raise AbswinError(
            f"{HubSource(source.repo_id, commit, filename)}: the cached copy has {path.stat().st_size} bytes, the Hub "
            f"says {lfs.size}; delete it from the Hugging Face cache ({path}) and run again"
        )

    def fetch(name: str) -> Path | None:  # pinned to the weight file's commit
        return Path(hf_hub_download(source.repo_id, name, revision=commit)) if name in files else None

    if filename.endswith(INDEX_SUFFIX):  # the shards land beside the index in the same snapshot folder
        folder = PurePosixPath(filename).parent
        for shard in shard_files(weight_map_of(path)):
            fetch(str(folder / shard))

    return ResolvedHubFile(
        path=path,
        config_path=fetch(CONFIG_FILE),
        repo_id=source.repo_id,
        revision=source.revision,
        commit_sha=commit,
        filename=filename,
        preprocessor_config_path=fetch(PREPROCESSOR_CONFIG_FILE),
        license=_card_license(fetch(MODEL_CARD_FILE)),
        sha256=lfs.sha256 if lfs is not None else None,
    )


def _sharded_index(files: set[str]) -> str | None:
    """A repo sharded as transformers shards large models (an index beside ``model-0000k-of-0000n`` files, and no
    single ``model.safetensors``): its index, read as one checkpoint."""
    return None if WEIGHTS_FILE in files else index_name(files)


def _resolve_from_cache(source: HubSource) -> ResolvedHubFile:
    filename = source.filename or WEIGHTS_FILE
    path = _cached(source.repo_id, filename, source.revision)
    if path is None:
        raise AbswinError(_offline_miss(source))
    commit = _snapshot_commit(path, filename)
    return ResolvedHubFile(
        path=path,
        config_path=_cached(source.repo_id, CONFIG_FILE, commit),
        repo_id=source.repo_id,
        revision=source.revision,
        commit_sha=commit,
        filename=filename,
        preprocessor_config_path=_cached(source.repo_id, PREPROCESSOR_CONFIG_FILE, commit),
        license=_card_license(_cached(source.repo_id, MODEL_CARD_FILE, commit)),
    )


def _cached(repo_id: str, filename: str, revision: str) -> Path | None:
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def _offline_miss(source: HubSource) -> str:
    if source.filename:
        return f"offline mode (HF_HUB_OFFLINE=1): {source} is not in the Hugging Face cache; fetch it once online"
    return (
        f"offline mode (HF_HUB_OFFLINE=1): cannot list the files of {_where(source)} and its "
        f"{WEIGHTS_FILE} is not in the Hugging Face cache; name a cached file as "
        f"{HubSource(source.repo_id, source.revision, '<file>')}, or run once online"
    )


def _card_license(card: Path | None) -> str | None:
    """The ``license`` of a model card's YAML front matter; None when there is no card, no license or bad YAML."""
    if card is None:
        return None
    try:
        metadata = metadata_load(card) or {}
    except (ValueError, UnicodeDecodeError, yaml.YAMLError):  # a broken card should not stop a conversion
        return None
    license = metadata.get("license")
    return license if isinstance(license, str) else None


def _snapshot_commit(path: Path, filename: str) -> str:
    """The commit a file from hf_hub_download belongs to: the cache keeps it at ``snapshots/<commit>/<filename>``."""
    return path.parents[filename.count("/")].name


def _where(source: HubSource) -> str:
    return f"{source.repo_id}@{source.revision}"


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED_FILES_MAX])
    return shown + (f" and {len(names) - _LISTED_FILES_MAX} more" if len(names) > _LISTED_FILES_MAX else "")
