"""What changing a pretrained SAM's attention window (14 -> 16, segment-anything PR 594) does, on CPU.

    python scripts/sam_window.py effect [--depth 12] [--dim 768] [--smoke]
    python scripts/sam_window.py speed [--depth 12] [--repeats 3] [--smoke]

``effect``: for every ``--relpos-resize`` x ``--window-part`` choice, the relative difference
``||new - old|| / ||old||`` of the image encoder's output (after the neck) against the original model at its own
size (1024 px), the window-changed weights written by ``abswin_convert.convert_state_dict`` and loaded strictly into
segment-anything's own ``ImageEncoderViT(window_size=16)``. Three models of ViT-B's shape (``--depth`` fewer blocks
to save time; global blocks at the same relative places): random weights; random weights with a window-periodic
embedding planted (a 14-periodic pattern over a smooth field, as trained SAM embeddings show); and that planted
model whose windowed blocks' relative-position tables are smooth in the offset (as trained ones are), not white
noise. A SAM2 (Hiera-T shaped, random weights, sam2's own trunk) window_spec change (8, 4, 14, 7) -> (8, 4, 16, 8)
is measured too. The lowest difference per model is the choice the defaults follow.

``speed``: the image encoder's forward time at 1024 px, window 14 (64x64 tokens padded to 70x70) against 16 (no
padding), median of ``--repeats``, and the ratio; PR 594 reports SAM-L on a GPU at 13.47 -> 14.23 img/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import ImageEncoderViT

from abswin_convert import convert_state_dict
from abswin_convert.synthetic import structured_grid
from abswin_convert.vocabulary import RELPOS_RESIZES, WINDOW_PARTS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' random weights
from tests import random_weights

SIZE = 1024
VIT_B = {"dim": 768, "depth": 12, "heads": 12, "global": (2, 5, 8, 11)}


def encoder(dim: int, depth: int, heads: int, window: int) -> ImageEncoderViT:
    """segment-anything's image encoder, SAM ViT-B's build with ``depth`` blocks and ``window``."""
    parts = 4 if depth >= 8 else 2  # ViT-B: the last block of each quarter, (2, 5, 8, 11)
    global_blocks = tuple((i + 1) * depth // parts - 1 for i in range(parts))
    return ImageEncoderViT(
        img_size=SIZE, patch_size=16, embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=4, out_chans=256,
        qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
        global_attn_indexes=global_blocks, window_size=window,
    ).eval()


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights of a trained model's scale (upstream inits zero the embedding and the tables): the tests' random
    weights, with an embedding ~ 0.02."""
    return random_weights.randomize(model, seed, pos_embed_scale=0.02)


