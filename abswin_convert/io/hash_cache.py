"""The sha256 of files already hashed, so that converting a file again (another size, a zoo of outputs from one
source) does not hash it again: SHA-256 runs at about 1 GB/s, which for a large checkpoint is longer than copying it.

An entry is used only while the file is the one that was hashed: same device, inode, size, modification and change
time (nanoseconds; the change time moves on every write and cannot be set back by a user), as git trusts its index.
The cache is a small JSON file in ``$XDG_CACHE_HOME/abswin-convert`` (``ABSWIN_HASH_CACHE=off`` disables it); it is
rewritten atomically, and a lost or damaged cache only costs a hash. The cache is optional: a path that is not a
small regular file (a pipe, a device, a folder) is neither read nor replaced, with one warning line; an entry that
is not a sha256 in hex is not one.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import threading
from pathlib import Path

ENV_VAR = "ABSWIN_HASH_CACHE"
MAX_ENTRIES = 1000  # the oldest are dropped: a cache of recent conversions, not an index of the disk
MAX_BYTES = 1 << 20  # 1000 entries take about 200 kB
_SHA256 = re.compile(r"[0-9a-f]{64}")
# A zoo's threads add entries at once: each rewrite must keep the others' (across processes, a lost entry only
# costs a hash).
_UPDATING = threading.Lock()


def _cache_file() -> Path | None:
    setting = os.environ.get(ENV_VAR, "")
    if setting.lower() in ("off", "0", "no"):
        return None
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "abswin-convert" / "sha256.json"


def _identity(stat: os.stat_result) -> str:
    return f"{stat.st_dev}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"


def _entries(cache: Path) -> dict[str, str] | None:
    """The cache's entries ({} when there is no cache yet, or it is damaged); None when ``cache`` is not a small
    regular file, which is then left alone (opened without blocking: a pipe would wait for a writer forever)."""
    try:
        fd = os.open(cache, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        _warn(cache, exc.strerror or str(exc))
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BYTES:
            _warn(cache, "not a regular file" if not stat.S_ISREG(info.st_mode) else "larger than 1 MiB")
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_BYTES + 1)
    finally:
        os.close(fd)
    try:
        entries = json.loads(data)
    except (ValueError, RecursionError):  # damaged: it costs a hash, and is rewritten
        return {}
    if not isinstance(entries, dict):
        return {}
    return {k: v for k, v in entries.items() if isinstance(v, str) and _SHA256.fullmatch(v)}


_warned = threading.Event()


def _warn(cache: Path, why: str) -> None:
    """One line, once per process (a zoo's threads all meet the same cache)."""
    if not _warned.is_set():
        _warned.set()
        print(f"abswin-convert: warning: {ENV_VAR} {cache}: {why}; the hash cache is not used", file=sys.stderr)


def cached_sha256(path: Path) -> str | None:
    """The sha256 recorded for ``path`` as it is now, or None."""
    cache = _cache_file()
    if cache is None:
        return None
    try:
        identity = _identity(path.stat())
    except OSError:
        return None
    return (_entries(cache) or {}).get(f"{path.resolve()}|{identity}")


def remember_sha256(path: Path, digest: str, stat_before: os.stat_result) -> None:
    """Record ``digest`` for ``path``, unless the file changed while it was hashed; never fails the caller."""
    cache = _cache_file()
    try:
        if cache is None or _identity(path.stat()) != _identity(stat_before):
            return
        with _UPDATING:
            entries = _entries(cache)
            if entries is None:
                return
            entries[f"{path.resolve()}|{_identity(stat_before)}"] = digest
            kept = dict(list(entries.items())[-MAX_ENTRIES:])
            cache.parent.mkdir(parents=True, exist_ok=True)
            temp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
            temp.write_text(json.dumps(kept))
            os.replace(temp, cache)
    except OSError:
        return
