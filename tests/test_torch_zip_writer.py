"""The torch-free ``.pt`` writer: what it writes is what ``torch.save`` would, for torch, zip tools and our reader."""

from __future__ import annotations

import argparse
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from abswin_convert.errors import AbswinError
from abswin_convert.io.checkpoint import open_checkpoint
from abswin_convert.io.dtypes import RAW_DTYPES, TORCH_NAMES
from abswin_convert.io.safetensors_writer import OutputTensor, RawBytes
from abswin_convert.io.tensors import RawTensor
from abswin_convert.io.torch_bridge import to_torch
from abswin_convert.io.torch_zip import open_torch
from abswin_convert.io.torch_zip_writer import ALIGNMENT, SourceStorages, TorchZip

SHAPES = [(2, 3, 4), (), (0, 3), (7,), (1, 300, 5)]


def _tensors(folder: Path) -> tuple[list[OutputTensor], dict[str, torch.Tensor]]:
    """Every dtype in several shapes, half as byte ranges of a source file, half in memory; and torch's view."""
    rng = np.random.default_rng(0)
    source = folder / "source.bin"
    out, expected, blob = [], {}, bytearray(b"header!")  # an odd offset: ranges need not be aligned in the source
    for i, (dtype, shape) in enumerate((d, s) for d in TORCH_NAMES for s in SHAPES):
        raw = rng.integers(0, 256, size=int(np.prod(shape)) * RAW_DTYPES[dtype].itemsize, dtype=np.uint8)
        if dtype == "BOOL":
            raw = raw % 2
        elements = raw.view(RAW_DTYPES[dtype]).reshape(shape)
        name = f"t{i}.{dtype}"
        data: RawBytes | np.ndarray = elements
        if i % 2:
            data = RawBytes(source, len(blob), raw.nbytes)
            blob += raw.tobytes()
        out.append(OutputTensor(name, dtype, shape, data))
        expected[name] = to_torch(RawTensor(dtype, elements))
    source.write_bytes(bytes(blob))
    return out, expected


@pytest.mark.parametrize("wrapper", [None, "model"])
@pytest.mark.parametrize("mmap", [False, True])
def test_torch_loads_every_dtype_and_shape_bit_for_bit(tmp_path, wrapper, mmap):
    tensors, expected = _tensors(tmp_path)
    state = {t.name: t for t in tensors}
    TorchZip(state if wrapper is None else {wrapper: state}).write(tmp_path / "out.pt")
    loaded = torch.load(tmp_path / "out.pt", weights_only=True, mmap=mmap)
    state = loaded if wrapper is None else loaded[wrapper]
    assert list(state) == list(expected) and (wrapper is None or list(loaded) == [wrapper])
    for name, tensor in expected.items():
        assert state[name].dtype == tensor.dtype and state[name].shape == tensor.shape, name
        assert torch.equal(state[name].reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8)), name


def test_zip_tools_check_every_crc_and_the_data_is_aligned_as_torch_aligns_it(tmp_path):
    tensors, _ = _tensors(tmp_path)
    TorchZip({t.name: t for t in tensors}).write(tmp_path / "out.pt")
    with zipfile.ZipFile(tmp_path / "out.pt") as archive:
        assert archive.testzip() is None  # reads every record, checking its CRC-32
        names = archive.namelist()
        assert names[:4] == ["archive/data.pkl", "archive/.format_version", "archive/.storage_alignment",
                             "archive/byteorder"] and names[-1] == "archive/version"
        raw = (tmp_path / "out.pt").read_bytes()
        for info in archive.infolist():
            name_length, extra_length = struct.unpack_from("<HH", raw, info.header_offset + 26)  # local header
            assert (info.header_offset + 30 + name_length + extra_length) % ALIGNMENT == 0, info.filename


def test_the_same_dict_as_torch_save_writes_it(tmp_path):
    # the other side of the round trip: our reader reads ours as it reads torch's own file of the same dict
    tensors, expected = _tensors(tmp_path)
    TorchZip({t.name: t for t in tensors}).write(tmp_path / "ours.pt")
    torch.save(expected, tmp_path / "torch.pt")
    ours, theirs = open_checkpoint(tmp_path / "ours.pt"), open_checkpoint(tmp_path / "torch.pt")
    assert ours.keys() == theirs.keys() == list(expected)
    for name in expected:
        a, b = ours.tensor(name), theirs.tensor(name)
        assert (a.dtype, a.shape) == (b.dtype, b.shape) and a.raw.tobytes() == b.raw.tobytes(), name


