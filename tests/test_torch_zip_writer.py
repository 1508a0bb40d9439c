"""The torch-free ``.pt`` writer: what it writes is what ``torch.save`` would, for torch, zip tools and our reader."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from abswin_convert.io.checkpoint import open_checkpoint
from abswin_convert.io.dtypes import RAW_DTYPES, TORCH_NAMES
from abswin_convert.io.tensors import RawTensor
from abswin_convert.io.torch_bridge import to_torch
from abswin_convert.io.torch_zip_writer import ALIGNMENT, write_torch_zip
from abswin_convert.io.writer import OutputTensor, RawBytes

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
    write_torch_zip(tmp_path / "out.pt", tensors, wrapper)
    loaded = torch.load(tmp_path / "out.pt", weights_only=True, mmap=mmap)
    state = loaded if wrapper is None else loaded[wrapper]
    assert list(state) == list(expected) and (wrapper is None or list(loaded) == [wrapper])
    for name, tensor in expected.items():
        assert state[name].dtype == tensor.dtype and state[name].shape == tensor.shape, name
        assert torch.equal(state[name].reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8)), name


def test_zip_tools_check_every_crc_and_the_data_is_aligned_as_torch_aligns_it(tmp_path):
    tensors, _ = _tensors(tmp_path)
    write_torch_zip(tmp_path / "out.pt", tensors)
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
    write_torch_zip(tmp_path / "ours.pt", tensors)
    torch.save(expected, tmp_path / "torch.pt")
    ours, theirs = open_checkpoint(tmp_path / "ours.pt"), open_checkpoint(tmp_path / "torch.pt")
    assert ours.keys() == theirs.keys() == list(expected)
    for name in expected:
        a, b = ours.tensor(name), theirs.tensor(name)
        assert (a.dtype, a.shape) == (b.dtype, b.shape) and a.raw.tobytes() == b.raw.tobytes(), name
