"""``abswin-convert convert``: rewrite a checkpoint's position embedding for a new input size."""

from __future__ import annotations

from pathlib import Path

import click

from ..families.base import TARGETS
from .push import push_lines
from .support import emit, family_option, json_option, override_options, user_errors


@click.command("convert")
@click.argument("source")
@click.option("-o", "--output", required=True, help="Output weight file, or a folder (gets config.json too).")
@click.option("--img-size", required=True, help="Target input size, N or HxW (e.g. 448 or 448x640).")
@click.option("--to", "target", type=click.Choice(TARGETS), default="baked", show_default=True)
@click.option("--global-size", default="full", show_default=True, help="'full' (exact) or GHxGW to refit the global part.")
@click.option("--format", "fmt", type=click.Choice(["safetensors", "pt"]), default=None,
              help="Output format; default: from the output's suffix (.pt/.pth/.bin: pt), else safetensors.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--push-to", default=None, metavar="ORG/NAME", help="Then push the output to this Hub repo (see `push`).")
@family_option
@override_options
@json_option
@user_errors
def convert_command(
    source: str, output: str, img_size: str, target: str, global_size: str, fmt: str | None, force: bool,
    family: str | None, as_json: bool, push_to: str | None, **overrides: object,
) -> None:
    """Rewrite SOURCE's position embedding for --img-size and write it to --output."""
    from ..api import convert
    from ..families.overrides import Overrides
    from ..io.provenance import read_provenance

    if push_to:  # a push that cannot happen is refused before the conversion, not after it
        from ..hub.push import check_push_target

        check_push_target(push_to)
    result = convert(source, output, img_size, target=target, global_size=global_size, fmt=fmt, force=force,
                     family=family, overrides=Overrides.parse(**overrides))  # type: ignore[arg-type]
    stats = read_provenance(result.metadata)
    lines = [
        f"wrote {result.output}" + (f" and {result.config}" if result.config else ""),
        f"  {stats['family']} ({stats['format']}) -> {stats['target']} at {stats['img_size']}: window {stats['window']}, "
        f"global {stats['global_size']}, residual {float(stats['residual']):.2e}, window energy {float(stats['window_energy']):.3f}",
    ] + [f"  note: {n}" for n in result.notes]
    report = result.to_json()
    if push_to:
        from ..hub.push import push

        pushed = push(output if Path(output).is_dir() else result.output, push_to)
        report["push"] = pushed.to_json()
        lines += push_lines(pushed)
    emit(report, as_json, lines)