def _training_checkpoint() -> dict:
    """What a training script saves: a model with a BatchNorm (a 0-d ``num_batches_tracked``), tied and viewed
    weights, an EMA copy, optimizer state after a step (int keys, tuples, floats, None), args, a parameter."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 6))
    model[2].weight = torch.nn.Parameter(model[0].weight.t())  # tied, as a transposed view of one storage
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    model(torch.randn(8, 6)).square().mean().backward()
    optimizer.step()
    state = model.state_dict()
    return {
        "model": state,
        "model_ema": {k: v.clone() for k, v in state.items()},
        "optimizer": optimizer.state_dict(),
        "epoch": 7, "metric": 0.8125, "best": None, "flags": (True, False), "tags": ["a", "ß"], "blob": b"\x00\xff",
        "args": argparse.Namespace(lr=1e-3, img_size=224, model="tiny"),
        "big": 2**40, "negative": -3, "dtype": torch.bfloat16, "scale": torch.nn.Parameter(torch.ones(3)),
        "half": torch.arange(5, dtype=torch.float16)[1::2],  # a strided view into a larger storage
    }


def _same(a: object, b: object, path: str = "") -> None:
    assert type(a) is type(b), (path, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape, a.stride(), a.storage_offset(), a.requires_grad) == \
            (b.dtype, b.shape, b.stride(), b.storage_offset(), b.requires_grad), path
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for key in a:
            _same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, argparse.Namespace):
        _same(vars(a), vars(b), path)
    else:
        assert a == b, path


@pytest.mark.parametrize("legacy", [False, True])
def test_a_training_checkpoint_is_written_back_whole_without_torch(tmp_path, legacy):
    # the reader's object, written back: what torch.load gives for it is what it gave for the source
    obj = _training_checkpoint()
    source = tmp_path / "train.pth"
    torch.save(obj, source, _use_new_zipfile_serialization=not legacy)
    layout = open_torch(source)
    TorchZip(layout.obj, SourceStorages(source, layout.storage_starts)).write(tmp_path / "again.pt")
    with torch.serialization.safe_globals([argparse.Namespace]):
        before = torch.load(source, weights_only=True)
        after = torch.load(tmp_path / "again.pt", weights_only=True)
    _same(before, after)
    model = after["model"]  # one storage shared by the tied weights, as in the source
    assert model["0.weight"].untyped_storage().data_ptr() == model["2.weight"].untyped_storage().data_ptr()
    assert after["half"].untyped_storage().nbytes() == 10  # the view's whole storage came along
    with zipfile.ZipFile(tmp_path / "again.pt") as archive:
        assert archive.testzip() is None


def test_a_pickles_numpy_values_become_tensors_and_numbers(tmp_path):
    # a detectron2 .pkl holds numpy arrays (and numpy scalars in its extras): a .pt file holds tensors and numbers
    obj = {"model": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "iteration": np.int64(90000),
           "score": np.float32(0.5), "__author__": "Detectron2 Model Zoo", "set": {1, 2}}
    TorchZip(obj).write(tmp_path / "out.pt")
    loaded = torch.load(tmp_path / "out.pt", weights_only=True)
    assert torch.equal(loaded["model"]["w"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert loaded["iteration"] == 90000 and type(loaded["iteration"]) is int
    assert loaded["score"] == 0.5 and type(loaded["score"]) is float
    assert loaded["__author__"] == "Detectron2 Model Zoo" and loaded["set"] == {1, 2}


def test_an_array_a_torch_file_cannot_hold_is_refused_in_one_line(tmp_path):
    with pytest.raises(AbswinError, match=r"^the checkpoint holds a uint16 array beside its weights, which a \.pt "
                                          r"output cannot hold; a safetensors output \(--format safetensors\)"):
        TorchZip({"model": {}, "counts": np.zeros(3, np.uint16)})
