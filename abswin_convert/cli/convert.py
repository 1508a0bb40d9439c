"""``abswin-convert convert``: rewrite a checkpoint's position embedding for a new input size."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .. import residual
from ..vocabulary import DEFAULT_RELPOS_RESIZE, DEFAULT_WINDOW_PART, RELPOS_RESIZES, TARGETS, WINDOW_PARTS
from .push import push_lines
from .support import (
    SIZE_METAVAR,
    emit,
    family_option,
    json_option,
    override_options,
    printable,
    quiet_downloads,
    quiet_option,
    renamed_option,
    user_errors,
)

if TYPE_CHECKING:
    from ..api import ConversionResult
    from ..io.provenance import Provenance

TARGET_HELP = (
    "baked: the same keys and layout, the embedding for the new size (build the model at that size, load strict); "
    "timm-abswin: window and global parts apart, for timm's Hiera with abs_win_pos_embed=True; "
    "sam2: a Hiera image checkpoint as a SAM2 image-encoder trunk."
)


@click.command("convert", short_help="Rewrite a checkpoint's position embedding for a new input size.")
@click.argument("source")
@click.option("-o", "--output", required=True, metavar="PATH",
              help="Output weight file, or a folder (model.safetensors, and config.json when the source had one).")
@click.option("--img-size", default=None, metavar=SIZE_METAVAR,
              help="Target input size in pixels, e.g. 448 or 448x640 (default with --window-size: the model's own).")
@renamed_option("--target", old=("--to",), param="target", type=click.Choice(TARGETS), default="baked",
                show_default=True, help=TARGET_HELP)
@click.option("--global-size", default="full", show_default=True, metavar="full|GHxGW",
              help="full keeps the whole global part (exact); GHxGW refits it on a smaller grid and reports the residual.")
@click.option("--format", "fmt", type=click.Choice(["safetensors", "pt"]), default=None,
              help="Output format; default: from the output's suffix (.pt/.pth/.bin: pt), else safetensors.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--ema/--no-ema", default=None,
              help="Training checkpoints with an EMA copy: which one a safetensors output holds (default: EMA, as timm).")
@click.option("--window-size", default=None, metavar="N|8,4,16,8",
              help="Change the attention window (SAM, ViTDet: N tokens; SAM2: one per stage). Changes what the model "
                   "computes at its own size; the measured change is recorded.")
@click.option("--relpos-resize", type=click.Choice(RELPOS_RESIZES), default=None,
              help=f"With --window-size: resize the windowed blocks' relative-position tables as get_rel_pos does, or "
                   f"with align_corners=True as segment-anything PR 594 does [default: {DEFAULT_RELPOS_RESIZE}].")
@click.option("--window-part", type=click.Choice(WINDOW_PARTS), default=None,
              help=f"With --window-size: keep the embedding's window part where it is (PR 594), or rewindow it (resized "
                   f"to the new window and tiled with it) [default: {DEFAULT_WINDOW_PART}].")
@click.option("--push-to", default=None, metavar="ORG/NAME", help="Then push the output to this Hub repo (see `push`).")
@family_option
@override_options
@quiet_option
@json_option
@user_errors
def convert_command(
    source: str, output: str, img_size: str | None, target: str, global_size: str, fmt: str | None, force: bool,
    family: str | None, as_json: bool, quiet: bool, push_to: str | None, ema: bool | None, window_size: str | None,
    relpos_resize: str | None, window_part: str | None, **overrides: object,
) -> None:
    """Rewrite SOURCE's position embedding for --img-size and write it to --output.

    SOURCE is a weight file (.safetensors, .pth/.pt/.bin, detectron2 .pkl), a folder holding one (and its
    config.json), or a Hugging Face Hub name: org/repo, org/repo@revision or hf://org/repo/path/in/repo.
    At the checkpoint's own size the output is the input; the notes printed after say what to change in the
    code that builds the model.

    \b
    Examples:
      abswin-convert convert timm/hiera_tiny_224.mae_in1k_ft_in1k -o hiera-448/ --img-size 448
      abswin-convert convert ./hiera-folder/ -o hiera-abswin/ --img-size 448x640 --target timm-abswin
      abswin-convert convert sam_vit_b_01ec64.pth -o sam_vit_b_1536.pth --img-size 1536
      abswin-convert convert sam_vit_l_0b3195.pth -o sam_vit_l_w16.pth --window-size 16
    """
    from ..api import convert

    quiet_downloads(quiet)
    from ..families.overrides import Overrides

    if push_to:  # a push that cannot happen is refused before the conversion, not after it
        from ..hub.push import check_push_target

        check_push_target(push_to)
    result = convert(source, output, img_size, target=target, global_size=global_size, fmt=fmt, force=force,
                     family=family, overrides=Overrides.parse(**overrides), ema=ema,  # type: ignore[arg-type]
                     progress=not quiet, window_size=window_size, relpos_resize=relpos_resize, window_part=window_part)
    lines = [
        f"wrote {result.output}" + (f" and {result.config}" if result.config else ""),
        _what_was_done(result.provenance),
    ] + [f"  note: {n}" for n in result.notes] + _load_lines(result)
    for warning in result.warnings:
        click.echo(printable(f"abswin-convert: warning: {warning}"), err=True)
    report = result.to_json()
    if push_to:
        from ..hub.push import push

        pushed = push(output if Path(output).is_dir() else result.output, push_to)
        report["push"] = pushed.to_json()
        lines += push_lines(pushed)
    emit(report, as_json, lines)


def _what_was_done(record: Provenance) -> str:
    """The family read, the target written and how well the global part fits, in one line."""
    from ..io.provenance import NO_GLOBAL_PART, ONE_WINDOW
    from ..maths.grid import format_size

    done = record.conversion
    assert done is not None and record.img_size is not None  # a conversion records both
    global_size = NO_GLOBAL_PART if done.global_size is None else format_size(done.global_size)
    energy = ONE_WINDOW if done.window_energy is None else f"{done.window_energy:.3f}"
    new_window = f" -> {record.window_change.window_size}" if record.window_change else ""  # --window-size
    return (f"  {done.family} ({done.spelling}) -> {done.target} at {format_size(record.img_size)}: "
            f"window {format_size(done.window)}{new_window}, global {global_size}, residual {residual.in_words(done.residual)}, "
            f"window energy {energy}")


def _load_lines(result: ConversionResult) -> list[str]:
    """The line that loads the output as it is (timm ``local-dir:`` or the file named, transformers
    ``from_pretrained``), where one works; a single file says what it leaves out of a folder's config.json."""
    from ..hub.model_card import loading_code, timm_file_code
    from ..maths.grid import format_size

    provenance = result.provenance
    if result.config is not None:
        code = loading_code(provenance, str(result.config.parent), on_hub=False, config=result.model_config,
                            weights_name=result.output.name)
        return [f"  load: {_one_line(code)}"] if code else []
    if result.model_config is None:
        return []
    code = timm_file_code(provenance, result.model_config, str(result.output))
    size = format_size(provenance.img_size) if provenance.img_size else "the new size"
    lines = [f"  note: config.json (for {size}) is written only when -o names a folder"]
    return lines + ([f"  load: {_one_line(code)}"] if code else [])


def _one_line(code: str) -> str:
    """Python code as one line a user can paste (its imports included)."""
    return "; ".join(line for line in code.splitlines() if line.strip())
