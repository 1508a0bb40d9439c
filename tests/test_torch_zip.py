"""The torch-free checker against torch.load, byte for byte, in both formats; hostile files refused (io/torch_zip.py)."""

from __future__ import annotations

import argparse
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from abswin_convert.io import torch_zip
from abswin_convert.io.torch_zip import CheckpointError, NamespaceData, NotTorchFile, TorchDtype, open_torch

FORMATS = ["zip", "legacy"]


def _save(obj: Any, path: Path, fmt: str) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
    return path


def _realistic(fmt: str) -> dict:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    state = model.state_dict()  # an OrderedDict with _metadata
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    extra = OrderedDict(
        bf16=torch.randn(5, 7).bfloat16(),
        fp16=torch.randn(3, 2).half(),
        i64=torch.arange(-5, 5, dtype=torch.int64),
        flags=torch.tensor([True, False, True]),
        view_t=base.t(),  # non-contiguous view
        view_cols=base[:, 1:4],  # non-contiguous, offset
        view_row=base[2],  # contiguous, offset 12 into a shared storage
        base=base,
        empty=torch.empty(0, 3),
        scalar=torch.tensor(2.5, dtype=torch.float64),
        param=torch.nn.Parameter(torch.randn(2, 2)),
    )
    if fmt == "zip":  # torch cannot load a float8 tensor back from a legacy file it wrote (UntypedStorage.dtype)
        extra["f8"] = torch.tensor([0.5, -448.0, 1e-3]).to(torch.float8_e4m3fn)
    return {"model": state, "extra": extra, "optimizer": opt.state_dict(), "epoch": 3,
            "args": argparse.Namespace(lr=0.1, name="mae"), "dtype": torch.float32, "nested": [(1, 2.0, None, "x")]}


@pytest.fixture(scope="module", params=FORMATS)
def saved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp(request.param) / "ckpt.pth"
    return _save(_realistic(request.param), path, request.param), request.param


def _lookup(obj: Any, path: tuple) -> Any:
    for key in path:
        obj = getattr(obj, key) if isinstance(obj, argparse.Namespace) else obj[key]
    return obj


def _bits(t: torch.Tensor) -> np.ndarray:
    t = t.detach().contiguous()
    size = t.element_size()
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[size]
    return t.view(view).numpy().view(f"u{size}") if t.dtype != torch.bool else t.numpy().view("u1")


def test_byte_ranges_are_the_tensor_bytes(saved: tuple[Path, str]) -> None:
    path, _ = saved
    ckpt = open_torch(path)
    data = path.read_bytes()
    ref = torch.load(path, weights_only=False)
    ranged = 0
    for info in ckpt.tensors:
        want = _lookup(ref, info.path)
        if not want.is_contiguous():
            assert info.byte_range is None, info.name
            continue
        start, end = info.byte_range
        assert end - start == want.numel() * want.element_size()
        assert data[start:end] == _bits(want).tobytes(), info.name
        ranged += 1
    assert ranged == len(ckpt.tensors) - 2


def test_data_is_kept(saved: tuple[Path, str]) -> None:
    ckpt = open_torch(saved[0])
    obj = ckpt.obj
    assert obj["epoch"] == 3 and obj["nested"] == [(1, 2.0, None, "x")]
    assert isinstance(obj["args"], NamespaceData) and obj["args"] == {"lr": 0.1, "name": "mae"}
    assert obj["dtype"] == TorchDtype("float32", "F32")
    assert isinstance(obj["model"], OrderedDict) and obj["model"]._metadata[""]["version"] == 1
    assert obj["optimizer"]["param_groups"][0]["lr"] == 0.1
    row = next(info for info in ckpt.tensors if info.name == "extra.view_row")
    assert (row.dtype, row.shape, row.strides, row.storage_offset) == ("F32", (6,), (1,), 12)


# ---- hostile files ----------------------------------------------------------------------------------------

