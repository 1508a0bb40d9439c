"""``abswin-convert demo``: the whole path on the example checkpoint that ships with the package."""

from __future__ import annotations

import sys

import click

from .support import emit, json_option, renamed_option, user_errors


@click.command("demo", short_help="Inspect, convert, verify and evaluate the example that ships with the package.")
@renamed_option("-o", "--output", old=("--out",), param="out_dir", default=None, metavar="DIR",
                help="Keep the converted files here (default: a temp folder, deleted on exit).")
@json_option
@user_errors
def demo_command(out_dir: str | None, as_json: bool) -> None:
    """Run the whole path on the example checkpoint that ships with the package: inspect it, convert it both ways,
    check the split output against the source at the native size, load both in timm, and compare accuracy.
    Needs torch and timm (pip install 'abswin-convert[torch]' timm); the accuracy, the Fashion-MNIST files
    (apt-get install dataset-fashion-mnist).

    \b
    Examples:
      abswin-convert demo
      abswin-convert demo -o demo-outputs/ --json
    """
    from ..demo import run_demo

    report = run_demo(out_dir)
    emit(report, as_json, report["lines"])
    if not report["ok"]:
        sys.exit(1)
