"""``abswin-convert demo``: the whole path on the example checkpoint that ships with the package."""

from __future__ import annotations

import sys

import click

from .support import emit, json_option, user_errors


@click.command("demo")
@click.option("--out", "out_dir", default=None, help="Keep the converted files here (default: a temp folder).")
@json_option
@user_errors
def demo_command(out_dir: str | None, as_json: bool) -> None:
    """Run the whole path on the example checkpoint that ships with the package."""
    from ..demo import run_demo

    report = run_demo(out_dir)
    emit(report, as_json, report["lines"])
    if not report["ok"]:
        sys.exit(1)
