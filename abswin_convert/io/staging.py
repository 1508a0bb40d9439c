"""One output, whole: every file a command writes (weights, config, sidecar) is checked before anything is written,
built in a hidden staging folder, and moved into place together, under locks that one writer at a time can hold.

- Nothing is replaced without ``force``, and nothing that is an input of the command is ever written over.
- A new output folder is built beside its place and appears by one rename. Into a folder that exists (the folder of
  a one-file output, an output folder replaced with ``force``) the files are staged inside that folder, never above
  it (a volume's root, a home whose parent is not writable), and moved into place there: the folder keeps its
  inode, mode, owner, group and other files. Several files move as one unit: the stage is marked ``COMMITTED``
  first, and if the writer dies while moving them, the next run that writes in that folder finishes the move.
- Two writers to one destination: the second is refused at once (``force`` or not), with a line that says so. Each
  file of an output has a lock file in its folder (a new folder: one lock, in its parent), and a writer takes all of
  its own or none, so two outputs sharing any file (a ``config.json``) cannot both write.
- A lock names its owner (``owner.Owner``: host, pid, start time) and is created whole (a hard link to a written
  file). It is stale only when its owner is known dead on its own host; then any later run in that folder removes
  it, with the killed writer's temp files and staging folders. Another host's locks and stages are never touched.
- A failure (or a signal, see ``cli/signals.py``) removes the staging folder, the locks and any folders made.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import AbswinError
from .owner import Owner, known_dead, me
from .writer import (
    COMMITTED,
    check_destination,
    fsync_folder,
    make_folders,
    remove_folders,
    remove_stale_temps,
    stale_temps,
    temp_path,
)

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
    created = make_folders(folder.parent)
    try:
        with _claimed(folder, files) as new_folder:
            for dest in files:  # again, now that no other conversion can write here
                check_destination(dest, inputs, force)
            stage = temp_path(folder.parent if new_folder else folder)
            try:
                stage.mkdir()
                yield Staging(folder, stage)
                _commit(stage, folder, files, new_folder)
            except OSError as exc:
                raise AbswinError(f"cannot write {folder}: {exc.strerror or exc}") from exc
            except AbswinError as exc:  # name the files where they were going, not where they were staged
                raise AbswinError(str(exc).replace(str(stage), str(folder))) from exc
            finally:
                if (stage / COMMITTED).exists():  # interrupted while moving its files: they all go
                    _move_in(stage, folder, _staged(stage))
                shutil.rmtree(stage, ignore_errors=True)
    except BaseException:
        remove_folders(created)
        raise


def _one_folder(files: list[Path]) -> Path:
    folders = {dest.parent for dest in files}
    if len(folders) != 1:
        raise AbswinError(f"the files of one output must share a folder, got {sorted(map(str, folders))}; this is a bug")
    return folders.pop()


@contextlib.contextmanager
def _claimed(folder: Path, files: list[Path]) -> Iterator[bool]:
    """Hold the locks of an output (its files' in ``folder``, or the folder's own in its parent while it does not
    exist yet), after removing what killed writers left there; yields whether the folder is new."""
    while True:
        new_folder = not folder.is_dir()
        where, names = (folder.parent, [f"{folder.name}/"]) if new_folder else (folder, [f.name for f in files])
        with locked(where, names):
            sweep(where, held=names)
            if new_folder != folder.is_dir():
                yield new_folder
                return
        # the folder appeared (or went) while we locked: lock where it is now


def _commit(stage: Path, folder: Path, files: list[Path], new_folder: bool) -> None:
    """Move the staged files into place: a new folder by one rename; into an existing folder one rename per file,
    the weights last, after marking the stage ``COMMITTED`` when there are several (a move cut short is finished by
    whoever comes next, see ``sweep``)."""
    fsync_folder(stage)
    if new_folder:
        os.rename(stage, folder)  # fails, rather than merges, if a folder appeared there meanwhile
        fsync_folder(folder.parent)
        return
    if len(files) > 1:
        (stage / COMMITTED).touch()
        fsync_folder(stage)
    _move_in(stage, folder, [dest.name for dest in [*files[1:], files[0]]])


def _staged(stage: Path) -> list[str]:
    return sorted(p.name for p in stage.iterdir() if p.name != COMMITTED)


def _move_in(stage: Path, folder: Path, names: list[str]) -> None:
    """Rename each of ``names`` still in ``stage`` over its place in ``folder``."""
    for name in names:
        if (stage / name).exists():
            os.replace(stage / name, folder / name)
    fsync_folder(folder)


def sweep(where: Path, held: Iterable[str] = (), *, owned: bool = False) -> None:
    """Remove what writers known dead (on this host) left in ``where``: their locks, temp files and staging folders.
    A staging folder they were moving into place has its move finished first, under its files' locks (``held``:
    those the caller holds already). ``owned``: the caller holds ``where`` for itself (the zoo's output folder,
    after its tasks), so whatever is there, from any host, is a leftover."""
    if not where.is_dir():
        return
    for lock in where.glob(f"{LOCK_MARK}*"):
        if owned:
            lock.unlink(missing_ok=True)
        else:
            _remove_if_stale(lock)
    for stage in stale_temps(where, any_host=owned):
        if stage.is_dir() and (stage / COMMITTED).exists():
            names = _staged(stage)
            unheld = [name for name in names if name not in set(held)]
            # a live writer holding one of them refuses us: its own output comes later, this one is left as it is
            with contextlib.suppress(AbswinError), locked(where, unheld):
                _move_in(stage, where, names)
                shutil.rmtree(stage, ignore_errors=True)
    remove_stale_temps(where, any_host=owned)


@contextlib.contextmanager
def locked(where: Path, names: list[str]) -> Iterator[None]:
    """Hold the locks of ``names`` (files in ``where``; ``NAME/`` for a folder) or refuse at once: another conversion
    is writing one of them."""
    taken: list[Path] = []
    mine = f"{me()} {secrets.token_hex(4)}"  # this holder's own (a zoo's threads share the process)
    try:
        for name in sorted(set(names)):
            lock = lock_path(where, name)
            taken.append(lock)  # first: a signal right after the lock is made still releases it (it says whose)
            if not _take(lock, mine):
                taken.pop()
                raise AbswinError(f"another conversion is writing {where / name.rstrip('/')} right now; wait for it, or "
                                  "choose another output")
        yield
    finally:
        for lock in taken:
            if _content(lock) == mine:
                lock.unlink(missing_ok=True)


def forget_claim(folder: Path) -> None:
    """Drop the lock of a new output folder at ``folder``, whoever holds it: for a caller to whom that path belongs
    alone (the zoo's staging folder of one output, retried after its worker was lost)."""
    lock_path(folder.parent, f"{folder.name}/").unlink(missing_ok=True)


def lock_path(where: Path, name: str) -> Path:
    """The lock file of ``name`` (a file in ``where``, or ``NAME/`` for a folder): short, whatever the name's length."""
    return where / f"{LOCK_MARK}{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def _take(lock: Path, owner: str) -> bool:
    """Create ``lock`` holding ``owner``, whole (a link to a written file); a stale one in the way is removed."""
    for _ in range(3):
        temp = temp_path(lock.parent)
        try:
            temp.write_text(owner)
            os.link(temp, lock)
            return True
        except FileExistsError:
            if not _remove_if_stale(lock):
                return False
        except OSError as exc:
            raise AbswinError(f"cannot write in {lock.parent}: {exc.strerror or exc}") from exc
        finally:
            temp.unlink(missing_ok=True)
    return False


def _remove_if_stale(lock: Path) -> bool:
    """Remove ``lock`` if its owner is known dead (or it names none: earlier versions left empty ones); True when it
    is gone. Taken away by a rename first, so that a lock another writer made meanwhile is put back, not lost."""
    content = _content(lock)
    holder = Owner.parse(content) if content is not None else None
    if content is None:
        return True  # gone already
    if holder is not None and not known_dead(holder):
        return False
    grabbed = temp_path(lock.parent)
    try:
        os.rename(lock, grabbed)
    except FileNotFoundError:
        return True
    except OSError:  # a folder we may not change: the lock stays, and so does the refusal
        return False
    if _content(grabbed) != content:  # a new writer's lock, made after we read the stale one: its again
        with contextlib.suppress(OSError):
            os.link(grabbed, lock)
    grabbed.unlink(missing_ok=True)
    return True


def _content(lock: Path) -> str | None:
    """What a lock says (None: there is no such lock; "" for one that cannot be read)."""
    try:
        with open(lock, "rb") as f:
            return f.read(200).decode(errors="replace")
    except FileNotFoundError:
        return None
    except OSError:
        return ""
