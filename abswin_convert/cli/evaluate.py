"""``abswin-convert eval`` and ``abswin-convert finetune``: parse, call the hooks library, print."""

from __future__ import annotations

import click

from .support import emit, json_option, quiet_option, renamed_option, user_errors

DATA_HELP = (
    "fashion-mnist[:PATH] (the idx files; default /usr/share/datasets/fashion-mnist) or imagefolder:PATH "
    "(a folder per class; train/ and val/ inside are used per split)."
)
device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                             help="auto: cuda when there is one.")
eval_limit_option = renamed_option("--eval-limit", old=("--limit",), param="eval_limit", type=click.IntRange(min=1),
                                   default=None, metavar="K", help="Evaluate on the first K images only.")


def square_size(checkpoint: str, img_size: str | None) -> int:
    """``--img-size`` as one side in pixels; without it, the size the checkpoint was converted for."""
    from ..errors import AbswinError
    from ..evaluation.hooks import converted_size
    from ..maths.grid import format_size, parse_size

    if img_size is None:
        return converted_size(checkpoint)
    h, w = parse_size(img_size)
    if h != w:
        raise AbswinError(f"eval and finetune build square models; pass a square --img-size such as {max(h, w)}, "
                          f"not {format_size((h, w))}")
    return h


@click.command("eval", short_help="Top-1 of a classifier, or mask mIoU of a SAM/SAM2 on COCO-format data.")
@click.argument("checkpoint")
@click.option("--data", required=True, metavar="SPEC", help=DATA_HELP + " For SAM and SAM2: coco:ANNOTATIONS.json[:IMAGES_DIR] "
              "(instance masks; images default to the JSON's folder).")
@click.option("--img-size", default=None, metavar="N",
              help="Side of the square input in pixels; default: the size the checkpoint was converted for "
                   "(a SAM or SAM2 source: the size its weights are for).")
@click.option("--prompt", type=click.Choice(["box", "point"]), default=None,
              help="SAM/SAM2: one box per instance (default), or one point inside it (the farthest from its edge).")
@device_option
@click.option("--batch-size", default=None, type=click.IntRange(min=1),
              help="Images per batch (classifiers, default 64); prompts per batch (SAM/SAM2, default all of an image's).")
@eval_limit_option
@quiet_option
@json_option
@user_errors
def eval_command(checkpoint: str, data: str, img_size: str | None, prompt: str | None, device: str, batch_size: int | None,
                 eval_limit: int | None, quiet: bool, as_json: bool) -> None:
    """Top-1 accuracy and loss of CHECKPOINT, a folder with config.json (timm, official Hiera or transformers),
    built and preprocessed as that config says, at --img-size.

    With --data coco:..., CHECKPOINT is a segment-anything .pth or sam2 .pt (converted or not), built from its
    weights: the mean IoU (percent) of its masks against the instance masks, one prompt per instance, the best of
    its three masks by predicted IoU (as EfficientViT-SAM's eval_sam_coco measures it).

    \b
    Examples:
      abswin-convert eval hiera-128/ --data fashion-mnist
      abswin-convert eval hiera-128/ --data imagefolder:./pets --img-size 256 --eval-limit 500
      abswin-convert eval sam_vit_b_1536.pth --data coco:annotations/instances_val2017.json:val2017
    """
    from ..evaluation.coco import is_coco_spec
    from ..evaluation.eval import run_eval

    masks = is_coco_spec(data)
    # a SAM or SAM2 source records no size: the mask eval then takes the one its weights are for
    size = None if masks and img_size is None else square_size(checkpoint, img_size)
    r = run_eval(checkpoint, data, size, device, batch_size, eval_limit, progress=not quiet, prompt=prompt)
    if masks:
        ranges = "  ".join(f"{name} {_percent(r[f'miou_{name}'])}" for name in ("small", "medium", "large"))
        lines = [
            f"{r['checkpoint']} ({r['runtime']}) at {r['img_size']} px on {r['data']}, {r['images']} images, "
            f"{r['instances']} instances, {r['prompt']} prompts, {r['device']}",
            f"  mIoU {r['miou']:.2f}  ({ranges})  ({r['images_per_s']:.1f} images/s)",
        ]
    else:
        lines = [
            f"{r['checkpoint']} ({r['runtime']}) at {size} px on {r['data']}, {r['images']} images, {r['device']}",
            f"  top-1 {r['top1']:.4f}  loss {r['loss']:.4f}  ({r['images_per_s']:.0f} images/s)",
        ]
    emit(r, as_json, lines)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@click.command("finetune", short_help="Finetune a timm Hiera at a new size (naive or absolute win), evaluate, save.")
@click.argument("checkpoint")
@click.option("--data", required=True, metavar="SPEC", help=DATA_HELP)
@click.option("--img-size", default=None, metavar="N",
              help="Side of the square input in pixels; default: the size the checkpoint was converted for.")
@click.option("--steps", required=True, type=click.IntRange(min=0), help="Optimizer steps.")
@click.option("--pos", type=click.Choice(["naive", "abswin"]), required=True,
              help="Start from the naive-resized embedding, or from absolute win (window and global trained apart).")
@click.option("-o", "--output", required=True, metavar="PATH", help="Output folder (model.safetensors + config.json).")
@click.option("--lr", default=1e-4, show_default=True, type=float, help="AdamW learning rate.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1),
              help="Training images per step (eval uses at least 64).")
@device_option
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the model's new parameters and the data order.")
@eval_limit_option
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@quiet_option
@json_option
@user_errors
def finetune_command(checkpoint: str, data: str, img_size: str | None, steps: int, pos: str, output: str, lr: float,
                     batch_size: int, device: str, seed: int, eval_limit: int | None, force: bool, quiet: bool,
                     as_json: bool) -> None:
    """Finetune CHECKPOINT (a timm Hiera folder) at --img-size for --steps with AdamW, evaluate it, and write it to
    --output.

    \b
    Examples:
      abswin-convert finetune hiera-128/ --data fashion-mnist --steps 200 --pos abswin -o hiera-128-ft/
      abswin-convert finetune hiera-128/ --data fashion-mnist --img-size 128 --steps 200 --pos naive -o naive-ft/
    """
    from ..evaluation.finetune import run_finetune

    size = square_size(checkpoint, img_size)
    r = run_finetune(checkpoint, data, size, steps, pos, output, lr, batch_size, device, seed, eval_limit, force,
                     progress=not quiet)
    emit(r, as_json, [
        f"finetuned {r['checkpoint']} at {size} px from {pos}: {steps} steps, lr {lr}, batch {batch_size}, {r['device']}"
        + (f" ({r['steps_per_s']:.2f} steps/s, mean train loss {r['train_loss']:.4f})" if steps else ""),
        f"  eval on {r['images']} images: top-1 {r['top1']:.4f}  loss {r['loss']:.4f}",
        f"wrote {r['output']}",
    ])
