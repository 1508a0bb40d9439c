"""File safety, in one place: every file this tool writes is written under a temp name in its destination folder,
fsynced and renamed into place, so nothing is ever left half-written under its real name; temp names say who made
them, so that a later run can remove what a killed writer left. ``staging.py`` builds whole outputs on these.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import AbswinError
from .owner import Owner, host_id, known_dead

TEMP_MARK = ".abswin-tmp-"  # temp files and staging folders: .abswin-tmp-HOST-PID-TOKEN
COMMITTED = ".abswin-committed"  # in a staging folder: its files are being moved into place, all of them


def check_destination(dest: Path, inputs: list[Path], force: bool) -> None:
    """Refuse to write onto an input, or over an existing file without ``force``."""
    for source in inputs:
        if _same_file(dest, source):
            raise AbswinError(f"output {dest} is the input file {source}; choose another output path")
    if dest.exists() and not force:
        raise AbswinError(f"output {dest} already exists; pass --force to overwrite it")
    if dest.exists() and dest.is_dir():
        raise AbswinError(f"output {dest} is a folder; give a file name")


def _same_file(a: Path, b: Path) -> bool:
    """The same path, or two names (links) of one existing file."""
    if a.resolve() == b.resolve():
        return True
    return a.exists() and b.exists() and os.path.samefile(a, b)


def temp_path(folder: Path) -> Path:
    """A fresh temp name in ``folder``: short (a long output name must not make it too long), unique within this
    process (the zoo writes from threads), and naming its owner (host and pid) so that a later run can clean it up."""
    return folder / f"{TEMP_MARK}{host_id()}-{os.getpid()}-{secrets.token_hex(4)}"


def temp_owner(path: Path) -> Owner | None:
    """Who made a temp name (earlier versions named the pid alone: this host's); None for other names."""
    fields = path.name[len(TEMP_MARK):].split("-") if path.name.startswith(TEMP_MARK) else []
    if len(fields) == 2 and fields[0].isdigit():
        return Owner(host_id(), int(fields[0]))
    return Owner.parse(f"{fields[0]} {fields[1]} -") if len(fields) == 3 else None


def stale_temps(folder: Path, any_host: bool = False) -> list[Path]:
    """Temp files and staging folders in ``folder`` whose writers are known dead (on this host; ``any_host``: all
    of them, for a caller that holds the folder for itself)."""
    if not folder.is_dir():
        return []
    found = []
    for candidate in folder.glob(f"{TEMP_MARK}*"):
        owner = temp_owner(candidate)
        if owner is not None and (any_host or known_dead(owner)):
            found.append(candidate)
    return found


def remove_stale_temps(folder: Path, any_host: bool = False) -> list[Path]:
    """Delete temp files and staging folders left in ``folder`` by killed writers; a staging folder whose files were
    being moved into place when its writer died (``COMMITTED`` in it) is left for ``staging.sweep`` to finish."""
    removed: list[Path] = []
    for candidate in stale_temps(folder, any_host):
        if candidate.is_dir() and not candidate.is_symlink():
            if (candidate / COMMITTED).exists():
                continue
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the folders created, outermost first (to remove on failure)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        remove_folders(missing)
        raise AbswinError(f"cannot create the folder {folder}: {exc.strerror or exc}") from exc
    return missing


def remove_folders(created: list[Path]) -> None:
    """Remove folders ``make_folders`` created, innermost first, where they are still empty."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def atomic_file(dest: Path) -> Iterator[BinaryIO]:
    """Yield a temp file beside ``dest``; on success fsync and rename it over ``dest``, else delete it (and the
    folders made for it)."""
    created = make_folders(dest.parent)
    remove_stale_temps(dest.parent)
    temp = temp_path(dest.parent)
    try:
        with open(temp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, dest)
    except OSError as exc:  # a full disk, a read-only folder, a file size limit: the user's to fix, not a crash
        temp.unlink(missing_ok=True)
        remove_folders(created)
        raise AbswinError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        remove_folders(created)
        raise
    fsync_folder(dest.parent)


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
