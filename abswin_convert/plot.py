"""Pictures of position embeddings: is this checkpoint window-periodic at a glance?

Each panel shows a ``[H, W, C]`` grid as colour: its channels projected onto the three principal components of
the first panel's grid (one basis and one colour scale for all panels, so they compare), with the window
boundaries drawn as thin lines. Needs matplotlib (``pip install 'abswin-convert[plot]'``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import AbswinError
from .io.writer import atomic_file
from .maths import absolute_win as aw
from .maths.resize import Size

PLOT_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise AbswinError("plotting needs matplotlib; pip install 'abswin-convert[plot]' (or matplotlib)") from exc
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def to_rgb(grids: list[torch.Tensor]) -> list[np.ndarray]:
    """``[H, W, C]`` grids -> ``[H, W, 3]`` images in [0, 1], in the principal-component basis of the first."""
    ref = grids[0].double().reshape(-1, grids[0].shape[-1])
    mean = ref.mean(dim=0)
    _, _, v = torch.linalg.svd(ref - mean, full_matrices=False)
    basis = v[:3].T  # [C, <=3]
    projected = [(g.double().reshape(-1, g.shape[-1]) - mean) @ basis for g in grids]
    scale = float(torch.quantile(projected[0].abs().flatten(), 0.99)) or 1.0
    images = []
    for grid, p in zip(grids, projected):
        rgb = torch.zeros(p.shape[0], 3, dtype=torch.float64)
        rgb[:, : p.shape[1]] = p
        images.append((0.5 + 0.5 * rgb / scale).clamp(0, 1).reshape(*grid.shape[:2], 3).numpy())
    return images


def draw_panels(ax_row, panels: list[tuple[str, torch.Tensor]], window: Size) -> None:
    """Draw ``(title, grid)`` panels on a row of axes, window boundaries as thin white lines."""
    for ax, (title, grid), image in zip(ax_row, panels, to_rgb([g for _, g in panels])):
        ax.imshow(image, interpolation="nearest")
        h, w = grid.shape[:2]
        for y in range(window[0], h, window[0]):
            ax.axhline(y - 0.5, color="white", linewidth=0.5, alpha=0.7)
        for x in range(window[1], w, window[1]):
            ax.axvline(x - 0.5, color="white", linewidth=0.5, alpha=0.7)
        ax.set_title(f"{title}\nwindow energy {aw.normalized_window_energy(grid, window):.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])


def save_panels(panels: list[tuple[str, torch.Tensor]], window: Size, output: str | Path, title: str = "") -> Path:
    """One row of embedding panels, written to ``output`` (PNG)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    draw_panels(axes[0], panels, window)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.92 if title else 1))
    output = Path(output)
    image_format = plot_format(output)
    try:
        with atomic_file(output) as out:  # whole or not at all, like every output
            fig.savefig(out, format=image_format, dpi=120)
    finally:
        plt.close(fig)
    return output


def plot_format(output: Path) -> str:
    """The image format an output name asks for, or a one-line error naming those we write."""
    image_format = output.suffix.lower().lstrip(".")
    if image_format not in PLOT_FORMATS:
        raise AbswinError(f"cannot draw into {output.name}: give a name ending in {', '.join('.' + f for f in PLOT_FORMATS)}")
    return image_format


def plot_embedding(grid: torch.Tensor, window: Size, output: str | Path, title: str = "") -> Path:
    """The embedding, its tiled window part and its global part, side by side."""
    win, global_ = aw.split(grid, window)
    panels = [("embedding", grid), ("window part (tiled)", aw.tile(win, tuple(grid.shape[:2]))), ("global part", global_)]
    return save_panels(panels, window, output, title)


def plot_checkpoint(source: str | Path, output: str | Path, family: str | None = None, overrides=None) -> Path:
    """``inspect --plot``: the picture of a checkpoint's embedding (composed at its native size when split)."""
    from .api import load
    from .families.base import native_grid
    from .maths.grid import format_size

    ckpt, det = load(source, family, overrides)[:2]  # a local path or a Hub name
    title = f"{Path(str(source)).name}: {det.family} ({det.format}), {det.pos_key} grid {format_size(det.grid)}, window {format_size(det.window)}"
    return plot_embedding(native_grid(ckpt, det), det.window, output, title)
