"""``abswin-convert eval`` and ``abswin-convert finetune``: parse, call the hooks library, print."""

from __future__ import annotations

import click

from .support import emit, json_option, user_errors

DATA_HELP = "fashion-mnist:PATH (idx files, e.g. /usr/share/datasets/fashion-mnist) or imagefolder:PATH (a folder per class)."
device_option = click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")


@click.command("eval")
@click.argument("checkpoint")
@click.option("--data", required=True, help=DATA_HELP)
@click.option("--img-size", required=True, type=int, help="Input size in pixels (square).")
@device_option
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--limit", default=None, type=int, help="Evaluate only the first K images.")
@json_option
@user_errors
def eval_command(checkpoint: str, data: str, img_size: int, device: str, batch_size: int, limit: int | None, as_json: bool) -> None:
    """Top-1 accuracy and loss of CHECKPOINT (a folder with config.json) at --img-size."""
    from ..evaluation.eval import run_eval

    r = run_eval(checkpoint, data, img_size, device, batch_size, limit)
    emit(r, as_json, [
        f"{r['checkpoint']} ({r['runtime']}) at {img_size} px on {r['data']}, {r['images']} images, {r['device']}",
        f"  top-1 {r['top1']:.4f}  loss {r['loss']:.4f}  ({r['images_per_s']:.0f} images/s)",
    ])


@click.command("finetune")
@click.argument("checkpoint")
@click.option("--data", required=True, help=DATA_HELP)
@click.option("--img-size", required=True, type=int, help="Target input size in pixels (square).")
@click.option("--steps", required=True, type=int, help="Optimizer steps.")
@click.option("--pos", type=click.Choice(["naive", "abswin"]), required=True,
              help="Start from the naive-resized embedding, or from absolute win (window and global trained apart).")
@click.option("-o", "--output", required=True, help="Output folder (model.safetensors + config.json).")
@click.option("--lr", default=1e-4, show_default=True, type=float)
@click.option("--batch-size", default=32, show_default=True, type=int)
@device_option
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--eval-limit", default=None, type=int, help="Evaluate on the first K images only.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@json_option
@user_errors
def finetune_command(checkpoint: str, data: str, img_size: int, steps: int, pos: str, output: str, lr: float,
                     batch_size: int, device: str, seed: int, eval_limit: int | None, force: bool, as_json: bool) -> None:
    """Finetune CHECKPOINT at --img-size for --steps, evaluate it, and write it to --output."""
    from ..evaluation.finetune import run_finetune

    r = run_finetune(checkpoint, data, img_size, steps, pos, output, lr, batch_size, device, seed, eval_limit, force)
    emit(r, as_json, [
        f"finetuned {r['checkpoint']} at {img_size} px from {pos}: {steps} steps, lr {lr}, batch {batch_size}, {r['device']}"
        + (f" ({r['steps_per_s']:.2f} steps/s, mean train loss {r['train_loss']:.4f})" if steps else ""),
        f"  eval on {r['images']} images: top-1 {r['top1']:.4f}  loss {r['loss']:.4f}",
        f"wrote {r['output']}",
    ])
