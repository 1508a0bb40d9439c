"""Tensors between this package's torch-free form (``RawTensor``) and torch, bit for bit.

Only the parts that need torch objects import this module: verify, eval, finetune, the demo and the in-memory API
(a ``--format pt`` output is written without torch, by ``torch_zip_writer``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import AbswinError
from .checkpoint import Checkpoint
from .dtypes import TORCH_NAMES
from .tensors import RawTensor

TORCH_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, torch_name) for name, torch_name in TORCH_NAMES.items()}
_NAMES = {dtype: name for name, dtype in TORCH_DTYPES.items()}
# torch has no numpy twin for these: their bits travel as same-sized integers
_BIT_TWINS = {"BF16": torch.int16, "F8_E4M3": torch.uint8, "F8_E5M2": torch.uint8}
_NUMPY_BITS = {"BF16": np.int16, "F8_E4M3": np.uint8, "F8_E5M2": np.uint8}


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
