"""Mask quality of a SAM or SAM2 checkpoint: the mean IoU of predicted masks against a COCO-format data set's
instance masks, one prompt (a box, or a point inside the instance) per instance.

This is what EfficientViT-SAM's ``eval_sam_coco`` measures (the figure segment-anything PR 594 reports): per
instance the three multimask outputs are predicted, the one with the highest predicted IoU is kept, and its IoU
with the ground truth at the image's own size, in percent, is averaged over all instances (and per COCO area range:
small below 32^2 pixels, medium below 96^2, large above).

All prompts of an image go through the mask decoder as one batch (``prompt_batch`` splits them, for memory); on
CUDA the model runs in bf16 autocast, images and masks arrive in pinned memory from worker processes, and the
per-instance IoUs stay on the device: the host waits for the GPU once, at the end.
"""

from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path

import torch

from ..errors import AbswinError
from .coco import CocoInstances, Sample, parse_coco_spec
from .eval import make_loader, resolve_device
from .segmenters import Segmenter, load_segmenter

AREA_RANGES = {"small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, math.inf)}  # COCO's


def run_mask_eval(checkpoint: str | Path, data: str, img_size: int | None = None, prompt: str = "box",
                  device: str = "auto", prompt_batch: int | None = None, limit: int | None = None,
                  workers: int | None = None, progress: bool = True) -> dict:
    """``abswin-convert eval`` for a SAM or SAM2 checkpoint on ``coco:ANNOTATIONS.json[:IMAGES_DIR]``."""
    if importlib.util.find_spec("pycocotools") is None:
        raise AbswinError("the mask eval reads COCO annotations with pycocotools: pip install 'abswin-convert[masks]'")
    dataset = CocoInstances(parse_coco_spec(data), prompt)  # the data and prompt checked before the model is built
    dev = resolve_device(device)
    segmenter = load_segmenter(checkpoint, img_size)
    segmenter.to(dev)
    dataset.transform = segmenter.host_transform
    loader = make_loader(dataset, 1, dev, limit=limit, workers=workers, collate_fn=only_sample)
    metrics = evaluate_masks(segmenter, loader, dev, prompt, prompt_batch, progress)
    return {"checkpoint": str(checkpoint), "data": data, "img_size": segmenter.img_size, "prompt": prompt,
            "device": str(dev), "runtime": segmenter.runtime, **metrics}


def only_sample(batch: list[Sample]) -> Sample:
    """The loader's collate: one image per step (its instances are the batch)."""
    return batch[0]


@torch.no_grad()
def evaluate_masks(segmenter: Segmenter, loader, device: torch.device, prompt: str = "box",
                   prompt_batch: int | None = None, progress: bool = True) -> dict:
    """mIoU (percent) over every instance ``loader`` yields, overall and per area range."""
    from tqdm.auto import tqdm

    if prompt_batch is not None and prompt_batch < 1:
        raise AbswinError(f"the prompt batch must be positive, got {prompt_batch}")
    cuda = device.type == "cuda"
    ious, areas, images = [], [], 0
    start = time.perf_counter()
    for sample in tqdm(loader, desc="eval", unit="image", disable=None if progress else True, leave=False):
        image = sample.image.to(device, non_blocking=cuda)
        truth = sample.masks.to(device, non_blocking=cuda)
        prompts = sample.prompts.to(device, non_blocking=cuda)
        step = prompt_batch or len(prompts)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            segmenter.set_image(image, sample.original_size)
            for first in range(0, len(prompts), step):
                batch = prompts[first : first + step]
                masks, scores = segmenter.predict(batch if prompt == "box" else None, batch if prompt == "point" else None)
                ious.append(best_mask_iou(masks, scores, truth[first : first + step]))
        areas.append(sample.areas)
        images += 1
    if not images:
        raise AbswinError("the data holds no images to evaluate")
    iou = torch.cat(ious).cpu()  # the one sync
    seconds = time.perf_counter() - start
    return {**summarise(iou, torch.cat(areas)), "images": images, "seconds": round(seconds, 3),
            "images_per_s": round(images / seconds, 2)}


def best_mask_iou(masks: torch.Tensor, scores: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """IoU in percent (float64, on the device) of each prompt's best-scored mask ``[N, K, H, W]`` with its ground
    truth ``[N, H, W]``; an empty union counts as 0, as EfficientViT's ``iou`` does (``/ (union + 1e-7)``)."""
    best = masks[torch.arange(len(masks), device=masks.device), scores.argmax(dim=1)]
    intersection = (best & truth).flatten(1).sum(dim=1, dtype=torch.float64)
    union = (best | truth).flatten(1).sum(dim=1, dtype=torch.float64)
    return intersection / (union + 1e-7) * 100


def summarise(iou: torch.Tensor, areas: torch.Tensor) -> dict:
    """Mean IoU overall and per COCO area range (None for a range without instances), and the counts."""
    result: dict = {"miou": float(iou.mean()), "instances": len(iou)}
    for name, (low, high) in AREA_RANGES.items():
        chosen = iou[(areas >= low) & (areas < high)]
        result[f"miou_{name}"] = float(chosen.mean()) if len(chosen) else None
    return result
