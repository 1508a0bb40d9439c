"""Shared by the hook tests: small idx data sets on disk, tiny upstream classifiers saved natively, and a
dotted hook (``tests.hooks_support:count_tensors``) for ``run_hook``.

The data are a few hundred real Fashion-MNIST images when ``dataset-fashion-mnist`` is installed, otherwise
generated images whose class is easy to learn; both are written as real idx files so the reader always runs.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import torch

from abswin_convert.evaluation.data import FASHION_MNIST_DIR, read_idx
from abswin_convert.io.checkpoint import open_checkpoint

REAL = (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file()
EVAL_IMAGES = 300
TRAIN_IMAGES = 256


def write_idx(path: Path, array: np.ndarray) -> Path:
    """An idx file (uint8), gzipped when ``path`` ends in ``.gz``."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def synthetic_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 images whose class (0-9) is the row of a bright horizontal bar, over noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    images = rng.integers(0, 60, (count, 28, 28))
    for image, label in zip(images, labels):
        image[2 + 2 * label : 4 + 2 * label, 4:24] = 230
    return images.astype(np.uint8), labels.astype(np.uint8)


def make_idx_folder(folder: Path) -> Path:
    """``{train,t10k}-{images,labels}`` idx files: the first images of the real set, or synthetic ones.
    The train files are gzipped and the test files are not, so both paths of the reader run."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count, suffix in (("t10k", EVAL_IMAGES, ""), ("train", TRAIN_IMAGES, ".gz")):
        if REAL:
            images = read_idx(FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz")[:count]
            labels = read_idx(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz")[:count]
        else:
            images, labels = synthetic_images(count, seed=0 if prefix == "t10k" else 1)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return folder


def save_timm(folder: Path, model: torch.nn.Module, pretrained_cfg: dict) -> Path:
    """A timm model as timm's own ``save_for_hf`` writes it (model.safetensors + config.json)."""
    from timm.models._hub import save_for_hf

    save_for_hf(model, str(folder), model_config={"pretrained_cfg": pretrained_cfg}, safe_serialization=True)
    return folder


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def count_tensors(checkpoint_path: Path, options: dict) -> dict:
    """A user's hook, named ``tests.hooks_support:count_tensors``."""
    ckpt = open_checkpoint(checkpoint_path)
    return {"tensors": len(ckpt.keys()), "label": options.get("label", "")}


def not_a_dict(checkpoint_path: Path, options: dict) -> list:
    return [checkpoint_path]
