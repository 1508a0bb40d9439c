"""The zoo's progress on a terminal; imported only when ``abswin-convert zoo`` runs (the zoo is heavy), and tqdm
only when stderr is a terminal (a zoo run from a script or a scheduler shows no bar and need not load it)."""

from __future__ import annotations

import sys
import threading

from ..zoo import OutputJob, OutputRow, Progress


def terminal_progress(total: int) -> Progress:
    """A ``TerminalProgress`` on a terminal; elsewhere the silent default."""
    return TerminalProgress(total) if sys.stderr.isatty() else Progress()


class TerminalProgress(Progress):
    """An overall bar plus one line per output as it starts and ends."""

    def __init__(self, total: int) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, unit="output", desc="zoo", file=sys.stderr)
        self._lock = threading.Lock()  # tqdm bars are not thread-safe

    def started(self, job: OutputJob) -> None:
        with self._lock:
            self._bar.write(f"  start     {job.folder.name}  ({job.source})", file=sys.stderr)

    def finished(self, row: OutputRow) -> None:
        with self._lock:
            self._bar.write(f"  {row.status:<9} {row.output}  {row.seconds:.1f}s {row.error or ''}", file=sys.stderr)
            self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
