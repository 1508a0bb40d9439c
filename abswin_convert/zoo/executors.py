"""Where the outputs run: threads in this process (``local``), or Ray tasks on a cluster (``ray``).

An executor takes the manifest's entries and returns one row per output in manifest order, calling ``progress``
as outputs start and finish. Ray is imported only when the ``ray`` executor is asked for.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from threadpoolctl import threadpool_limits

from ..errors import AbswinError
from ..vocabulary import EXECUTORS
from .manifest import OutputJob
from .output import run_output, source_digest
from .report import OutputRow


class Progress:
    """Callbacks an executor calls as outputs start and finish (from worker threads); the default does nothing."""

    def started(self, job: OutputJob) -> None:
        pass

    def finished(self, row: OutputRow) -> None:
        pass

    def close(self) -> None:
        """The run has ended, whatever ended it (its caller says so, not the executor)."""


class Executor(Protocol):
    def run(self, entries: list[list[OutputJob]], dry_run: bool, progress: Progress) -> list[OutputRow]: ...


class LocalExecutor:
    """``jobs`` entries at once, in threads (downloads, file I/O and torch release the GIL)."""

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = max(1, jobs)

    def run(self, entries: list[list[OutputJob]], dry_run: bool, progress: Progress) -> list[OutputRow]:
        # The outputs already run side by side; BLAS worker threads would add no speed to their small products, and
        # would spin after each one, taking the CPU the kernel copies beside them need (about 0.1x on a 2-core zoo).
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(self.jobs, thread_name_prefix="zoo") as pool:
            results = list(pool.map(lambda entry: run_entry(entry, dry_run, progress), entries))  # manifest order
        return [row for rows in results for row in rows]


def run_entry(jobs: list[OutputJob], dry_run: bool, progress: Progress) -> list[OutputRow]:
    """The outputs of one manifest entry, one after the other (they share the source download and its hash)."""
    source_sha = source_digest(jobs[0].location)
    rows = []
    for job in jobs:
        progress.started(job)
        row = run_output(job, dry_run, source_sha)
        progress.finished(row)
        rows.append(row)
    return rows


def make_executor(name: str, jobs: int = 1, ray_address: str | None = None) -> Executor:
    """The executor called ``name``; ``ray_address`` is the Ray cluster to use (None: start a local one)."""
    if name == "local":
        if ray_address is not None:
            raise AbswinError("--ray-address is for --executor ray; the local executor runs in this process")
        return LocalExecutor(jobs)
    if name == "ray":
        from .ray_executor import RayExecutor  # imports ray

        return RayExecutor(jobs, ray_address)
    raise AbswinError(f"unknown executor {name!r}; use one of {', '.join(EXECUTORS)}")
