"""``abswin-convert zoo``: run a whole manifest of conversions, with progress on a terminal and a report."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

import click

from ..vocabulary import EXECUTORS
from .support import emit, json_option, renamed_option, user_errors

if TYPE_CHECKING:
    from ..zoo import ZooReport


@click.command("zoo", short_help="Convert, check and push every checkpoint a manifest lists.")
@click.argument("manifest")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=2, show_default=True,
              help="Entries (local) or outputs (ray) run at once.")
@renamed_option("-o", "--output", old=("--out",), param="out", default=None,
                help="Output folder (default: the manifest's `out`, else ./converted beside it).")
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

    \b
    The manifest (every entry key but source and img_size is optional; [defaults] holds any of them):
      [defaults]
      target = "baked"                  # baked | timm-abswin | sam2
      out = "converted"                 # the output folder
      [[model]]
      source = "org/repo@main"          # a Hub name, hf://org/repo@rev/file, or a local path
      name = "hiera"                    # the output folders' prefix (default: from the source)
      img_size = [448, "448x640"]       # one output per size
      global_size = "full"              # or "GHxGW"
      format = "safetensors"            # or "pt"
      push_to = "org/{name}_{size}"     # {size}, {target}, {name} are filled in; private = true
      hooks = ["verify", {name = "eval", data = "fashion-mnist"}]  # or "package.module:function"
      family, key, layout, window, patch_stride, recipe = "tile"  # as convert's flags
      window_size = 16                  # --window-size; relpos_resize, window_part as convert's flags
      resources = {num_gpus = 1}        # --executor ray: num_cpus, num_gpus, memory, custom

    \b
    Examples:
      abswin-convert zoo zoo.toml --dry-run
      abswin-convert zoo zoo.toml -o converted/ --jobs 4
      abswin-convert zoo zoo.toml --executor ray --ray-address HEAD:6379 -o /shared/converted --jobs 16
    """
    from ..zoo import load_manifest, run_zoo
    from .zoo_progress import terminal_progress

    parsed = load_manifest(manifest, out)  # a bad manifest fails here, before any work or bar
    progress = terminal_progress(len(parsed.outputs))
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
