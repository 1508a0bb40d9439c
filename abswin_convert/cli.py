"""The ``abswin-convert`` command: each command parses, calls the library, prints. No maths here."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .cli_support import emit, family_option, json_option, override_options, user_errors
from .families.base import TARGETS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="abswin-convert")
def main() -> None:
    """Convert window-attention ViT checkpoints to absolute-win position embeddings for a new input size."""


@main.command("inspect")
@click.argument("source")
@family_option
@override_options
@click.option("--plot", "plot_path", default=None, metavar="OUT.png", help="Also draw the embedding and its window part.")
@json_option
@user_errors
def inspect_command(source: str, family: str | None, as_json: bool, plot_path: str | None, **overrides) -> None:
    """Report a checkpoint's family, format, position grid, window and window energy."""
    from .convert import inspect
    from .families.generic import Overrides

    report = inspect(source, family, Overrides.parse(**overrides))
    lines = inspect_lines(report)
    if plot_path:
        from .plot import plot_checkpoint

        report["plot"] = str(plot_checkpoint(source, plot_path, family, Overrides.parse(**overrides)))
        lines.append(f"plot           {report['plot']}")
    emit(report, as_json, lines)


def inspect_lines(r: dict) -> list[str]:
    wrapper = f"{{'{r['wrapper']}': ...}}" if r["wrapper"] else "flat"
    hub = r.get("hub")
    chosen = [f"hub            {hub['repo_id']}@{hub['revision']}: chose {hub['filename']} at commit {hub['commit']}"] if hub else []
    return chosen + [
        f"file           {r['file']}",
        f"family         {r['family']} ({r['format']} format), {r['container']} {wrapper}, {r['tensors']} tensors",
        f"position       {r['position_key']} {r['position_shape']} {r['position_dtype']} ({r['layout']})",
        f"grid           {r['grid']} tokens + {r['prefix_tokens']} prefix, window {r['window']}, "
        f"patch stride {r['patch_stride']}, native input {r['native_input']}",
        f"window energy  {r['window_energy']:.3f} (chance {r['chance_share']:.3f}; normalised "
        f"{r['window_energy_normalized']:.3f}: {_energy_verdict(r['window_energy_normalized'])})",
        f"convert        targets {', '.join(r['targets'])}; global part resized with {r['resize']}",
    ]


def _energy_verdict(normalized: float) -> str:
    if normalized > 0.2:
        return "window-periodic, naive interpolation will break it"
    if normalized > 0.05:
        return "partly window-periodic"
    return "no window pattern to speak of"


@main.command("convert")
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
    source: str, output: str, img_size: str, target: str, global_size: str, fmt: str | None, force: bool, family: str | None, as_json: bool,
    push_to: str | None, **overrides,
) -> None:
    """Rewrite SOURCE's position embedding for --img-size and write it to --output."""
    from .convert import convert
    from .families.generic import Overrides

    result = convert(source, output, img_size, target, global_size, fmt, force, family, overrides=Overrides.parse(**overrides))
    stats = {k.split(".", 1)[1]: v for k, v in result.metadata.items() if k.startswith("abswin.")}
    lines = [
        f"wrote {result.output}" + (f" and {result.config}" if result.config else ""),
        f"  {stats['family']} ({stats['format']}) -> {stats['target']} at {stats['img_size']}: window {stats['window']}, "
        f"global {stats['global_size']}, residual {float(stats['residual']):.2e}, window energy {float(stats['window_energy']):.3f}",
    ] + [f"  note: {n}" for n in result.notes]
    report = result.to_json()
    if push_to:
        from .push import push
        from .push_cli import push_lines

        pushed = push(output if Path(output).is_dir() else result.output, push_to)
        report["push"] = pushed.to_json()
        lines += push_lines(pushed)
    emit(report, as_json, lines)


@main.command("demo")
@click.option("--out", "out_dir", default=None, help="Keep the converted files here (default: a temp folder).")
@json_option
@user_errors
def demo_command(out_dir: str | None, as_json: bool) -> None:
    """Run the whole path on the example checkpoint that ships with the package."""
    from .demo import run_demo

    report = run_demo(out_dir)
    emit(report, as_json, report["lines"])
    if not report["ok"]:
        sys.exit(1)

from .eval_cli import eval_command, finetune_command  # noqa: E402

main.add_command(eval_command)
main.add_command(finetune_command)

from .push_cli import push_command  # noqa: E402

main.add_command(push_command)

from .zoo_cli import zoo_command  # noqa: E402

main.add_command(zoo_command)
