"""fp16 and bf16 checkpoints stay in their dtype, the maths runs in float64 and is rounded once, and every tensor
the conversion does not touch comes out bit for bit, from safetensors and from torch files alike.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from abswin_convert import convert
from abswin_convert.io.safetensors_reader import read_header
from tests import hiera_models as hm

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
MANTISSA_BITS = {torch.float16: 10, torch.bfloat16: 7}
MIN_NORMAL_EXPONENT = {torch.float16: -14, torch.bfloat16: -126}
SAFETENSORS_NAMES = {torch.float16: "F16", torch.bfloat16: "BF16"}


def low_precision_state(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A tiny real timm Hiera with a window-periodic embedding, every tensor in ``dtype``."""
    state = {k: v.contiguous() for k, v in hm.timm_model().state_dict().items()}
    state["pos_embed"] = hm.planted()
    return {k: v.to(dtype) for k, v in state.items()}


def save(state: dict[str, torch.Tensor], folder: Path, container: str) -> Path:
    if container == "safetensors":
        path = folder / "model.safetensors"
        save_file(state, path)
    else:
        path = folder / "model.pth"
        torch.save({"model": state}, path)
    return path


def tensor_bytes(path: Path) -> dict[str, tuple[str, str]]:
    """Each tensor of a safetensors file: dtype and the sha256 of its raw bytes, read straight from the file."""
    entries, _ = read_header(path)
    data = path.read_bytes()
    return {k: (e.dtype, hashlib.sha256(data[e.start : e.end]).hexdigest()) for k, e in entries.items()}


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def absolute_win_in_float64(flat: torch.Tensor, out: int) -> torch.Tensor:
    """Hiera's absolute win written out independently, in float64: 8x8 tile means, antialiased bicubic of the rest."""
    c = flat.shape[-1]
    grid = flat.double().reshape(56, 56, c)
    window = grid.reshape(7, 8, 7, 8, c).mean(dim=(0, 2))
    rest = grid - window.repeat(7, 7, 1)
    up = F.interpolate(rest.permute(2, 0, 1)[None], size=(out, out), mode="bicubic", antialias=True, align_corners=False)
    return (up[0].permute(1, 2, 0) + window.repeat(out // 8, out // 8, 1)).reshape(1, out * out, c)


def rounded_once_from_float32(got: torch.Tensor, exact: torch.Tensor) -> bool:
    """Is every value of ``got`` within half a unit in the last place of ``exact`` (plus float32's own error)?

    Float32 (or better) maths is exact to a few float32 epsilons of the embedding's scale; rounding that once to
    ``got``'s dtype adds at most half the dtype's spacing at the value.
    """
    exponent = torch.floor(torch.log2(exact.abs().clamp_min(1e-30))).clamp_min(MIN_NORMAL_EXPONENT[got.dtype])
    half_spacing = 0.5 * torch.pow(2.0, exponent - MANTISSA_BITS[got.dtype])
    float32_error = 4 * torch.finfo(torch.float32).eps * exact.abs().max()
    return bool(((got.double() - exact).abs() <= half_spacing + float32_error).all())


@pytest.mark.parametrize("container", ["safetensors", "pth"])
@pytest.mark.parametrize("name", DTYPES)
def test_low_precision_stays_and_untouched_tensors_are_bit_identical(tmp_path, container, name):
    dtype = DTYPES[name]
    state = low_precision_state(dtype)
    source = save(state, tmp_path, container)
    out = tmp_path / "out.safetensors"
    convert(source, out, 448)

    written = tensor_bytes(out)
    assert set(written) == set(state)
    assert {d for d, _ in written.values()} == {SAFETENSORS_NAMES[dtype]}
    changed = {k for k, (_, h) in written.items() if h != digest(state[k])}
    assert changed == {"pos_embed"}  # every other tensor is the input, byte for byte


@pytest.mark.parametrize("name", DTYPES)
def test_the_maths_runs_in_float64_and_is_rounded_once(tmp_path, name):
    """Computed in float64 and rounded once (through float32, as torch's ``.to`` does), every value is within half a
    unit in the last place of the exact result (plus float32's spacing); maths done in the low precision, or rounded
    twice, is off by more."""
    dtype = DTYPES[name]
    state = low_precision_state(dtype)
    source = save(state, tmp_path, "safetensors")
    out = tmp_path / "out.safetensors"
    convert(source, out, 448)

    got = load_file(out)["pos_embed"]
    exact = absolute_win_in_float64(state["pos_embed"], 112)
    assert got.dtype == dtype and got.shape == exact.shape
    assert rounded_once_from_float32(got, exact)
    # The bound discriminates: doing the final addition in the low-precision dtype breaks it.
    grid = state["pos_embed"].float().reshape(56, 56, -1)
    window = grid.reshape(7, 8, 7, 8, -1).mean(dim=(0, 2))
    up = F.interpolate((grid - window.repeat(7, 7, 1)).permute(2, 0, 1)[None], size=(112, 112), mode="bicubic",
                       antialias=True, align_corners=False)[0].permute(1, 2, 0)
    rounded_twice = (up.to(dtype) + window.repeat(14, 14, 1).to(dtype)).reshape(1, -1, up.shape[-1])
    assert not rounded_once_from_float32(rounded_twice, exact)


def test_format_pt_keeps_the_dtype_and_the_untouched_tensors(tmp_path):
    state = low_precision_state(torch.bfloat16)
    source = save(state, tmp_path, "pth")
    convert(source, tmp_path / "out.pth", 448, fmt="pt")
    written = torch.load(tmp_path / "out.pth", weights_only=True)["model"]
    assert {t.dtype for t in written.values()} == {torch.bfloat16}
    assert {k for k in state if digest(written[k]) != digest(state[k])} == {"pos_embed"}


def test_bytes_survive_the_copy_between_file_systems(tmp_path):
    """Across file systems copy_file_range refuses (EXDEV) and the writer copies through a buffer: same bytes."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a second file system (/dev/shm) beside the temp folder")
    state = low_precision_state(torch.float16)
    source = save(state, tmp_path, "safetensors")
    convert(source, tmp_path / "same.safetensors", 448)
    with tempfile.TemporaryDirectory(dir=shm) as other:
        convert(source, Path(other) / "other.safetensors", 448)
        assert (Path(other) / "other.safetensors").read_bytes() == (tmp_path / "same.safetensors").read_bytes()
