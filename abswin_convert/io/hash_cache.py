"""The sha256 of files already hashed, so that converting a file again (another size, a zoo of outputs from one
source) does not hash it again: SHA-256 runs at about 1 GB/s, which for a large checkpoint is longer than copying it.

An entry is used only while the file is the one that was hashed: same device, inode, size, modification and change
time (nanoseconds; the change time moves on every write and cannot be set back by a user), as git trusts its index.
The cache is a small JSON file in ``$XDG_CACHE_HOME/abswin-convert`` (``ABSWIN_HASH_CACHE=off`` disables it); it is
rewritten atomically, and a lost or damaged cache only costs a hash.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

ENV_VAR = "ABSWIN_HASH_CACHE"
MAX_ENTRIES = 1000  # the oldest are dropped: a cache of recent conversions, not an index of the disk
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


def _entries(cache: Path) -> dict[str, str]:
    try:
        entries = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def cached_sha256(path: Path) -> str | None:
    """The sha256 recorded for ``path`` as it is now, or None."""
    cache = _cache_file()
    if cache is None:
        return None
    try:
        identity = _identity(path.stat())
    except OSError:
        return None
    found = _entries(cache).get(f"{path.resolve()}|{identity}")
    return found if isinstance(found, str) else None


def remember_sha256(path: Path, digest: str, stat_before: os.stat_result) -> None:
    """Record ``digest`` for ``path``, unless the file changed while it was hashed; never fails the caller."""
    cache = _cache_file()
    try:
        if cache is None or _identity(path.stat()) != _identity(stat_before):
            return
        with _UPDATING:
            entries = _entries(cache)
            entries[f"{path.resolve()}|{_identity(stat_before)}"] = digest
            kept = dict(list(entries.items())[-MAX_ENTRIES:])
            cache.parent.mkdir(parents=True, exist_ok=True)
            temp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
            temp.write_text(json.dumps(kept))
            os.replace(temp, cache)
    except OSError:
        return
