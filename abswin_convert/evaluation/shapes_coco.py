"""A COCO-format instance data set of drawn shapes with exact masks: for the mask eval's tests and benchmark, and
for trying ``abswin-convert eval --data coco:...`` without downloading COCO.

Each image is a noisy gradient with a few filled rectangles, ellipses and one triangle in their own colours,
later shapes hiding earlier ones; each instance's mask is exactly the pixels painted in its colour. Masks are
written in all three of COCO's encodings (compressed RLE, uncompressed RLE for rectangles, a polygon for the
triangle, which is drawn from pycocotools' own rasterisation of that polygon), images as PNG (lossless).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CATEGORIES = ("rectangle", "ellipse", "triangle")


def write_shapes_coco(folder: Path, images: int = 4, size: tuple[int, int] = (96, 128), seed: int = 0,
                      shapes_per_image: int = 3) -> Path:
    """Write ``images`` PNGs (``size`` as H x W, every other one turned on its side) and ``annotations.json`` into
    ``folder``; returns the JSON's path."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    annotations: list[dict] = []
    for image_id in range(1, images + 1):
        h, w = size if image_id % 2 else size[::-1]
        canvas, instances = _draw(rng, h, w, shapes_per_image)
        name = f"{image_id:06d}.png"
        Image.fromarray(canvas).save(folder / name)
        records.append({"id": image_id, "file_name": name, "height": h, "width": w})
        for category, mask, segmentation in instances:
            if mask.any():
                annotations.append(_annotation(len(annotations) + 1, image_id, category, mask, segmentation))
    data = {"images": records, "annotations": annotations,
            "categories": [{"id": i + 1, "name": name} for i, name in enumerate(CATEGORIES)]}
    path = folder / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def _draw(rng: np.random.Generator, h: int, w: int, count: int) -> tuple[np.ndarray, list]:
    """The image and its instances ``(category, visible mask, segmentation or None)``, painted in order."""
    yy, xx = np.mgrid[:h, :w]
    gradient = (yy / h * 80 + xx / w * 60)[..., None] + rng.normal(0, 12, (h, w, 3))
    canvas = np.clip(gradient + 40, 0, 255).astype(np.uint8)
    painted: list[tuple[str, np.ndarray, list | None]] = []
    for index in range(count):
        category = "triangle" if index == count - 1 else CATEGORIES[int(rng.integers(2))]
        mask, segmentation = _shape(rng, category, h, w)
        for _, earlier, _ in painted:
            earlier &= ~mask  # hidden by the new shape
        canvas[mask] = rng.integers(90, 256, 3)
        painted.append((category, mask, segmentation))
    return canvas, painted


def _shape(rng: np.random.Generator, category: str, h: int, w: int) -> tuple[np.ndarray, list | None]:
    from pycocotools import mask as mask_utils

    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    ry, rx = rng.uniform(0.1, 0.3) * h, rng.uniform(0.1, 0.3) * w
    yy, xx = np.mgrid[:h, :w]
    if category == "rectangle":
        return (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx), None
    if category == "ellipse":
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1, None
    corners = [cx - rx, cy + ry, cx + rx, cy + ry, cx + rng.uniform(-rx, rx), cy - ry]
    polygon = [[round(float(v), 1) for v in corners]]
    mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, h, w))).astype(bool)
    return mask, polygon


def _annotation(ann_id: int, image_id: int, category: str, mask: np.ndarray, polygon: list | None) -> dict:
    from pycocotools import mask as mask_utils

    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    bbox = [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]
    if polygon is not None:
        segmentation: dict | list = polygon
    elif category == "rectangle":  # uncompressed RLE: run lengths down the columns, the first one background
        flat = mask.flatten(order="F")
        edges = [0, *(np.flatnonzero(np.diff(flat)) + 1), flat.size]
        runs = np.diff(edges).tolist()
        segmentation = {"size": list(mask.shape), "counts": [0, *runs] if flat[0] else runs}
    else:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    return {"id": ann_id, "image_id": image_id, "category_id": CATEGORIES.index(category) + 1, "iscrowd": 0,
            "area": float(mask.sum()), "bbox": bbox, "segmentation": segmentation}
