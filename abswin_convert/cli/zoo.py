"""``abswin-convert zoo``: run a whole manifest of conversions, with progress on a terminal and a report."""

from __future__ import annotations

import contextlib
import sys
import threading

import click
from tqdm.auto import tqdm

from ..zoo import EXECUTORS, OutputJob, OutputRow, Progress, ZooReport, load_manifest, run_zoo
from .support import emit, json_option, user_errors


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


@click.command("zoo", short_help="Convert, check and push every checkpoint a manifest lists.")
@click.argument("manifest")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=2, show_default=True,
              help="Entries (local) or outputs (ray) run at once.")
@click.option("--out", default=None, help="Output folder (default: the manifest's `out`, else ./converted beside it).")
@click.option("--dry-run", is_flag=True, help="Only say which outputs would be converted and which are up to date.")
@click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
              help="Run outputs in threads here, or as tasks on a Ray cluster (needs abswin-convert[ray]).")
@click.option("--ray-address", default=None, metavar="ADDR",
              help="Ray cluster to use (e.g. HEAD:6379); default: start a local Ray instance for the run.")
@json_option
@user_errors
def zoo_command(
    manifest: str, jobs: int, out: str | None, dry_run: bool, executor: str, ray_address: str | None, as_json: bool
) -> None:
    """Convert every checkpoint MANIFEST (TOML) lists, run its hooks, push it; write report.json and report.md.

    Outputs already there with the same source and options are skipped, so a rerun finishes what an interrupted
    run left. With --executor ray each output is a Ray task; the output folder must then be storage every node
    of the cluster shares. Exits 1 if any output failed.
    """
    parsed = load_manifest(manifest, out)  # a bad manifest fails here, before any work or bar
    progress = TerminalProgress(len(parsed.outputs))
    try:
        # stdout carries the result only: what hooks, or Ray's own messages about lost workers, print goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            report = run_zoo(parsed, jobs, dry_run, progress, executor, ray_address)
    finally:
        progress.close()
    emit(report.to_json(), as_json, zoo_lines(report))
    if report.failed:
        sys.exit(1)


def zoo_lines(report: ZooReport) -> list[str]:
    lines = [f"{row.status:<13} {row.output}" + (f": {row.error}" if row.error else "") for row in report.rows]
    where = "dry run, nothing written" if report.dry_run else f"report in {report.out}/report.md"
    return lines + [f"{report.summary()} ({where})"]
