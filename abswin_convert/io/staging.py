"""One output, whole: every file a command writes (weights, config, sidecar) is checked before anything is written,
built in a staging folder, and moved into place together, under a lock that one writer at a time can hold.

- Nothing is replaced without ``force``, and nothing that is an input of the command is ever written over.
- A new output folder appears by one rename of the staging folder, and an existing one is swapped with the staging
  folder in one step (renameat2 RENAME_EXCHANGE, the folder's other files carried over as hard links): a kill at any
  instant leaves the old state or the new one. Where the system cannot swap (not Linux, or sub-folders in the
  folder), the files move one rename each, weights last, right after one another.
- Two writers to one destination: the second is refused at once (``force`` or not), with a line that says so; the
  lock is an ``flock`` on a small file beside the output folder, so a killed writer's lock goes with its process.
- A failure (or a signal, see ``cli/signals.py``) removes the staging folder, the lock file and any folders made.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import AbswinError
from .writer import check_destination, fsync_folder, make_folders, remove_folders, remove_stale_temps, temp_path

LOCK_MARK = ".abswin-lock-"


class Staging:
    """Where the files of one output are written before they are moved into place."""

    def __init__(self, folder: Path, stage: Path) -> None:
        self.folder = folder
        self.stage = stage

    def path(self, dest: Path) -> Path:
        """Where to write ``dest`` now."""
        return self.stage / dest.name


@contextlib.contextmanager
def output_unit(files: list[Path], inputs: list[Path], force: bool) -> Iterator[Staging]:
    """Write ``files`` (all in one folder; the weights first) as one output; see the module's docstring."""
    folder = _one_folder(files)
    for dest in files:
        check_destination(dest, inputs, force)
    new_folder = not folder.exists()
    created = make_folders(folder.parent)
    try:
        with _exclusive(folder.parent, files[0]):
            for dest in files:  # again, now that no other conversion can write here
                check_destination(dest, inputs, force)
            for place in (folder.parent, folder):  # what killed writers left, in either place a stage goes
                remove_stale_temps(place)
            remove_stale_locks(folder.parent)
            stage = temp_path(folder.parent)  # beside the folder: renamed into it, or swapped with it
            try:
                stage.mkdir()
                yield Staging(folder, stage)
                _commit(stage, folder, files, new_folder)
            except OSError as exc:
                raise AbswinError(f"cannot write {folder}: {exc.strerror or exc}") from exc
            except AbswinError as exc:  # name the files where they were going, not where they were staged
                raise AbswinError(str(exc).replace(str(stage), str(folder))) from exc
            finally:
                shutil.rmtree(stage, ignore_errors=True)
    except BaseException:
        remove_folders(created)
        raise


def _one_folder(files: list[Path]) -> Path:
    folders = {dest.parent for dest in files}
    if len(folders) != 1:
        raise AbswinError(f"the files of one output must share a folder, got {sorted(map(str, folders))}; this is a bug")
    return folders.pop()


def _commit(stage: Path, folder: Path, files: list[Path], new_folder: bool) -> None:
    """Move the staged files into place in one step: a new folder by one rename, one file by one rename; several
    files into an existing folder by swapping it with the stage, once the stage holds (as hard links) everything else
    the folder holds. Where the system cannot swap (not Linux, or sub-folders in the way), the files move one rename
    each, weights last."""
    fsync_folder(stage)
    if new_folder:
        os.rename(stage, folder)  # fails, rather than merges, if a folder appeared there meanwhile
        fsync_folder(folder.parent)
        return
    # One file is in place by one rename; several are swapped in with the folder, whose other files are then hard
    # links (which a single file output should not do to a folder of the user's: it would touch every file there).
    if len(files) > 1 and _swap_in(stage, folder, {dest.name for dest in files}):
        return  # the old folder is now at ``stage``, which the caller removes
    for dest in [*files[1:], files[0]]:
        os.replace(stage / dest.name, dest)
    fsync_folder(folder)


def _swap_in(stage: Path, folder: Path, replaced: set[str]) -> bool:
    """Give ``stage`` the folder's other files (hard links), then exchange the two; False, undone, where it cannot."""
    others = [entry for entry in folder.iterdir() if entry.name not in replaced]
    if any(entry.is_symlink() or not entry.is_file() for entry in others):
        return False
    linked = []
    try:
        for entry in others:
            os.link(entry, stage / entry.name)
            linked.append(stage / entry.name)
        if _exchange(stage, folder):
            fsync_folder(folder.parent)
            return True
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
    for link in linked:
        link.unlink()
    return False


_RENAME_EXCHANGE = 2  # renameat2(2): swap two paths atomically (Linux 3.15+)
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step; False where the system has no such call."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # a file system or kernel that cannot swap
        return False
    raise OSError(code, os.strerror(code), str(b))


@contextlib.contextmanager
def _exclusive(where: Path, dest: Path) -> Iterator[None]:
    """Hold the lock of ``dest`` (a file in ``where``) or refuse at once: another conversion is writing it."""
    key = hashlib.sha256(str(dest.resolve()).encode()).hexdigest()[:16]
    lock = where / f"{LOCK_MARK}{key}"
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise AbswinError(f"cannot write in {where}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise AbswinError(f"another conversion is writing {dest} right now; wait for it, or choose another output") from exc
        # the holder before us may have removed the file after we opened it: then lock the new one instead
        if _same_inode(fd, lock):
            break
        os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def remove_stale_locks(where: Path) -> None:
    """Delete the lock files killed writers left in ``where``: those nobody holds now."""
    for lock in where.glob(f"{LOCK_MARK}*"):
        with contextlib.suppress(OSError):
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live writer: BlockingIOError, kept
                if _same_inode(fd, lock):
                    lock.unlink()
            finally:
                os.close(fd)


def _same_inode(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
