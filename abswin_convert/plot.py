"""Pictures of position embeddings: is this checkpoint window-periodic, and what does interpolating it do?

``inspect --plot`` draws the embedding as trained, what naive interpolation makes of it at the target size, and what
absolute win makes of it, under a one-sentence verdict. Each panel shows a ``[H, W, C]`` grid as colour: its
channels projected onto the three principal components of the first panel's grid (one basis and one colour scale
for all panels, so they compare), with the window boundaries drawn as thin lines.
Needs matplotlib (``pip install 'abswin-convert[plot]'``).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

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


def to_rgb(grids: list[np.ndarray]) -> list[np.ndarray]:
    """``[H, W, C]`` grids -> ``[H, W, 3]`` images in [0, 1], in the principal-component basis of the first."""
    ref = np.asarray(grids[0], dtype=np.float64).reshape(-1, grids[0].shape[-1])
    mean = ref.mean(axis=0)
    _, _, v = np.linalg.svd(ref - mean, full_matrices=False)
    basis = v[:3].T  # [C, <=3]
    projected = [(np.asarray(g, dtype=np.float64).reshape(-1, g.shape[-1]) - mean) @ basis for g in grids]
    scale = float(np.quantile(np.abs(projected[0]), 0.99)) or 1.0
    images = []
    for grid, p in zip(grids, projected):
        rgb = np.zeros((p.shape[0], 3))
        rgb[:, : p.shape[1]] = p
        images.append(np.clip(0.5 + 0.5 * rgb / scale, 0, 1).reshape(*grid.shape[:2], 3))
    return images


def draw_panels(ax_row, panels: list[tuple[str, np.ndarray]], window: Size | None,
                captions: list[str] | None = None) -> None:
    """Draw ``(title, grid)`` panels on a row of axes, window boundaries as thin white lines (none for a model
    without windows: ``window`` None); under each, its caption (default: its normalised window energy)."""
    if captions is None:
        assert window is not None
        captions = [f"window energy {aw.normalized_window_energy(g, window):.2f}" for _, g in panels]
    for ax, (title, grid), image, caption in zip(ax_row, panels, to_rgb([g for _, g in panels]), captions):
        ax.imshow(image, interpolation="nearest")
        h, w = grid.shape[:2]
        for y in range(window[0], h, window[0]) if window else ():
            ax.axhline(y - 0.5, color="white", linewidth=0.5, alpha=0.7)
        for x in range(window[1], w, window[1]) if window else ():
            ax.axvline(x - 0.5, color="white", linewidth=0.5, alpha=0.7)
        ax.set_title(title, fontsize=9.5)
        ax.set_xlabel(caption, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])


def save_panels(panels: list[tuple[str, np.ndarray]], window: Size, output: str | Path, title: str = "") -> Path:
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


def plot_embedding(grid: np.ndarray, window: Size, output: str | Path, title: str = "") -> Path:
    """The embedding, its tiled window part and its global part, side by side."""
    win, global_ = aw.split(grid, window)
    tiled = aw.tile(win, (grid.shape[0], grid.shape[1]))
    panels = [("embedding", grid), ("window part (tiled)", tiled), ("global part", global_)]
    return save_panels(panels, window, output, title)


COLOUR_KEY = (
    "Colour: each token's position vector, its channels projected onto their three main directions (PCA) as red, "
    "green, blue; one mapping for all panels, so equal colours mean equal vectors. White lines: the attention windows. "
    "Window energy (normalised): 0 = no pattern shared by the windows (as noise), 1 = every window the same."
)
NO_WINDOWS = "window energy undefined (no windows)"


def plot_checkpoint(source: str | Path, output: str | Path, family: str | None = None, overrides=None,
                    img_size: int | str | Size | None = None) -> Path:
    """``inspect --plot``: the embedding at its own size, then what naive interpolation and absolute win make of it
    at ``img_size`` (default twice the native size), windows drawn on all three, with a one-line verdict."""
    from .api import load
    from .families import base
    from .io.provenance import public_name
    from .maths.grid import as_size, format_size

    ckpt, det = load(source, family, overrides)[:2]  # a local path or a Hub name
    target = as_size(img_size) or (2 * det.native_input[0], 2 * det.native_input[1])
    out_grid = base.output_grid(det, target)
    native = base.native_grid(ckpt, det)
    parts, _ = base.read_parts(ckpt, det, None)
    naive = aw.naive(native, out_grid, det.resize)
    abswin = aw.compose(parts.window, parts.global_, out_grid, det.resize)
    size = f"{format_size(target)} px ({format_size(out_grid)} tokens)"
    name = f"{public_name(source)}: {det.family} ({det.spelling}), {det.pos_key}, windows of {format_size(det.window)} tokens"
    naive_title = f"naive interpolation ({det.resize.name.replace('-antialias', ', antialiased')}) to {size}"
    native_title = f"as trained: {format_size(det.native_input)} px ({format_size(det.grid)} tokens)"
    if det.tiles < 2:  # a plain ViT: one window is the whole grid, the model has no windows to draw or protect
        panels = [(native_title, native), (naive_title, naive), (f"--recipe tile (ViTDet tiling) to {size}", abswin)]
        name = f"{public_name(source)}: {det.family} ({det.spelling}), {det.pos_key}, no windows (global attention)"
        return save_figure(panels, [NO_WINDOWS] * 3, None, output, name, PLAIN_VERDICT)
    energy = [max(0.0, aw.normalized_window_energy(g, det.window)) for g in (native, naive, abswin)]  # < 0: chance
    panels = [(native_title, native), (naive_title, naive), (f"absolute win to {size}", abswin)]
    captions = [f"window energy {e:.2f}" for e in energy]
    return save_figure(panels, captions, det.window, output, name, verdict(energy, naive, abswin, det.tiles))


PLAIN_VERDICT = ("Plain ViT, no windows: keep the runtime's interpolation (middle); "
                 "convert refuses it without --recipe tile, which tiles it for a ViTDet finetune (right).")


def verdict(energy: list[float], naive: np.ndarray, abswin: np.ndarray, windows: int) -> str:
    """One sentence on the figure: does the choice of interpolation matter for this checkpoint, and what to do."""
    native, after_naive, after_abswin = energy
    if native > 0.2:
        return (f"Window-periodic: naive interpolation breaks it (window energy {native:.2f} -> {after_naive:.2f}); "
                f"convert it: absolute win keeps it ({after_abswin:.2f}).")
    differ = aw.relative_error(naive, abswin)
    if native > 0.05:
        return (f"Partly window-periodic (window energy {native:.2f}): naive interpolation weakens it to "
                f"{after_naive:.2f}, absolute win keeps {after_abswin:.2f}; the two differ by {differ:.0%}: convert it.")
    if differ < 0.1:
        return (f"No window pattern (window energy {native:.2f}): naive interpolation and absolute win agree "
                f"(within {differ:.0%}); either will do.")
    return (f"No window pattern (window energy {native:.2f}), yet the two differ by {differ:.0%}: absolute win "
            f"repeats what the {windows} windows share by chance; only a finetune will tell which is better.")


def save_figure(panels: list[tuple[str, np.ndarray]], captions: list[str], window: Size | None, output: str | Path,
                name: str, headline: str) -> Path:
    """Panels in a row under a bold ``headline`` and a ``name`` line, each with its caption, the colour key below."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 5.6), squeeze=False)
    draw_panels(axes[0], panels, window, captions)
    lines = textwrap.wrap(headline, 21 * len(panels) + 40)  # what fits the figure's width in bold 12 pt
    below = 0.035 * (len(lines) - 1)  # the name line and the panels move down one step per extra headline line
    fig.suptitle("\n".join(lines), fontsize=12, fontweight="bold", y=0.975)
    fig.text(0.5, 0.905 - below, name, ha="center", fontsize=9, color="dimgray")
    fig.text(0.5, 0.01, COLOUR_KEY, ha="center", va="bottom", fontsize=8.5, wrap=True, color="dimgray")
    fig.tight_layout(rect=(0, 0.11, 1, 0.89 - below))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output
