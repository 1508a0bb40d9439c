"""Property tests of the core maths (numpy, float64); tests/test_numpy_vs_torch.py holds them against torch."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from abswin_convert.maths import absolute_win as aw
from abswin_convert.maths.resize import BICUBIC, BICUBIC_ANTIALIAS

RESIZES = st.sampled_from([BICUBIC, BICUBIC_ANTIALIAS])


@st.composite
def grids(draw, min_side=2, max_side=24):
    h = draw(st.integers(min_side, max_side))
    w = draw(st.integers(min_side, max_side))
    c = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    return np.random.default_rng(seed).standard_normal((h, w, c))


windows = st.tuples(st.integers(1, 9), st.integers(1, 9))


@settings(max_examples=60, deadline=None)
@given(grids(), windows)
def test_split_then_compose_is_exact(grid, window):
    win, glob = aw.split(grid, window)
    assert win.shape == (*window, grid.shape[-1])
    assert np.allclose(aw.tile(win, grid.shape[:2]) + glob, grid, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(grids(), windows)
def test_window_part_is_masked_mean_over_tiles(grid, window):
    """Every in-window position averages the tiles where it exists, partial edge tiles included."""
    win, _ = aw.split(grid, window)
    h, w, _ = grid.shape
    for i in range(min(window[0], h)):
        for j in range(min(window[1], w)):
            expected = grid[i :: window[0], j :: window[1]].reshape(-1, grid.shape[-1]).mean(0)
            assert np.allclose(win[i, j], expected, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(grids(), st.integers(1, 30), st.integers(1, 30))
def test_add_tiled_adds_the_tiled_window_in_place_even_into_a_strided_view(grid, out_h, out_w):
    # the output tensor's grid is a view that skips prefix tokens or holds channels first: add_tiled writes through
    window = grid[: min(9, grid.shape[0]), : min(9, grid.shape[1])]
    before = np.random.default_rng(out_h * 31 + out_w).standard_normal((grid.shape[2], out_h, out_w + 2))
    buffer = before.copy()
    view = buffer.transpose(1, 2, 0)[:, 1:-1]  # [out_h, out_w, C], neither axis contiguous
    assert aw.add_tiled(view, window) is view
    assert np.array_equal(view, before.transpose(1, 2, 0)[:, 1:-1] + aw.tile(window, (out_h, out_w)))
    assert np.array_equal(buffer[:, :, [0, -1]], before[:, :, [0, -1]])  # nothing written outside the view


@settings(max_examples=60, deadline=None)
@given(grids(), windows, st.integers(1, 40), st.integers(1, 40))
def test_tile_is_anchored_top_left_ceil_then_crop(grid, window, out_h, out_w):
    win = grid[: window[0], : window[1]]
    tiled = aw.tile(win, (out_h, out_w))
    assert tiled.shape[:2] == (out_h, out_w)
    wh, ww = win.shape[:2]
    for i in (0, out_h // 2, out_h - 1):
        for j in (0, out_w // 2, out_w - 1):
            assert np.array_equal(tiled[i, j], win[i % wh, j % ww])


@settings(max_examples=40, deadline=None)
@given(grids(min_side=4), RESIZES)
def test_fit_global_at_full_size_is_the_input_with_zero_residual(grid, resize):
    fitted, residual = aw.fit_global(grid, tuple(grid.shape[:2]), resize)
    assert residual == 0.0
    assert np.array_equal(fitted, grid)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(grids(min_side=6, max_side=20), RESIZES)
def test_fit_global_residual_shrinks_with_size(grid, resize):
    """Bicubic spaces of different sizes are not nested, so strict monotonicity is not a theorem: on 300 random
    grids 4 of 4926 one-step increases raised the residual, by at most 0.016, and Hypothesis's search once found a
    grid where one step raised it by more than 0.02. So the examples are fixed (derandomized: the same 25 grids on
    every run, no flaky CI) and held to 0.02; to 0 at full size and <= 1 (never worse than no global part)."""
    side = min(grid.shape[:2])
    residuals = [aw.fit_global(grid, (s, s), resize)[1] for s in range(2, side + 1)]
    residuals.append(aw.fit_global(grid, tuple(grid.shape[:2]), resize)[1])
    assert all(0 <= r <= 1 + 1e-9 for r in residuals)
    assert residuals[-1] == 0.0
    assert all(b <= a + 0.02 for a, b in zip(residuals, residuals[1:]))


@settings(max_examples=40, deadline=None)
@given(grids(min_side=3), windows, RESIZES)
def test_compose_at_native_size_with_full_global_reproduces_input(grid, window, resize):
    win, glob = aw.split(grid, window)
    assert np.allclose(aw.compose(win, glob, tuple(grid.shape[:2]), resize), grid, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(grids(min_side=4, max_side=16), st.integers(2, 40), st.integers(2, 40), RESIZES)
def test_resize_is_the_separable_operator(grid, out_h, out_w, resize):
    """``apply`` is ``R_h @ grid @ R_w^T`` per channel: the operator the least-squares fit inverts."""
    h, w, _ = grid.shape
    by_matrix = resize.matrix(h, out_h) @ grid.transpose(2, 0, 1) @ resize.matrix(w, out_w).T
    assert np.allclose(by_matrix.transpose(1, 2, 0), resize.apply(grid, (out_h, out_w)), atol=1e-12)


def test_fit_global_recovers_a_grid_that_is_a_resize_of_a_small_one():
    small = np.random.default_rng(0).standard_normal((7, 7, 5))
    big = BICUBIC.apply(small, (64, 64))
    fitted, residual = aw.fit_global(big, (7, 7), BICUBIC)
    assert residual < 1e-10
    assert np.allclose(fitted, small, atol=1e-8)


def test_window_energy_separates_periodic_from_noise():
    rng = np.random.default_rng(0)
    periodic = aw.tile(rng.standard_normal((8, 8, 4)), (56, 56))
    noise = rng.standard_normal((56, 56, 4))
    assert aw.window_energy(periodic, (8, 8)) > 0.999
    assert math.isclose(aw.normalized_window_energy(periodic, (8, 8)), 1.0, abs_tol=1e-6)
    assert abs(aw.window_energy(noise, (8, 8)) - aw.chance_share((56, 56), (8, 8))) < 0.01
    assert abs(aw.normalized_window_energy(noise, (8, 8))) < 0.01


def test_naive_resize_breaks_the_window_pattern_and_compose_keeps_it():
    """The bug itself: bicubic upsampling stretches an 8-periodic pattern to a 16-periodic one."""
    grid = aw.tile(np.random.default_rng(0).standard_normal((8, 8, 4)), (56, 56))
    win, glob = aw.split(grid, (8, 8))
    assert aw.normalized_window_energy(aw.compose(win, glob, (112, 112), BICUBIC_ANTIALIAS), (8, 8)) > 0.999
    assert aw.normalized_window_energy(aw.naive(grid, (112, 112), BICUBIC_ANTIALIAS), (8, 8)) < 0.5


def test_window_energy_of_a_constant_embedding_is_zero():
    """Upstream models often zero-initialise the embedding; that is no pattern, not a negative one."""
    assert aw.normalized_window_energy(np.zeros((64, 64, 8)), (14, 14)) == 0.0
    assert aw.normalized_window_energy(np.full((56, 56, 4), 3.0), (8, 8)) == 0.0


@settings(max_examples=30, deadline=None)
@given(grids(), windows)
def test_window_energy_from_given_means_is_the_same(grid, window):
    """``decompose`` hands the window means it already has to the energy: the same number as computing them."""
    means = aw.window_means(grid, window)
    assert aw.normalized_window_energy(grid, window, means) == aw.normalized_window_energy(grid, window)
