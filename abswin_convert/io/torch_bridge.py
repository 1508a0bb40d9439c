"""Tensors between this package's torch-free form (``RawTensor``) and torch, bit for bit.

Only the parts that need torch objects import this module: ``--format pt`` outputs, verify, eval, finetune, the
demo and the in-memory API.
"""

from __future__ import annotations

import argparse
import pickle
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import AbswinError, first_line
from .checkpoint import Checkpoint
from .dtypes import TORCH_NAMES
from .safe_pickle import load_numpy_pickle
from .tensors import RawTensor

TORCH_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, torch_name) for name, torch_name in TORCH_NAMES.items()}
_NAMES = {dtype: name for name, dtype in TORCH_DTYPES.items()}
# torch has no numpy twin for these: their bits travel as same-sized integers
_BIT_TWINS = {"BF16": torch.int16, "F8_E4M3": torch.uint8, "F8_E5M2": torch.uint8}
_NUMPY_BITS = {"BF16": np.int16, "F8_E4M3": np.uint8, "F8_E5M2": np.uint8}

# torch's weights-only loader warns about pickle protocols it was not written for; the user can do nothing about
# it, and what matters (the file opens, or a one-line error says why not) is said anyway.
warnings.filterwarnings("ignore", message=r"Detected pickle protocol \d+ in the checkpoint", category=UserWarning)


def to_torch(tensor: RawTensor) -> torch.Tensor:
    """A torch tensor with the same dtype and bits."""
    raw = tensor.raw
    if not (raw.flags.writeable and raw.flags.c_contiguous):  # torch warns on read-only arrays
        raw = raw.copy(order="C")  # (not ascontiguousarray: it makes a 0-d tensor, e.g. num_batches_tracked, 1-d)
    if tensor.dtype in _BIT_TWINS:
        return torch.from_numpy(raw.view(_NUMPY_BITS[tensor.dtype])).view(TORCH_DTYPES[tensor.dtype])
    return torch.from_numpy(raw)


def dtype_name(dtype: torch.dtype) -> str:
    """The safetensors name of a torch dtype."""
    if dtype not in _NAMES:
        raise AbswinError(f"a tensor of {dtype} cannot be converted; safetensors has no such dtype")
    return _NAMES[dtype]


def from_torch(tensor: torch.Tensor) -> RawTensor:
    """A torch tensor as raw elements (copied to the CPU, detached)."""
    name = dtype_name(tensor.dtype)
    t = tensor.detach().cpu().contiguous()
    if name in _BIT_TWINS:
        return RawTensor(name, t.view(_BIT_TWINS[name]).numpy().view(f"u{t.element_size()}"))
    return RawTensor(name, t.numpy())


@dataclass(frozen=True)
class TorchTensor:
    """A caller's torch tensor held as a checkpoint holds tensors: dtype and shape now, its elements (copied to the
    CPU) only when read, so that the tensors a conversion does not touch are never copied."""

    tensor: torch.Tensor

    @property
    def dtype(self) -> str:
        return dtype_name(self.tensor.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    def read(self) -> RawTensor:
        return from_torch(self.tensor)


def torch_state_dict(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """Every tensor of ``ckpt`` as torch tensors, read now (for building a model from the weights)."""
    return {key: to_torch(ckpt.tensor(key)) for key in ckpt.keys()}


def load_object(ckpt: Checkpoint) -> Any:
    """The whole object of a torch file or pickle, for a ``--format pt`` output that keeps its other entries. The
    file was already read and checked without torch; a torch file is loaded by torch's own weights-only loader
    (memory-mapped), a pickle by the numpy-only unpickler."""
    path = ckpt.path
    if ckpt.format == "pickle":
        with open(path, "rb") as f:
            return load_numpy_pickle(f)
    with open(path, "rb") as f:
        mappable = f.read(4) == b"PK\x03\x04"  # a legacy (pre-zip) file cannot be memory-mapped
    with torch.serialization.safe_globals([argparse.Namespace]):  # MAE training saves keep their args in one
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mappable)
        except (pickle.UnpicklingError, RuntimeError, ValueError, OSError) as exc:
            raise AbswinError(f"{path.name}: torch cannot load it ({first_line(exc, sentence=True)})") from exc
