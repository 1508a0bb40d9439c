"""``abswin-convert inspect``: what a checkpoint is, and how window-periodic its position embedding is."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .support import SIZE_METAVAR, emit, family_option, json_option, override_options, user_errors

if TYPE_CHECKING:
    from ..api import InspectReport


@click.command("inspect", short_help="Say what a checkpoint is and whether naive interpolation would break it.")
@click.argument("source")
@family_option
@override_options
@click.option("--plot", "plot_path", default=None, metavar="OUT.png",
              help="Also draw the embedding with its windows, and what naive interpolation and absolute win make of it "
                   "at --img-size (needs matplotlib: pip install 'abswin-convert[plot]').")
@click.option("--img-size", default=None, metavar=SIZE_METAVAR,
              help="The size --plot compares at; default: twice the native size.")
@click.option("--force", is_flag=True, help="Overwrite an existing --plot file.")
@json_option
@user_errors
def inspect_command(source: str, family: str | None, as_json: bool, plot_path: str | None, img_size: str | None,
                    force: bool, **overrides: object) -> None:
    """Report SOURCE's family, format, position grid, window and window energy: how much of the embedding
    repeats in every window, which naive interpolation breaks.

    SOURCE is a weight file, a folder holding one (and its config.json), or a Hugging Face Hub name:
    org/repo, org/repo@revision or hf://org/repo/path/in/repo.

    \b
    Examples:
      abswin-convert inspect timm/hiera_tiny_224.mae_in1k_ft_in1k
      abswin-convert inspect ./sam-vit-base/ --plot sam.png --img-size 1536
      abswin-convert inspect model_final_61ccd1.pkl --json
    """
    from ..api import inspect
    from ..families.overrides import Overrides

    if plot_path is not None:  # the picture's name and place are checked before any work
        from ..io.files import check_destination
        from ..plot import plot_format

        plot_format(Path(plot_path))
        check_destination(Path(plot_path), [], force)

    parsed = Overrides.parse(**overrides)  # type: ignore[arg-type]
    report = inspect(source, family, parsed)
    data, lines = report.to_json(), inspect_lines(report)
    if plot_path:
        from ..plot import plot_checkpoint

        data["plot"] = str(plot_checkpoint(source, plot_path, family, parsed, img_size=img_size))
        lines.append(f"plot           {data['plot']}")
    emit(data, as_json, lines)


def inspect_lines(r: InspectReport) -> list[str]:
    from ..io.checkpoint import describe_wrapper

    wrapper = describe_wrapper(tuple(r.wrapper.split(".")) if r.wrapper else ())
    hub = r.hub
    chosen = [f"hub            {hub['repo_id']}@{hub['revision']}: chose {hub['filename']} at commit {hub['commit']}"
              ] if hub else []
    return [
        *chosen,
        f"file           {r.file}",
        f"family         {r.family} ({r.format} format), {r.container} {wrapper}, {r.tensors} tensors",
        f"position       {r.position_key} {r.position_shape} {r.position_dtype} ({r.layout})",
        f"grid           {r.grid} tokens + {r.prefix_tokens} prefix, window {r.window}, "
        f"patch stride {r.patch_stride}, native input {r.native_input}",
        _energy_line(r),
        f"convert        targets {', '.join(r.targets)}; global part resized with {r.resize}",
    ]


def _energy_line(r: InspectReport) -> str:
    from ..maths.absolute_win import periodicity_verdict

    if r.window_energy is None or r.chance_share is None or r.window_energy_normalized is None:
        return f"window energy  undefined: the {r.window} window covers the whole grid (global attention)"
    return (f"window energy  {r.window_energy:.3f} (chance {r.chance_share:.3f}; normalised "
            f"{r.window_energy_normalized:.3f}: {periodicity_verdict(r.window_energy_normalized)})")