def _rezip(src: Path, dst: Path, patch: dict[str, bytes] | None = None, compress: bool = False) -> Path:
    """Rewrite a torch zip member by member (data.pkl patched), as torch lays it out but for alignment."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            for suffix, new in (patch or {}).items():
                if info.filename.endswith(suffix):
                    data = new
            zout.writestr(info.filename, data, zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
    return dst


def _data_pkl(path: Path) -> bytes:
    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


@pytest.fixture()
def plain(tmp_path: Path) -> Path:
    return _save({"t": torch.zeros(2, 3)}, tmp_path / "plain.pt", "zip")


def test_compressed_members_refused(plain: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is compressed"):
        open_torch(_rezip(plain, tmp_path / "deflated.pt", compress=True))


def test_big_data_pkl_refused(plain: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_zip, "MAX_PICKLE_BYTES", 64)
    with pytest.raises(CheckpointError, match="over the 64-byte bound"):
        open_torch(plain)


def test_expanded_tensor_refused_not_materialised(tmp_path: Path) -> None:
    for fmt in FORMATS:
        path = _save({"e": torch.zeros(1).expand(2**28)}, tmp_path / f"expand_{fmt}.pt", fmt)
        assert path.stat().st_size < 10_000
        with pytest.raises(CheckpointError, match="stride-0 / expanded view"):
            open_torch(path)


@pytest.mark.parametrize(
    "new_shape, message",
    [
        (b"J" + struct.pack("<i", -2) + b"K\x03\x86", r"an integer from 0 to 2\*\*63 - 1"),
        (b"\x8a\x06" + (2**40).to_bytes(6, "little") + b"K\x03\x86", "reaches byte"),
        (b"G" + struct.pack(">d", 2.0) + b"K\x03\x86", r"an integer from 0 to 2\*\*63 - 1"),
        (b"\x8a\x09" + (2**64).to_bytes(9, "little") + b"K\x03\x86", r"from 0 to 2\*\*63 - 1, found 18446744073709551616"),
    ],
)
def test_bad_shapes_refused(plain: Path, tmp_path: Path, new_shape: bytes, message: str) -> None:
    pkl = _data_pkl(plain)
    assert pkl.count(b"K\x02K\x03\x86") == 1
    bad = _rezip(plain, tmp_path / "bad.pt", {"/data.pkl": pkl.replace(b"K\x02K\x03\x86", new_shape)})
    with pytest.raises(CheckpointError, match=message):
        open_torch(bad)


def test_storage_larger_than_its_member_refused(plain: Path, tmp_path: Path) -> None:
    pkl = _data_pkl(plain)
    assert pkl.count(b"K\x06t") == 1  # numel 6 closing the persistent id
    bad = _rezip(plain, tmp_path / "bad.pt", {"/data.pkl": pkl.replace(b"K\x06t", b"M\x00\x10t")})
    with pytest.raises(CheckpointError, match="needs 16384 bytes, its member holds 24"):
        open_torch(bad)


def test_big_endian_refused(plain: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="only little-endian"):
        open_torch(_rezip(plain, tmp_path / "big.pt", {"/byteorder": b"big"}))


def test_foreign_globals_refused(tmp_path: Path) -> None:
    for fmt in FORMATS:
        path = _save({"w": torch.zeros(2), "f": os.system}, tmp_path / f"evil_{fmt}.pt", fmt)
        with pytest.raises(pickle.UnpicklingError, match=r"GLOBAL (posix|os|nt)\.system"):
            open_torch(path)
        path = _save({"s": {1, 2}, "c": complex(1, 2)}, tmp_path / f"set_{fmt}.pt", fmt)
        with pytest.raises(pickle.UnpicklingError, match=r"GLOBAL (builtins|__builtin__)\.set"):
            open_torch(path)


def test_legacy_truncated_and_lying_pickles(tmp_path: Path) -> None:
    path = _save({"t": torch.arange(100.0)}, tmp_path / "legacy.pt", "legacy")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="runs past the end of the file"):
        open_torch(tmp_path / "cut.pt")
    header = b"".join(pickle.dumps(x, protocol=2) for x in (torch_zip.LEGACY_MAGIC, 1001,
                                                              {"little_endian": True}))
    (tmp_path / "claim.pt").write_bytes(header + b"\x80\x02\x8e" + struct.pack("<Q", 2**40) + b".")
    with pytest.raises(CheckpointError, match="claims more than follows"):
        open_torch(tmp_path / "claim.pt")
    (tmp_path / "big_endian.pt").write_bytes(header.replace(b"\x88", b"\x89"))
    with pytest.raises(CheckpointError, match="big-endian"):
        open_torch(tmp_path / "big_endian.pt")


def test_hostile_pickle_opcodes_in_zip(plain: Path, tmp_path: Path) -> None:
    cases = {
        b"\x80\x05\x96" + struct.pack("<Q", 2**40) + b".": (pickle.UnpicklingError, "truncated"),
        b"\x80\x02K\x01r\xff\xff\xff\x7f0}.": (None, None),  # a huge memo index costs nothing (dict memo)
        b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01Nu}b.": (pickle.UnpicklingError, "BUILD of dict"),
        b"\x80\x02X\x01\x00\x00\x00a": (CheckpointError, "not a readable pickle"),
    }
    for i, (pkl, (error, message)) in enumerate(cases.items()):
        bad = _rezip(plain, tmp_path / f"op{i}.pt", {"/data.pkl": pkl})
        if error is None:
            assert open_torch(bad).tensors == []
            continue
        with pytest.raises(error, match=message):
            open_torch(bad)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        open_torch(tmp_path / "x.bin")
    (tmp_path / "p.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(NotTorchFile, match="no torch magic number"):
        open_torch(tmp_path / "p.pkl")


@pytest.mark.parametrize("wrapper", [None, "model"])
def test_the_checkpoint_copies_torch_tensors_raw_from_these_ranges(tmp_path: Path, wrapper: str | None) -> None:
    """``Checkpoint.stored`` of a torch zip: every contiguous tensor of the state dict a byte range, its bytes
    exactly; a strided view read from its storage."""
    from abswin_convert.io.checkpoint import open_checkpoint
    from abswin_convert.io.tensors import FileTensor, StridedTensor

    state = {"a": torch.randn(3, 4), "b": torch.arange(6, dtype=torch.int64), "t": torch.randn(4, 3).t()}
    path = _save({wrapper: state, "epoch": 1} if wrapper else state, tmp_path / "w.pth", "zip")
    ckpt = open_checkpoint(path)
    data = path.read_bytes()
    assert isinstance(ckpt.stored("t"), StridedTensor)  # a transposed view is read, then written from memory
    assert ckpt.tensor("t").raw.tobytes() == _bits(state["t"].contiguous()).tobytes()
    for key in ("a", "b"):
        entry = ckpt.stored(key)
        assert isinstance(entry, FileTensor) and data[entry.start : entry.end] == _bits(state[key]).tobytes()
