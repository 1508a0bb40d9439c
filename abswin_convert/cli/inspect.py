"""``abswin-convert inspect``: what a checkpoint is, and how window-periodic its position embedding is."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .support import emit, family_option, json_option, override_options, user_errors

if TYPE_CHECKING:
    from ..api import InspectReport


@click.command("inspect")
@click.argument("source")
@family_option
@override_options
@click.option("--plot", "plot_path", default=None, metavar="OUT.png", help="Also draw the embedding and its window part.")
@click.option("--force", is_flag=True, help="Overwrite an existing --plot file.")
@json_option
@user_errors
def inspect_command(
    source: str, family: str | None, as_json: bool, plot_path: str | None, force: bool, **overrides: object
) -> None:
    """Report a checkpoint's family, format, position grid, window and window energy."""
    from ..api import inspect
    from ..families.overrides import Overrides

    if plot_path is not None:  # the picture's name and place are checked before any work
        from ..io.writer import check_destination
        from ..plot import plot_format

        plot_format(Path(plot_path))
        check_destination(Path(plot_path), [], force)

    parsed = Overrides.parse(**overrides)  # type: ignore[arg-type]
    report = inspect(source, family, parsed)
    data, lines = report.to_json(), inspect_lines(report)
    if plot_path:
        from ..plot import plot_checkpoint

        data["plot"] = str(plot_checkpoint(source, plot_path, family, parsed))
        lines.append(f"plot           {data['plot']}")
    emit(data, as_json, lines)


def inspect_lines(r: InspectReport) -> list[str]:
    wrapper = f"{{'{r.wrapper}': ...}}" if r.wrapper else "flat"
    hub = r.hub
    chosen = [f"hub            {hub['repo_id']}@{hub['revision']}: chose {hub['filename']} at commit {hub['commit']}"] if hub else []
    return [
        *chosen,
        f"file           {r.file}",
        f"family         {r.family} ({r.format} format), {r.container} {wrapper}, {r.tensors} tensors",
        f"position       {r.position_key} {r.position_shape} {r.position_dtype} ({r.layout})",
        f"grid           {r.grid} tokens + {r.prefix_tokens} prefix, window {r.window}, "
        f"patch stride {r.patch_stride}, native input {r.native_input}",
        f"window energy  {r.window_energy:.3f} (chance {r.chance_share:.3f}; normalised "
        f"{r.window_energy_normalized:.3f}: {energy_verdict(r.window_energy_normalized)})",
        f"convert        targets {', '.join(r.targets)}; global part resized with {r.resize}",
    ]


def energy_verdict(normalized: float) -> str:
    if normalized > 0.2:
        return "window-periodic, naive interpolation will break it"
    if normalized > 0.05:
        return "partly window-periodic"
    return "no window pattern to speak of"
