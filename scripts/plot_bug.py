"""Draw the README's picture of the bug: a window-periodic embedding, its naive resize, its absolute-win resize.

By default the embedding is synthetic (``synthetic.structured_grid``: an 8x8 window pattern plus a smooth global
field, as learned Hiera embeddings look); ``--source CKPT`` draws a real checkpoint's instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from abswin_convert.maths import absolute_win as aw
from abswin_convert.maths.resize import BICUBIC_ANTIALIAS
from abswin_convert.plot import save_panels
from abswin_convert.synthetic import structured_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default=None, help="a checkpoint to draw instead of the synthetic embedding")
    parser.add_argument("--out", type=Path, default=Path("docs/window_bug.png"))
    args = parser.parse_args()
    if args.source:
        from abswin_convert.api import load
        from abswin_convert.families.base import native_grid

        ckpt, det = load(args.source)[:2]
        grid, window, resize = native_grid(ckpt, det), det.window, det.resize
    else:
        grid, window, resize = structured_grid((56, 56), 16, (8, 8), seed=1), (8, 8), BICUBIC_ANTIALIAS
    target = (grid.shape[0] * 2, grid.shape[1] * 2)
    win, global_ = aw.split(grid, window)
    panels = [
        (f"learned, {grid.shape[0]}x{grid.shape[1]}", grid),
        (f"naive bicubic to {target[0]}x{target[1]}", aw.naive(grid, target, resize)),
        (f"absolute win to {target[0]}x{target[1]}", aw.compose(win, global_, target, resize)),
    ]
    title = "Window grid in white: the naive resize stretches the pattern off the windows"
    print(f"wrote {save_panels(panels, window, args.out, title)}")


if __name__ == "__main__":
    main()
