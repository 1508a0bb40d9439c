"""``inspect --plot``: the picture of an embedding, its window part and its global part."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from abswin_convert.demo import example_path
from abswin_convert.errors import AbswinError
from abswin_convert.maths import absolute_win as aw
from abswin_convert.maths.resize import BICUBIC
from abswin_convert.plot import plot_embedding, to_rgb
from abswin_convert.synthetic import structured_grid


def _read_png(path):
    import matplotlib.image

    return matplotlib.image.imread(path)


def test_inspect_plot_writes_a_png(tmp_path):
    out = tmp_path / "pic" / "embedding.png"
    done = subprocess.run(["abswin-convert", "inspect", str(example_path()), "--plot", str(out), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["plot"] == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = _read_png(out)
    assert image.shape[0] > 200 and image.shape[1] > 3 * image.shape[0] // 2  # three panels side by side


def test_periodic_embedding_looks_periodic():
    """For a perfectly window-periodic grid the tiled window panel is the embedding panel, and the global one is flat."""
    window = np.random.default_rng(0).standard_normal((8, 8, 6))
    grid = aw.tile(window, (32, 32))
    win, global_ = aw.split(grid, (8, 8))
    embedding_rgb, window_rgb, global_rgb = to_rgb([grid, aw.tile(win, (32, 32)), global_])
    assert np.allclose(embedding_rgb, window_rgb, atol=1e-6)
    assert np.ptp(global_rgb.reshape(-1, 3), axis=0).max() < 1e-6  # one flat colour
    assert np.ptp(embedding_rgb) > 0.5  # the pattern fills the colour range


def test_plot_embedding_of_a_structured_grid(tmp_path):
    out = plot_embedding(structured_grid((32, 32), 16, (8, 8)), (8, 8), tmp_path / "e.png", title="planted")
    assert _read_png(out).shape[2] in (3, 4)


def test_missing_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(AbswinError, match="pip install"):
        plot_embedding(structured_grid((16, 16), 4, (8, 8)), (8, 8), tmp_path / "e.png")
    assert not (tmp_path / "e.png").exists()


def test_the_verdict_names_what_naive_interpolation_does():
    from abswin_convert.plot import verdict

    grid = structured_grid((32, 32), 8, (8, 8))
    naive, abswin = aw.naive(grid, (64, 64), BICUBIC), aw.compose(*aw.split(grid, (8, 8)), (64, 64), BICUBIC)
    assert verdict([0.83, 0.13, 0.83], naive, abswin, 16).startswith("Window-periodic: naive interpolation breaks it")
    assert verdict([0.02, 0.0, 0.02], naive, naive, 16) == (
        "No window pattern (window energy 0.02): naive interpolation and absolute win agree (within 0%); either will do.")
    assert "yet the two differ by" in verdict([0.02, 0.0, 0.29], naive, abswin, 4)


def test_inspect_plot_of_a_periodic_checkpoint_says_so_at_the_size_asked(tmp_path, monkeypatch):
    """The figure's headline is what a newcomer reads first; text in the figure is checked through the saver."""
    import tests.hiera_models as hm
    from abswin_convert import plot

    _, source = hm.save_timm(tmp_path)
    seen = {}
    real = plot.save_figure
    monkeypatch.setattr(plot, "save_figure", lambda panels, captions, *rest: seen.update(panels=panels, rest=rest)
                        or real(panels, captions, *rest))
    out = plot.plot_checkpoint(source, tmp_path / "p.png", img_size=448)
    assert out.read_bytes()[:4] == b"\x89PNG"
    titles = [title for title, _ in seen["panels"]]
    assert titles[0].startswith("as trained: 224x224 px") and titles[2] == "absolute win to 448x448 px (112x112 tokens)"
    assert seen["rest"][-1].startswith("Window-periodic: naive interpolation breaks it")
    assert str(tmp_path) not in seen["rest"][-2]  # the source by name, not by its folder
