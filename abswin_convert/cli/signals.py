"""SIGINT, SIGTERM and SIGHUP end a command with one line and exit status 128 + the signal's number.

While a command runs, the signal becomes ``Interrupted``, an exception that unwinds through every ``with`` and
``finally`` (the writer's temp files and staging folders are removed on the way) and is turned into the one line by
the command group. Before that (while the command line is still importing) there is nothing to clean up: the line is
written and the process ends at once. Standard library only, so that it can be installed before anything is imported.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(BaseException):  # not an Exception: no ``except Exception`` on the way may swallow it
    """A signal arrived while a command ran."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def line(signum: int) -> str:
    return f"abswin-convert: error: interrupted by {signal.Signals(signum).name}"


def _exit_now(signum: int, frame: FrameType | None) -> None:
    os.write(2, (line(signum) + "\n").encode())
    os._exit(128 + signum)


def _raise(signum: int, frame: FrameType | None) -> None:
    for other in SIGNALS:  # a second signal must not interrupt the clean-up of the first
        signal.signal(other, signal.SIG_IGN)
    raise Interrupted(signum)


def install_early() -> None:
    """Before the command runs: a signal ends the process at once, with its line."""
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, _exit_now)


@contextlib.contextmanager
def raising() -> Iterator[None]:
    """While the command runs: a signal raises ``Interrupted``; the handlers found are put back afterwards."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread receives signals
        yield
        return
    previous = {signum: signal.signal(signum, _raise) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
