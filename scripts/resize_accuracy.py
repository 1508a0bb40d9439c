"""How close the numpy resizes (``abswin_convert.maths.resize``) are to torch's ``F.interpolate``.

    python scripts/resize_accuracy.py [--max-side 64]

For every pair of sides ``1..max-side`` (height one way, width the other) plus a few large ones, a random
``[H, W, 4]`` grid is resized by both, in float64 and in float32 (what the runtimes compute in), and the worst
``max|ours - torch| / max|torch|`` is printed per resize. torch's antialiased kernel is wrong for a width-1 output
(see tests/test_resize_vs_torch.py); those pairs are counted apart.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from abswin_convert.maths.resize import BICUBIC, BICUBIC_ANTIALIAS, linear_matrix

LARGE = [(14, 64), (64, 14), (7, 256), (256, 7), (56, 112), (112, 56), (64, 100), (37, 91)]


def relative(ours: np.ndarray, ref: np.ndarray) -> float:
    scale = float(np.abs(ref).max())
    return float(np.abs(ours - ref).max()) / scale if scale else float(np.abs(ours).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-side", type=int, default=32)
    args = parser.parse_args()
    pairs = [(a, b) for a in range(1, args.max_side + 1) for b in range(1, args.max_side + 1)] + LARGE
    rng = np.random.default_rng(0)
    print("| resize | pairs | worst rel. error vs torch float64 | vs torch float32 |")
    print("|---|---:|---:|---:|")
    for resize in (BICUBIC, BICUBIC_ANTIALIAS):
        worst64 = worst32 = 0.0
        counted = 0
        for n_in, n_out in pairs:
            if resize.antialias and n_in == 1 and n_out != 1:
                continue  # torch's width-1 quirk (output width n_in = 1 while the height changes)
            grid = rng.standard_normal((n_in, n_out, 4))
            ours = resize.apply(grid, (n_out, n_in))
            nchw = torch.from_numpy(grid).permute(2, 0, 1)[None]
            for dtype in (torch.float64, torch.float32):
                ref = F.interpolate(nchw.to(dtype), size=(n_out, n_in), mode="bicubic", align_corners=False,
                                    antialias=resize.antialias)[0].permute(1, 2, 0).double().numpy()
                error = relative(ours, ref)
                if dtype == torch.float64:
                    worst64 = max(worst64, error)
                else:
                    worst32 = max(worst32, error)
            counted += 1
        print(f"| {resize.name} | {counted} | {worst64:.2e} | {worst32:.2e} |")
    worst = 0.0
    for n_in, n_out in pairs:
        x = rng.standard_normal((3, n_in))
        ref = F.interpolate(torch.from_numpy(x)[None], size=n_out, mode="linear", align_corners=False)[0].numpy()
        worst = max(worst, relative(x @ linear_matrix(n_in, n_out).T, ref))
    print(f"| linear (relative-position tables) | {len(pairs)} | {worst:.2e} | - |")


if __name__ == "__main__":
    main()
