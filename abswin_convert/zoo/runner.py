"""Running a manifest: hold the output folder, hand the outputs to an executor, write the report."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import AbswinError
from ..io.staging import sweep
from .executors import Progress, make_executor
from .manifest import Manifest
from .output import remove_staging
from .report import ZooReport


def run_zoo(
    manifest: Manifest,
    jobs: int = 1,
    dry_run: bool = False,
    progress: Progress | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> ZooReport:
    """Run every output of ``manifest`` (see ``load_manifest``) on ``executor`` (local or ray), ``jobs`` at once.

    A failure is reported in its row, never raised, and stops nothing else. Writes ``report.json`` and
    ``report.md`` into the output folder (not for a dry run, which converts, runs and pushes nothing and only says
    which outputs are up to date).
    """
    runner = make_executor(executor, jobs, ray_address)
    progress = progress or Progress()
    if dry_run:
        rows = runner.run(manifest.entries(), True, progress)
        return ZooReport(manifest.path, manifest.out, rows, dry_run=True)
    manifest.out.mkdir(parents=True, exist_ok=True)
    with _exclusive(manifest.out):
        remove_staging(manifest.out)  # left by a run that was killed: nobody else holds the folder now
        sweep(manifest.out, owned=True)  # and the locks and stages of its conversions, whatever this run converts
        rows = runner.run(manifest.entries(), False, progress)
        remove_staging(manifest.out)  # left by Ray workers lost mid-output
        sweep(manifest.out, owned=True)
        report = ZooReport(manifest.path, manifest.out, rows)
        report.write()
    return report


@contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Hold an advisory lock on the output folder (released by the kernel even after ``kill -9``)."""
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise AbswinError(f"another zoo run is writing to {out_dir}; wait for it, or use another -o/--output") from exc
        yield
    finally:
        os.close(fd)
