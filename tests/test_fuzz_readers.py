"""Fuzzing the checkpoint readers: random and mutated bytes give a checkpoint or an AbswinError, nothing else.

The seeds are real files: part of a tiny timm Hiera saved as safetensors, as a torch zip (``torch.save``), as a
legacy (pre-zip) torch file, as numpy arrays pickled into a ``.pth``, and as a detectron2-style ``.pkl``.
Mutations overwrite, insert and delete bytes, biased towards both ends of the file (the safetensors header and
the pickle sit at the start, the zip directory at the end), and truncate.
Whatever opens is read in full, and a tensor the writer would copy raw must hold the bytes of its file range.
"""

from __future__ import annotations

import pickle
import random
import re
import signal
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from abswin_convert.errors import AbswinError
from abswin_convert.io.checkpoint import open_checkpoint
from abswin_convert.io.tensors import FileTensor
from abswin_convert.io.torch_bridge import to_torch
from tests import hiera_models as hm

SUFFIXES = (".safetensors", ".pth", ".pkl")
SEEDS = ("model.safetensors", "model.pth", "legacy.pth", "numpy.pth", "model_final.pkl")
FUZZ = settings(
    max_examples=200, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
ENDS = 2048  # bytes at either end of a file where mutations are most telling
# checkpoint.py silences this torch warning for the CLI, but pytest drops filters set while it collects.
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")


def seed_state() -> dict[str, torch.Tensor]:
    """A few tensors of a real tiny timm Hiera, position embedding included (about 200 kB)."""
    state = hm.timm_model().state_dict()
    keys = ["pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "blocks.0.norm1.weight", "head.fc.bias"]
    return {k: state[k].contiguous() for k in keys}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("seeds")
    state = seed_state()
    arrays = {k: v.numpy() for k, v in state.items()}
    save_file(state, folder / "model.safetensors")
    torch.save({"model": state, "epoch": 3}, folder / "model.pth")
    torch.save(state, folder / "legacy.pth", _use_new_zipfile_serialization=False)
    with open(folder / "numpy.pth", "wb") as f:
        pickle.dump(arrays, f, protocol=4)
    with open(folder / "model_final.pkl", "wb") as f:
        pickle.dump({"model": arrays, "__author__": "fuzz"}, f)
    return {name: folder / name for name in SEEDS}


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        n = len(data)
        if n == 0:
            break
        where = draw(st.one_of(st.integers(0, min(ENDS, n) - 1), st.integers(max(0, n - ENDS), n - 1), st.integers(0, n - 1)))
        kind = draw(st.sampled_from(("overwrite", "insert", "delete", "truncate")))
        if kind == "overwrite":
            data[where : where + 4] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[where : where + draw(st.integers(1, 64))]
        else:
            del data[where:]
    return bytes(data)


@contextmanager
def no_hang(seconds: int = 20) -> Iterator[None]:
    """Fail instead of waiting for ever (the deadline only judges examples that finish)."""

    def expired(*_):
        raise TimeoutError(f"reading took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _status_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


@contextmanager
def bounded_memory(limit_mib: int = 256) -> Iterator[None]:
    """Fail if the resident memory peaks more than ``limit_mib`` above where it was (the seeds are 200 kB).

    Linux keeps the peak (VmHWM); writing 5 to ``clear_refs`` resets it to the present size.
    """
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    yield
    grew = (_status_kib("VmHWM") - before) // 1024
    assert grew < limit_mib, f"reading took {grew} MiB more memory"


def read_everything(path: Path) -> None:
    """Open ``path`` and read every tensor; only AbswinError may escape, in bounded time and memory."""
    with no_hang(), bounded_memory():
        try:
            ckpt = open_checkpoint(path)
            for key in ckpt.keys():
                tensor = ckpt.tensor(key)
                assert tensor.shape == ckpt.shape(key) and tensor.dtype == ckpt.dtype(key)
                raw = tensor.raw.tobytes()
                entry = ckpt.stored(key)
                if isinstance(entry, FileTensor):
                    with open(path, "rb") as f:
                        f.seek(entry.start)
                        assert f.read(entry.nbytes) == raw, f"{key}: the raw copy range does not hold the tensor"
        except AbswinError:
            pass


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="abswin-fuzz-") as folder:
        yield Path(folder)


@pytest.mark.parametrize("name", SEEDS)
def test_every_seed_opens_with_its_tensors(seeds, name):
    ckpt = open_checkpoint(seeds[name])
    assert torch.equal(to_torch(ckpt.tensor("pos_embed")), seed_state()["pos_embed"])
    if name in ("model.safetensors", "model.pth"):  # both are copied raw, from byte ranges read_everything checks
        assert all(isinstance(ckpt.stored(k), FileTensor) for k in ckpt.keys())
    read_everything(seeds[name])


@pytest.mark.parametrize("name", SEEDS)
@FUZZ
@given(data=st.data())
def test_mutated_files_open_or_fail_clearly(seeds, scratch, name, data):
    path = scratch / name
    path.write_bytes(data.draw(mutated(seeds[name].read_bytes()), label="bytes"))
    read_everything(path)


@pytest.mark.parametrize("suffix", SUFFIXES)
@FUZZ
@given(head=st.sampled_from([b"", b"PK\x03\x04", b"\x80\x04", b"\x80\x02", b"\x10\x00\x00\x00\x00\x00\x00\x00{"]),
       body=st.binary(max_size=512))
def test_random_bytes_open_or_fail_clearly(scratch, suffix, head, body):
    path = scratch / f"random{suffix}"
    path.write_bytes(head + body)
    read_everything(path)


def test_a_huge_memo_index_costs_no_memory(scratch):
    """Found by this fuzzing: ``LONG_BINPUT n`` made the C unpickler grow its memo array to n entries (a 200 kB file
    took 23 GB). The reader's memo is a dict now; n = 50 million would cost the old reader 760 MB."""
    path = scratch / "memo.pkl"
    path.write_bytes(b"\x80\x02}r" + struct.pack("<I", 50_000_000) + b".")  # {} stored at memo[50_000_000]
    with bounded_memory(100), pytest.raises(AbswinError, match="no tensors found"):
        open_checkpoint(path)


@pytest.mark.parametrize("name", ["model.safetensors", "model.pth"])
def test_damage_inside_tensor_data_is_read_and_copied_as_it_is(seeds, scratch, name):
    """Bytes changed inside the tensors (not the header, not the zip directory) still open, and the ranges the
    writer would copy raw hold exactly the bytes the tensors now read."""
    ckpt = open_checkpoint(seeds[name])
    ranges = [ckpt.stored(k) for k in ckpt.keys()]
    rng = random.Random(0)
    for trial in range(20):
        data = bytearray(seeds[name].read_bytes())
        for entry in rng.sample(ranges, 3):
            at = rng.randrange(entry.start, entry.end)
            data[at] ^= 0xFF
        path = scratch / f"damaged{trial}{Path(name).suffix}"
        path.write_bytes(bytes(data))
        damaged = open_checkpoint(path)
        assert any(damaged.tensor(k).raw.tobytes() != ckpt.tensor(k).raw.tobytes() for k in ckpt.keys())
        read_everything(path)
