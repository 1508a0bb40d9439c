"""The numpy resizes against torch's F.interpolate (float64 input), up and down, odd and size-1 axes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from abswin_convert.maths.resize import BICUBIC, BICUBIC_ANTIALIAS, Resize, linear_matrix, resize_table

PAIRS = [(a, b) for a in range(1, 21) for b in range(1, 21)] + [
    (14, 64), (64, 14), (7, 256), (256, 7), (56, 112), (112, 56), (64, 100), (100, 64), (37, 91), (91, 37),
]
TOL = 1e-6


def _torch_resize(grid: np.ndarray, size: tuple[int, int], antialias: bool) -> np.ndarray:
    x = torch.from_numpy(grid).permute(2, 0, 1)[None]
    out = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=antialias)
    return out[0].permute(1, 2, 0).numpy()


def _rel(out: np.ndarray, ref: np.ndarray) -> float:
    scale = np.abs(ref).max()
    return float(np.abs(out - ref).max() / scale) if scale else float(np.abs(out).max())


@pytest.mark.parametrize("resize", [BICUBIC, BICUBIC_ANTIALIAS], ids=lambda r: r.name)
def test_matrix_matches_torch_on_one_hot_columns(resize: Resize) -> None:
    for n_in, n_out in PAIRS:
        basis = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, n_in, 1).repeat(1, 1, 1, 4)
        ref = F.interpolate(basis, size=(n_out, 4), mode="bicubic", align_corners=False, antialias=resize.antialias)
        ref = ref[:, 0, :, 0].T.numpy()
        got = resize.matrix(n_in, n_out)
        assert got.shape == (n_out, n_in) and got.dtype == np.float64
        assert _rel(got, ref) < TOL, (n_in, n_out)


@pytest.mark.parametrize("resize", [BICUBIC, BICUBIC_ANTIALIAS], ids=lambda r: r.name)
def test_apply_matches_torch_2d(resize: Resize) -> None:
    rng = np.random.default_rng(1)
    worst = 0.0
    for n_in, n_out in PAIRS:
        # height n_in -> n_out, width the other way round, 3 channels
        size = (n_out, n_in)
        if resize.antialias and size[1] == 1 and n_in != n_out:
            continue  # torch's quirk, see test_torch_antialias_width_one_quirk
        grid = rng.standard_normal((n_in, n_out, 3))
        got = resize.apply(grid, size)
        assert got.shape == (n_out, n_in, 3)
        worst = max(worst, _rel(got, _torch_resize(grid, size, resize.antialias)))
    assert worst < TOL


@pytest.mark.parametrize("resize", [BICUBIC, BICUBIC_ANTIALIAS], ids=lambda r: r.name)
def test_structured_grids_and_identity(resize: Resize) -> None:
    h, w = np.meshgrid(np.arange(14.0), np.arange(14.0), indexing="ij")
    grid = np.stack([h, w, np.sin(h) * np.cos(w), np.ones_like(h)], axis=-1)
    for size in [(14, 14), (28, 28), (7, 7), (20, 9), (1, 14), (14, 2)]:
        assert _rel(resize.apply(grid, size), _torch_resize(grid, size, resize.antialias)) < TOL
    np.testing.assert_array_equal(resize.apply(grid, (14, 14)), grid)
    np.testing.assert_allclose(resize.apply(np.ones((5, 7, 2)), (11, 3)), 1.0, atol=1e-12)  # constants survive


def test_torch_antialias_width_one_quirk() -> None:
    """torch's antialiased CPU kernel gives every output row the weights of row 0 when the output width is 1
    and the height changes; we keep the correct separable operator (no runtime grid is one token wide)."""
    grid = np.random.default_rng(2).standard_normal((6, 1, 1))
    ref = _torch_resize(grid, (3, 1), antialias=True)
    if np.allclose(ref[0], ref[1]):  # still there in this torch
        assert not np.allclose(BICUBIC_ANTIALIAS.apply(grid, (3, 1)), ref)
    column = BICUBIC_ANTIALIAS.matrix(6, 3) @ grid[:, 0, 0]
    np.testing.assert_allclose(BICUBIC_ANTIALIAS.apply(grid, (3, 1))[:, 0, 0], column)


def test_linear_matrix_matches_torch() -> None:
    rng = np.random.default_rng(3)
    for n_in, n_out in PAIRS + [(27, 127), (127, 27), (13, 63)]:
        x = rng.standard_normal((2, n_in))
        ref = F.interpolate(torch.from_numpy(x)[None], size=n_out, mode="linear", align_corners=False)[0].numpy()
        assert _rel(x @ linear_matrix(n_in, n_out).T, ref) < TOL, (n_in, n_out)


def test_resize_table() -> None:
    table = np.random.default_rng(4).standard_normal((27, 16))
    ref = F.interpolate(torch.from_numpy(table).T[None], size=127, mode="linear", align_corners=False)[0].T.numpy()
    assert _rel(resize_table(table, 127), ref) < TOL
    np.testing.assert_array_equal(resize_table(table, 27), table)


def test_names_and_bad_sizes() -> None:
    assert (BICUBIC.name, BICUBIC_ANTIALIAS.name) == ("bicubic", "bicubic-antialias")
    with pytest.raises(ValueError):
        BICUBIC.matrix(0, 3)
    with pytest.raises(ValueError):
        BICUBIC.apply(np.zeros((3, 3)), (2, 2))
