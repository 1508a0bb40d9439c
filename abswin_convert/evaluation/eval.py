"""Top-1 accuracy and cross-entropy of a classification checkpoint at a requested input size.

On CUDA the loop runs in bf16 autocast with channels_last inputs, reads pinned host memory, and keeps its
counters on the device: the host waits for the GPU once, at the end, not once per batch.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from ..errors import AbswinError
from .classifier import Classifier, load_classifier
from .data import open_dataset


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise AbswinError(f"unknown device {name!r}; use auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AbswinError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


def make_loader(dataset, batch_size: int, device: torch.device, *, shuffle: bool = False, seed: int = 0,
                limit: int | None = None, workers: int | None = None, collate_fn=None) -> DataLoader:
    """A loader of uint8 batches (``collate_fn`` makes them); pinned memory and worker processes on CUDA, none on
    CPU."""
    if limit is not None:
        if limit <= 0:
            raise AbswinError(f"--eval-limit must be positive, got {limit}")
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    cuda = device.type == "cuda"
    workers = (4 if cuda else 0) if workers is None else workers
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=shuffle,
        num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0, collate_fn=collate_fn,
    )


def prepare(classifier: Classifier, device: torch.device) -> Classifier:
    """Move the model to ``device``; channels_last on CUDA."""
    classifier.model.to(device)
    if device.type == "cuda":
        classifier.model.to(memory_format=torch.channels_last)
    return classifier


def batch_inputs(classifier: Classifier, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 host batch -> normalised input on ``device`` (channels_last on CUDA)."""
    cuda = device.type == "cuda"
    x = classifier.preprocess.normalize(images.to(device, non_blocking=cuda))
    return x.contiguous(memory_format=torch.channels_last) if cuda else x


@torch.no_grad()
def evaluate(classifier: Classifier, loader: DataLoader, device: torch.device, progress: bool = True) -> dict:
    """Accuracy and mean loss over ``loader``; one host/device sync in all."""
    from tqdm.auto import tqdm

    classifier.model.eval()
    cuda = device.type == "cuda"
    correct = torch.zeros((), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    start = time.perf_counter()
    # disable=None: a bar on a terminal, nothing in pipes and logs.
    for images, labels in tqdm(loader, desc="eval", unit="batch", disable=None if progress else True, leave=False):
        x = batch_inputs(classifier, images, device)
        y = labels.to(device, non_blocking=cuda)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            logits = classifier(x)
        if not cuda:  # on CUDA this check would cost a sync per batch; cross_entropy's device assert covers it
            _check_classes(logits, int(y.max()))
        correct += (logits.argmax(dim=1) == y).sum()
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        count += len(labels)
    if count == 0:
        raise AbswinError("the data holds no images to evaluate")
    top1, loss = float(correct) / count, float(loss_sum) / count  # the one sync
    seconds = time.perf_counter() - start
    return {"top1": top1, "loss": loss, "images": count, "seconds": round(seconds, 3), "images_per_s": round(count / seconds, 1)}


def _check_classes(logits: torch.Tensor, max_label: int) -> None:
    if max_label >= logits.shape[1]:
        raise AbswinError(
            f"the data has label {max_label} but the model has {logits.shape[1]} classes; is this the right data set?"
        )


def run_eval(checkpoint: str | Path, data: str, img_size: int | None = None, device: str = "auto",
             batch_size: int | None = None, limit: int | None = None, workers: int | None = None, progress: bool = True,
             prompt: str | None = None) -> dict:
    """``abswin-convert eval``: a classifier's top-1 on ``fashion-mnist:``/``imagefolder:`` data (``batch_size``
    images per batch, default 64), or a SAM/SAM2 checkpoint's mask mIoU on ``coco:`` data (``prompt`` box or point;
    ``batch_size`` prompts per batch, default all of an image's). ``img_size`` defaults to the size the checkpoint
    was converted for (a SAM source: the size its weights are for)."""
    from .coco import is_coco_spec
    from .hooks import converted_size, recorded_size

    if is_coco_spec(data):
        from .masks import run_mask_eval

        size = img_size if img_size is not None else recorded_size(checkpoint)
        return run_mask_eval(checkpoint, data, size, prompt or "box", device, batch_size, limit, workers, progress)
    if prompt is not None:
        raise AbswinError("--prompt is for the mask eval of SAM and SAM2 (--data coco:ANNOTATIONS.json)")
    size = img_size if img_size is not None else converted_size(checkpoint)
    dev = resolve_device(device)
    classifier = prepare(load_classifier(checkpoint, size), dev)
    dataset = open_dataset(data, "eval", classifier.preprocess.geometry)
    loader = make_loader(dataset, batch_size or 64, dev, limit=limit, workers=workers)
    metrics = evaluate(classifier, loader, dev, progress)
    return {"checkpoint": str(checkpoint), "data": data, "img_size": size, "device": str(dev),
            "runtime": classifier.runtime, **metrics}
