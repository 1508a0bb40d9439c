"""Who owns a temp file, a staging folder or a lock, and whether that owner is known to be dead.

A pid alone says nothing on shared storage: another node, or another container (another PID namespace), has pids
of its own, and a pid is reused once its process is gone. So an owner is this host's identity (host name, boot id,
PID namespace), the pid, and when that process started. An owner is dead only when the identity is this host's and
the pid is gone (or is now a process that started at another time); another host's owners are never judged.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Owner:
    host: str  # host_id() of the host it runs on
    pid: int
    start: str = ""  # the process's start time in clock ticks after boot ("" when not known)

    def __str__(self) -> str:
        return f"{self.host} {self.pid} {self.start or '-'}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """What ``str`` wrote (and anything after it, such as a lock's token); None for anything else."""
        fields = text.split()
        if len(fields) < 3 or not fields[1].isdigit():
            return None
        return cls(fields[0], int(fields[1]), "" if fields[2] == "-" else fields[2])


@functools.cache
def host_id() -> str:
    """8 hex digits naming this host, boot and PID namespace: pids mean something only within one."""
    parts = [socket.gethostname(), _read("/proc/sys/kernel/random/boot_id"), _pid_namespace()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:8]


def me() -> Owner:
    pid = os.getpid()
    return Owner(host_id(), pid, _start_time(pid) or "")


def known_dead(owner: Owner) -> bool:
    """Whether ``owner`` is certainly gone: on this host, and its pid free or taken by a later process."""
    if owner.host != host_id():
        return False
    if not _pid_alive(owner.pid):
        return True
    now = _start_time(owner.pid)
    return bool(owner.start) and now is not None and now != owner.start


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/PID/stat`` (after the command name, which may hold spaces); None without /proc."""
    stat = _read(f"/proc/{pid}/stat")
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""
