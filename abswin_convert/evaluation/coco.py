"""COCO-format instance masks for the mask eval: ``coco:ANNOTATIONS.json[:IMAGES_DIR]``.

The annotations are read with pycocotools (polygons, RLE and uncompressed RLE alike); ``IMAGES_DIR`` (default: the
folder of the JSON file) holds each image's ``file_name``. Every instance with an area of at least one pixel is a
sample, as in EfficientViT-SAM's ``eval_sam_coco``: its box prompt is the annotation's ``bbox``, its point prompt
the instance pixel farthest from the background (the first one in row-major order where several are), which is
that script's first click. Images without such an instance are skipped. Files that leave out ``area`` or ``bbox``
get them from the mask.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import AbswinError

KIND = "coco"
PROMPTS = ("box", "point")


@dataclass(frozen=True)
class CocoSpec:
    annotations: Path
    images: Path

    def __str__(self) -> str:
        return f"{KIND}:{self.annotations}:{self.images}"


def is_coco_spec(spec: str) -> bool:
    return spec.partition(":")[0] == KIND


def parse_coco_spec(spec: str) -> CocoSpec:
    """``coco:ANNOTATIONS.json`` or ``coco:ANNOTATIONS.json:IMAGES_DIR``."""
    _, _, rest = spec.partition(":")
    annotations, _, images = rest.partition(":")
    if not annotations.endswith(".json"):
        raise AbswinError(f"cannot read data spec {spec!r}; write coco:ANNOTATIONS.json[:IMAGES_DIR]")
    path = Path(annotations)
    if not path.is_file():
        raise AbswinError(f"annotations file {path} does not exist")
    folder = Path(images) if images else path.parent
    if not folder.is_dir():
        raise AbswinError(f"images folder {folder} does not exist")
    return CocoSpec(path, folder)


@dataclass
class Sample:
    """One image (uint8, as the segmenter's host transform leaves it) and its instances."""

    image: torch.Tensor
    original_size: tuple[int, int]  # (H, W)
    masks: torch.Tensor  # [N, H, W] bool
    prompts: torch.Tensor  # float pixels: boxes [N, 4] (x0 y0 x1 y1) or points [N, 2] (x y)
    areas: torch.Tensor  # [N] the annotations' areas

    def pin_memory(self) -> Sample:
        """The DataLoader pins what this returns (on CUDA: copies to the device then run asynchronously)."""
        return Sample(self.image.pin_memory(), self.original_size, self.masks.pin_memory(), self.prompts.pin_memory(),
                      self.areas)


class CocoInstances(Dataset):
    """The images of a COCO-format file that hold instances, in image-id order, with a ``prompt`` ("box" or
    "point") per instance; ``transform`` maps the uint8 ``[H, W, 3]`` image (run in the loader's workers)."""

    def __init__(self, spec: CocoSpec, prompt: str = "box", transform=None) -> None:
        from pycocotools.coco import COCO

        if prompt not in PROMPTS:
            raise AbswinError(f"unknown prompt {prompt!r}; use {' or '.join(PROMPTS)}")
        self.prompt = prompt
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress on stdout
                self.coco = COCO(str(spec.annotations))
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            raise AbswinError(f"{spec.annotations}: not a COCO-format annotations file ({exc})") from exc
        self.folder, self.transform = spec.images, transform
        self.image_ids = [i for i in sorted(self.coco.getImgIds()) if self._annotations(i)]
        if not self.image_ids:
            raise AbswinError(f"{spec.annotations}: no instance annotations with an area of one pixel or more")

    def _annotations(self, image_id: int) -> list[dict]:
        """The image's instances: those with a segmentation and an area of at least a pixel (when one is given)."""
        annotations = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id]))
        return [a for a in annotations if a.get("segmentation") and a.get("area", 1) >= 1]

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> Sample:
        from PIL import Image

        info = self.coco.loadImgs([self.image_ids[index]])[0]
        path = self.folder / info["file_name"]
        try:
            with Image.open(path) as img:
                image = np.array(img.convert("RGB"))
        except OSError as exc:
            raise AbswinError(f"{path}: cannot read the image ({exc})") from exc
        annotations = self._annotations(info["id"])
        try:
            masks = np.stack([self.coco.annToMask(a) for a in annotations]).astype(bool)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise AbswinError(f"{path}: an annotation's segmentation cannot be decoded ({exc!r})") from exc
        if masks.shape[1:] != image.shape[:2]:
            raise AbswinError(f"{path}: the image is {image.shape[1]}x{image.shape[0]}, its annotations say "
                              f"{info['width']}x{info['height']}")
        boxes = np.array([instance_box(a, m) for a, m in zip(annotations, masks)], dtype=np.float64)
        if self.prompt == "box":
            prompts = torch.from_numpy(boxes).float()
        else:  # a mask that decodes to nothing gets its box's centre
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            prompts = torch.tensor([interior_point(m) if m.any() else tuple(c) for m, c in zip(masks, centres)],
                                   dtype=torch.float32)
        return Sample(
            image=self.transform(image) if self.transform else torch.from_numpy(image),
            original_size=(image.shape[0], image.shape[1]),
            masks=torch.from_numpy(masks),
            prompts=prompts,
            areas=torch.tensor([float(a.get("area", m.sum())) for a, m in zip(annotations, masks)]),
        )


def instance_box(annotation: dict, mask: np.ndarray) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)``: the annotation's ``bbox`` (x, y, w, h), else the mask's extent."""
    if "bbox" in annotation:
        x, y, w, h = (float(v) for v in annotation["bbox"])
        return x, y, x + w, y + h
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(rows):
        return 0.0, 0.0, float(mask.shape[1]), float(mask.shape[0])
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """``(x, y)`` of the mask pixel farthest (Euclidean) from any pixel outside it, the image's surroundings
    counting as outside; the first such pixel in row-major order. Exact: squared distances in integers."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    top, left = rows[0], cols[0]
    # the nearest outside pixel of any mask pixel lies within the mask's bounding box grown by one pixel
    crop = np.pad(mask[top : rows[-1] + 1, left : cols[-1] + 1], 1)
    squared = _squared_distance_to_outside(crop)
    y, x = np.unravel_index(int(np.argmax(squared)), squared.shape)
    return int(left + x - 1), int(top + y - 1)


def _squared_distance_to_outside(mask: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance from each pixel to the nearest ``False`` pixel (the border is ``False``): the
    distance along each row first, then the minimum over rows of ``row distance^2 + row offset^2``."""
    h, w = mask.shape
    index = np.broadcast_to(np.arange(w), (h, w))
    last_outside = np.maximum.accumulate(np.where(mask, 0, index), axis=1)
    next_outside = np.minimum.accumulate(np.where(mask, w - 1, index)[:, ::-1], axis=1)[:, ::-1]
    along_row = np.minimum(index - last_outside, next_outside - index).astype(np.int64) ** 2
    offsets = (np.arange(h)[:, None] - np.arange(h)[None, :]) ** 2  # [y, y']
    best = np.empty((h, w), dtype=np.int64)
    chunk = max(1, (1 << 22) // (h * w))  # rows of the output per step: bounded memory
    for start in range(0, h, chunk):
        stop = min(h, start + chunk)
        best[start:stop] = (along_row[None, :, :] + offsets[start:stop, :, None]).min(axis=1)
    return best
