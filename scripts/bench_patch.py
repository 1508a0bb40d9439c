"""CPU forward time of a model patched by ``abswin_convert.patch`` against the same model unpatched, at twice its
native input size, for timm's samvit and ViT (random weights; small by default).

Unpatched, both runtimes resize the embedding themselves on every forward (samvit always; the ViT built with
``dynamic_img_size=True``); patched, the embedding is composed by absolute win: cached in eval (the goal is at most
1.02x), recomputed every forward in training (at most 1.1x). A third column is the floor: the model built at the
large size with the embedding baked, which resizes nothing. Times are medians of interleaved repeats.
``--compile`` also times both under ``torch.compile`` (inductor) in eval, after a warm-up that compiles them.

    python scripts/bench_patch.py [--dim 192] [--depth 4] [--repeats 15] [--threads 1] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import timm
import torch
from timm.models.vision_transformer import VisionTransformer

import abswin_convert

MODES = ("eval", "train forward", "train fwd+bwd")


def builders(dim: int, depth: int) -> dict[str, tuple[Callable[..., torch.nn.Module], int, dict]]:
    """name -> (build(img_size, **options), native size, patch options)."""
    heads = max(1, dim // 64)

    def samvit(size: int, **_: object) -> torch.nn.Module:
        return timm.create_model("samvit_base_patch16", pretrained=False, img_size=size, embed_dim=dim, depth=depth,
                                 num_heads=heads, window_size=8, global_attn_indexes=(depth - 1,), neck_chans=64)

    def vit(size: int, dynamic: bool = False) -> torch.nn.Module:
        return VisionTransformer(img_size=size, patch_size=16, embed_dim=dim, depth=depth, num_heads=heads,
                                 dynamic_img_size=dynamic)

    return {"samvit": (samvit, 256, {}), "vit": (vit, 224, {"window": 14})}


def run(model: torch.nn.Module, x: torch.Tensor, mode: str) -> None:
    if mode == "eval":
        with torch.no_grad():
            model(x)
        return
    out = model(x)
    if mode == "train fwd+bwd":
        out.float().square().mean().backward()


def timed(variants: dict[str, tuple[torch.nn.Module, torch.Tensor]], mode: str, repeats: int) -> dict[str, float]:
    """Median seconds per call of each variant, measured in turn so that load changes hit all alike."""
    for model, x in variants.values():
        model.train(mode != "eval")
        run(model, x, mode)  # warm-up (and the first composition of the cache)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (model, x) in variants.items():
            start = time.perf_counter()
            run(model, x, mode)
            times[name].append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared host)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (inductor) in eval")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"CPU, {args.threads} thread(s), dim {args.dim}, depth {args.depth}, median of {args.repeats}")
    print(f"{'model':<8} {'mode':<15} {'px':>5} {'unpatched ms':>13} {'patched ms':>11} {'ratio':>6} {'baked ms':>9}")
    for name, (build, native, options) in builders(args.dim, args.depth).items():
        size = 2 * native
        x = torch.randn(2, 3, size, size)
        unpatched = build(native, dynamic=True)
        patched = abswin_convert.patch(build(native), **options)
        patched.load_state_dict(unpatched.state_dict())
        baked = build(size)
        baked.load_state_dict(abswin_convert.bake(patched, size))
        variants = {"unpatched": (unpatched, x), "patched": (patched, x), "baked": (baked, x)}
        modes = [*MODES, "eval, compiled"] if args.compile else MODES
        for mode in modes:
            if mode == "eval, compiled":
                variants = {k: (torch.compile(m), x) for k, (m, x) in variants.items()}  # type: ignore[misc]
            t = timed(variants, "eval" if mode == "eval, compiled" else mode, args.repeats)
            print(f"{name:<8} {mode:<15} {size:>5} {t['unpatched'] * 1e3:>13.1f} {t['patched'] * 1e3:>11.1f} "
                  f"{t['patched'] / t['unpatched']:>6.3f} {t['baked'] * 1e3:>9.1f}")


if __name__ == "__main__":
    main()
