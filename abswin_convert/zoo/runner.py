"""Running a manifest: hold the output folder, hand the outputs to an executor, write the report."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ..errors import AbswinError
from ..io.staging import Busy, locked, sweep
from .executors import Progress, make_executor
from .manifest import Manifest
from .report import ZooReport

_THE_RUN = "./"  # the lock a zoo run holds on its output folder, inside it: one run at a time writes there


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
        # what a killed run left (nobody else writes here now): locks, temp files, half-built output folders
        sweep(manifest.out, held=[_THE_RUN], owned=True)
        rows = runner.run(manifest.entries(), False, progress)
        sweep(manifest.out, held=[_THE_RUN], owned=True)  # and what Ray workers lost mid-output left
        report = ZooReport(manifest.path, manifest.out, rows)
        report.write()
    return report


@contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Hold the output folder's lock for this run (a killed run's is stale once it is known dead)."""
    with ExitStack() as held:
        try:
            held.enter_context(locked(out_dir, [_THE_RUN]))
        except Busy as exc:
            raise AbswinError(f"another zoo run is writing to {out_dir}; wait for it, or use another -o/--output") from exc
        yield