def plant(model: ImageEncoderViT, smooth_tables: bool, seed: int) -> ImageEncoderViT:
    """A 14-periodic embedding (``structured_grid``, x2 as tests/test_sam.py plants it); with ``smooth_tables`` the
    windowed blocks' tables made smooth functions of the offset (a random walk, low-passed)."""
    with torch.no_grad():
        grid = structured_grid((SIZE // 16, SIZE // 16), model.pos_embed.shape[-1], (14, 14), seed=seed) * 2
        model.pos_embed.copy_(torch.from_numpy(grid)[None])
        if smooth_tables:
            gen = torch.Generator().manual_seed(seed)
            for name, p in model.named_parameters():
                if name.endswith(("rel_pos_h", "rel_pos_w")):
                    walk = torch.randn(p.shape, generator=gen).cumsum(0)
                    walk = torch.nn.functional.avg_pool1d(walk.T[None], 5, 1, 2, count_include_pad=False)[0].T
                    p.copy_(0.5 * (walk - walk.mean(0)) / walk.std())
    return model


@torch.no_grad()
def encode(model: ImageEncoderViT, image: torch.Tensor) -> torch.Tensor:
    return model(image)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def effect(args: argparse.Namespace) -> None:
    image = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    models = {
        "random weights": lambda: randomize(encoder(args.dim, args.depth, args.heads, 14), 0),
        "+ planted 14-periodic embedding": lambda: plant(randomize(encoder(args.dim, args.depth, args.heads, 14), 0), False, 1),
        "+ smooth windowed tables": lambda: plant(randomize(encoder(args.dim, args.depth, args.heads, 14), 0), True, 1),
    }
    combos = [(r, p) for r in RELPOS_RESIZES for p in WINDOW_PARTS]
    print(f"SAM image encoder, dim {args.dim}, depth {args.depth}, {args.heads} heads, {SIZE} px, window 14 -> 16: "
          "relative difference of the output against the original")
    print("| model | " + " | ".join(f"{r}, {p}" for r, p in combos) + " |")
    print("|---|" + "---:|" * len(combos))
    for name, make in models.items():
        original = make()
        before = encode(original, image)
        state = {f"image_encoder.{k}": v for k, v in original.state_dict().items()}
        row = []
        for relpos_resize, window_part in combos:
            changed = convert_state_dict(state, window_size=16, relpos_resize=relpos_resize, window_part=window_part,
                                         measure=False)  # measured here, in segment-anything's own encoder
            model = encoder(args.dim, args.depth, args.heads, 16)
            model.load_state_dict({k.removeprefix("image_encoder."): v for k, v in changed.items()}, strict=True)
            row.append(relative(encode(model, image), before))
        best = int(np.argmin(row))
        print(f"| {name} | " + " | ".join(f"**{v:.4f}**" if i == best else f"{v:.4f}" for i, v in enumerate(row)) + " |")
    sam2_effect(args)


def sam2_effect(args: argparse.Namespace) -> None:
    """sam2's Hiera-T trunk (random weights) with window_spec (8, 4, 14, 7) and (8, 4, 16, 8): the same weights."""
    from sam2.modeling.backbones.hieradet import Hiera

    dim = 96 if not args.smoke else 16
    kwargs = {"embed_dim": dim, "num_heads": 1, "stages": (1, 2, 7, 2), "global_att_blocks": (5, 7, 9)}
    original = randomize(Hiera(window_spec=(8, 4, 14, 7), **kwargs), 2).eval()
    changed = Hiera(window_spec=(8, 4, 16, 8), **kwargs).eval()
    changed.load_state_dict(original.state_dict(), strict=True)
    image = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before, after = original(image), changed(image)
    diffs = ", ".join(f"{relative(a, b):.4f}" for a, b in zip(after, before))
    print(f"\nSAM2 Hiera-T trunk (dim {dim}, random weights), window_spec (8, 4, 14, 7) -> (8, 4, 16, 8), relative "
          f"difference per stage output: {diffs}")


def speed(args: argparse.Namespace) -> None:
    image = torch.randn(1, 3, SIZE, SIZE)
    times = {}
    for window in (14, 16):
        model = encoder(args.dim, args.depth, args.heads, window)
        encode(model, image)  # warm-up
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            encode(model, image)
            runs.append(time.perf_counter() - start)
        times[window] = statistics.median(runs)
    print(f"SAM image encoder, dim {args.dim}, depth {args.depth}, {args.heads} heads, {SIZE} px, CPU "
          f"({torch.get_num_threads()} threads), median of {args.repeats}")
    print("| window | tokens attended per window | forward (s) | img/s |")
    print("|---|---|---:|---:|")
    for window, seconds in times.items():
        padded = -(-SIZE // 16 // window) * window
        print(f"| {window} | {window}x{window} ({padded}x{padded} grid) | {seconds:.3f} | {1 / seconds:.3f} |")
    print(f"window 16 / window 14 throughput: {times[14] / times[16]:.3f}x (PR 594, SAM-L on a GPU: 14.23 / 13.47 = "
          f"{14.23 / 13.47:.3f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["effect", "speed"])
    parser.add_argument("--dim", type=int, default=VIT_B["dim"])
    parser.add_argument("--depth", type=int, default=VIT_B["depth"])
    parser.add_argument("--heads", type=int, default=VIT_B["heads"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny settings that check the script")
    args = parser.parse_args()
    if args.smoke:
        args.dim, args.depth, args.heads, args.repeats = 32, 4, 2, 1
    torch.manual_seed(0)
    {"effect": effect, "speed": speed}[args.command](args)


if __name__ == "__main__":
    main()
