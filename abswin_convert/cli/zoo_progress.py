"""The zoo's progress on a terminal; imported only when ``abswin-convert zoo`` runs (tqdm and the zoo are heavy)."""

from __future__ import annotations

import sys
import threading

from tqdm.auto import tqdm

from ..zoo import OutputJob, OutputRow, Progress


class TerminalProgress(Progress):
    """An overall bar plus one line per output as it starts and ends; silent when stderr is not a terminal."""

    def __init__(self, total: int) -> None:
        self._bar = tqdm(total=total, unit="output", desc="zoo", file=sys.stderr, disable=not sys.stderr.isatty())
        self._lock = threading.Lock()  # tqdm bars are not thread-safe

    def started(self, job: OutputJob) -> None:
        with self._lock:
            if not self._bar.disable:
                self._bar.write(f"  start     {job.folder.name}  ({job.source})", file=sys.stderr)

    def finished(self, row: OutputRow) -> None:
        with self._lock:
            if not self._bar.disable:
                line = f"  {row.status:<9} {row.output}  {row.seconds:.1f}s {row.error or ''}"
                self._bar.write(line, file=sys.stderr)
            self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
