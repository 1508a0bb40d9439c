"""Datasets for the eval and finetune hooks, named by a spec string, and the preprocessing a checkpoint asks for.

- ``fashion-mnist:PATH``: the idx files (``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, ``.gz`` or not) in
  PATH, as the Debian package ``dataset-fashion-mnist`` installs them under ``/usr/share/datasets/fashion-mnist``
  (plain ``fashion-mnist`` means that folder). Eval reads ``t10k``, finetune reads ``train``.
- ``imagefolder:PATH``: one sub-folder of images per class, classes in sorted order (the ImageNet layout).
  When PATH holds ``train/`` and ``val/`` folders, finetune reads ``train`` and eval reads ``val``.

Preprocessing is split in two so that only small ``uint8`` images cross to the device: ``Preprocess.geometry``
resizes and centre-crops one image on the host (timm's eval transform: shorter side to ``size / crop_pct``, then
a centre crop); ``Preprocess.normalize`` scales, adapts the channel count and normalises a batch on the device.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import AbswinError

SPLITS = ("train", "eval")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
_IDX_PREFIX = {"train": "train", "eval": "t10k"}
_IDX_DTYPES: dict[int, str | type] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
_INTERPOLATIONS = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest", "nearest-exact": "nearest-exact"}


@dataclass(frozen=True)
class DataSpec:
    kind: str  # "fashion-mnist" | "imagefolder"
    path: Path

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}"


def parse_spec(spec: str) -> DataSpec:
    """``fashion-mnist:PATH`` (or plain ``fashion-mnist``) or ``imagefolder:PATH``."""
    if spec == "fashion-mnist":
        spec = f"fashion-mnist:{FASHION_MNIST_DIR}"
    kind, sep, path = spec.partition(":")
    if not sep or kind not in ("fashion-mnist", "imagefolder") or not path:
        raise AbswinError(
            f"cannot read data spec {spec!r}; write fashion-mnist:PATH (idx files) or imagefolder:PATH "
            f"(one folder per class), e.g. fashion-mnist:{FASHION_MNIST_DIR}; for SAM and SAM2 coco:ANNOTATIONS.json[:IMAGES_DIR]"
        )
    if not Path(path).is_dir():
        hint = " (apt-get install dataset-fashion-mnist installs it)" if kind == "fashion-mnist" else ""
        raise AbswinError(f"data folder {path} does not exist{hint}")
    return DataSpec(kind, Path(path))


def open_dataset(spec: str | DataSpec, split: str, transform=None) -> IdxImages | ImageFolder:
    """The ``split`` ("train" or "eval") of the data ``spec`` names; ``transform`` maps one uint8 image."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    data = parse_spec(spec) if isinstance(spec, str) else spec
    if data.kind == "fashion-mnist":
        return IdxImages.from_folder(data.path, split, transform)
    return ImageFolder(_split_folder(data.path, split), transform)


# --- idx files ---------------------------------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST format, gzipped or not) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise AbswinError(f"{path}: cannot read idx file ({exc.__class__.__name__}: {exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise AbswinError(f"{path}: not an idx file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    if len(raw) != header + math.prod(shape) * dtype.itemsize:
        raise AbswinError(f"{path}: idx header says shape {list(shape)} but the file holds {len(raw) - header} data bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise AbswinError(f"{folder}: no {stem}[.gz]; point fashion-mnist: at the folder holding the idx files")


class IdxImages(Dataset):
    """Images ``[N, 1, H, W]`` uint8 and labels ``[N]``, held in memory (Fashion-MNIST is 47 MB)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...], transform=None) -> None:
        if len(images) != len(labels):
            raise AbswinError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.classes, self.transform = images, labels, classes, transform

    @classmethod
    def from_folder(cls, folder: Path, split: str, transform=None) -> IdxImages:
        prefix = _IDX_PREFIX[split]
        images = read_idx(_find_idx(folder, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(folder, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1:
            raise AbswinError(
                f"{folder}: expected images [N, H, W] and labels [N], found {list(images.shape)} and {list(labels.shape)}"
            )
        images_nchw = torch.from_numpy(images.copy()).unsqueeze(1)
        return cls(images_nchw, torch.from_numpy(labels.astype(np.int64)), FASHION_MNIST_CLASSES, transform)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        return (self.transform(image) if self.transform else image), int(self.labels[index])


# --- image folders -----------------------------------------------------------------------------------------


def _split_folder(root: Path, split: str) -> Path:
    named = root / ("train" if split == "train" else "val")
    return named if (root / "train").is_dir() and (root / "val").is_dir() else root


class ImageFolder(Dataset):
    """``root/<class>/<image>``, classes in sorted order; images decoded with Pillow as uint8 ``[C, H, W]``."""

    def __init__(self, root: Path, transform=None) -> None:
        self.classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
        self.samples = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((root / name).rglob("*"))
            if path.suffix.lower() in _IMAGE_SUFFIXES
        ]
        if not self.samples:
            raise AbswinError(f"{root}: no images found in class sub-folders (imagefolder: wants ROOT/<class>/<image>)")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as img:
            array = np.asarray(img.convert("L" if img.mode in ("L", "I;16", "1") else "RGB"))
        image = torch.from_numpy(array.copy())
        image = image.unsqueeze(0) if image.ndim == 2 else image.permute(2, 0, 1)
        return (self.transform(image) if self.transform else image), label


# --- preprocessing -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """A checkpoint's eval preprocessing at ``img_size``."""

    img_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    crop_pct: float = 1.0

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise AbswinError(f"unsupported interpolation {self.interpolation!r}; known: {', '.join(_INTERPOLATIONS)}")
        if len(self.mean) not in (1, self.channels) or len(self.std) not in (1, self.channels):
            raise AbswinError(f"mean/std have {len(self.mean)}/{len(self.std)} entries for a {self.channels}-channel model")

    def geometry(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 ``[C, H, W]`` -> uint8 ``[C, S, S]``: shorter side to ``S / crop_pct``, centre crop ``S``."""
        h, w = image.shape[-2:]
        scale = math.floor(self.img_size / self.crop_pct + 1e-6)  # timm's rule, safe from 72.99999
        size = (scale, max(scale, round(w * scale / h))) if h <= w else (max(scale, round(h * scale / w)), scale)
        if (h, w) != size:
            mode = _INTERPOLATIONS[self.interpolation]
            smooth = mode in ("bicubic", "bilinear")
            resized = F.interpolate(
                image.unsqueeze(0).float(), size=size, mode=mode, antialias=smooth, **({"align_corners": False} if smooth else {})
            )[0]
            image = resized.round_().clamp_(0, 255).to(torch.uint8)
        top, left = (size[0] - self.img_size) // 2, (size[1] - self.img_size) // 2
        return image[:, top : top + self.img_size, left : left + self.img_size]

    def normalize(self, batch: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 ``[B, c, S, S]`` (on any device) -> normalised ``[B, channels, S, S]``."""
        x = batch.to(dtype) / 255.0
        if x.shape[1] != self.channels:
            x = _adapt_channels(x, self.channels)
        mean = torch.tensor(self.mean, device=x.device, dtype=dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=dtype).view(1, -1, 1, 1)
        return (x - mean) / std


def _adapt_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey images for a colour model are repeated; colour images for a grey model become luma."""
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1)
    if x.shape[1] == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1, keepdim=True)
    raise AbswinError(f"cannot feed {x.shape[1]}-channel images to a {channels}-channel model")
