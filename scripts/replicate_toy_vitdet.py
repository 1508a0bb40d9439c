"""ViTDet arm of the toy replication: is tiling a plain ViT's pretrained grid into every window the right start?

A plain ViT (timm ``VisionTransformer``, cls token, average pooling) is trained with global attention on
Fashion-MNIST at ``--native`` px. It is then run at twice that size in a ViTDet-style runtime, timm's
``VisionTransformerSAM``: windowed blocks whose window is the pretrained grid, plus a few global blocks (optionally
with SAM/ViTDet relative-position biases, zero-initialised as ViTDet adds them). Three starting embeddings, all made
by the product's own CLI (``abswin-convert convert ... --window``) from the pretrained checkpoint saved as a timm
safetensors file:

- ``naive``: ``--global-size`` equal to the pretrained grid, which is the plain bicubic resize loaders do;
- ``tiled``: the default ``--window`` recipe, the pretrained grid tiled into every window and baked;
- ``split``: absolute win as the paper trains it: ``abswin_convert.patch(model, split=True)`` on the runtime built
  at the pretrained size turns its embedding (there one window) into a trainable window part, tiled at run time,
  plus a trainable global part (the pretrained grid's size, zero, bicubic-resized); it composes to ``tiled`` at 2x.

Three data regimes at the larger size: ``content`` (the image upsampled 2x, objects twice as large in pixels),
``canvas`` (the native image at a random place on a 2x canvas, same pixel scale) and ``aligned`` (the same, placed
at a random window: the windowed blocks then see exactly a pretraining-sized image). Each start is evaluated
zero-shot and after a short AdamW finetune; every seed finetunes all starts on the same batches.

Runs are appended to ``--runs`` (JSON lines) and skipped when already there, so the matrix can be grown in
several invocations; ``--report`` writes ``results/vitdet.md`` and ``results/vitdet_accuracy.png`` from that file.

    # what results/vitdet.md shows (CPU, one thread): the base matrix, then the variants on the canvas regime
    python scripts/replicate_toy.py --arm vitdet --variants base
    python scripts/replicate_toy.py --arm vitdet --variants relpos,more-global --regimes canvas --inits naive,tiled \\
        --steps 100 --eval-at 0,100
    python scripts/replicate_toy.py --arm vitdet --variants long --regimes canvas --inits naive,tiled
    python scripts/replicate_toy.py --arm vitdet --report
    # the GPU size, not run yet (no GPU was lent): 112 -> 224 px, patch 8, 14x14 windows, 12 blocks, 4 global
    python scripts/replicate_toy.py --arm vitdet --device cuda --variants base,more-global,relpos,long \\
        --native 112 --patch 8 --dim 192 --heads 3 --depth 12 --global-blocks 4 --more-global-blocks 6 \\
        --pretrain-steps 5000 --steps 2000 --eval-at 0,200,1000,2000 --long-steps 5000 --eval-images 10000 \\
        --batch-size 128 \\
        --runs results/gpu/vitdet_runs.jsonl --out results/gpu --work /tmp/vitdet-gpu
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from replicate_toy import mean_sd, points  # the Hiera arm's table cells (scripts/ is on sys.path when run as a script)
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_sam import VisionTransformerSAM

import abswin_convert

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST train statistics
INITS = ("naive", "tiled", "split")
REGIMES = ("content", "canvas", "aligned")
VARIANTS = ("base", "more-global", "relpos", "long")
CLI = Path(sys.executable).with_name("abswin-convert")  # the product, as a user runs it


@dataclass(frozen=True)
class Setup:
    """One finetune configuration of the windowed runtime."""

    variant: str
    global_blocks: tuple[int, ...]
    rel_pos: bool
    steps: int
    eval_at: tuple[int, ...]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=FASHION_MNIST, help="folder with the Fashion-MNIST idx .gz files")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--variants", default="base", help=f"comma list of {','.join(VARIANTS)}")
    p.add_argument("--regimes", default="content,canvas,aligned", help=f"comma list of {','.join(REGIMES)}")
    p.add_argument("--inits", default=",".join(INITS))
    p.add_argument("--native", type=int, default=32, help="pretraining size in px; the windowed runtime runs at 2x")
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--global-blocks", type=int, default=1, help="global blocks of the base runtime (evenly spaced)")
    p.add_argument("--more-global-blocks", type=int, default=2, help="global blocks of the more-global variant")
    p.add_argument("--pretrain-steps", type=int, default=2000)
    p.add_argument("--pretrain-lr", type=float, default=2e-3)
    p.add_argument("--pretrain-batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=200, help="finetune steps at 2x")
    p.add_argument("--eval-at", default="0,100,200")
    p.add_argument("--long-steps", type=int, default=400, help="finetune steps of the long variant")
    p.add_argument("--lr", type=float, default=5e-4, help="finetune lr (20 warmup steps, then constant)")
    p.add_argument("--batch-size", type=int, default=32, help="finetune batch")
    p.add_argument("--eval-images", type=int, default=1000, help="first N test images")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path("/tmp/abswin-toy-vitdet"), help="pretrained + converted files")
    p.add_argument("--runs", type=Path, default=Path("results/vitdet_runs.jsonl"))
    p.add_argument("--report", action="store_true", help="only write the tables and plot from --runs")
    p.add_argument("--out", type=Path, default=Path("results"))
    return p.parse_args(argv)


# --- data ------------------------------------------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_split(folder: Path, split: str, native: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[N, 1, native, native]`` in [0, 1] (28 px padded to 32, then resized) and labels."""
    prefix = "train" if split == "train" else "t10k"
    images = torch.from_numpy(read_idx(folder / f"{prefix}-images-idx3-ubyte.gz").copy()).float().div(255)
    labels = torch.from_numpy(read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").copy()).long()
    images = F.pad(images[:, None], (2, 2, 2, 2))
    if native != 32:
        images = F.interpolate(images, size=(native, native), mode="bilinear", antialias=True).clamp(0, 1)
    return images, labels


def normalize(images: torch.Tensor) -> torch.Tensor:
    return (images - MEAN) / STD


def place(images: torch.Tensor, regime: str, generator: torch.Generator) -> torch.Tensor:
    """Native images as the runtime sees them at 2x: upsampled, or on a blank canvas (random or window-aligned)."""
    n, _, s, _ = images.shape
    if regime == "content":
        return F.interpolate(images, scale_factor=2, mode="bicubic").clamp(0, 1)
    canvas = images.new_zeros(n, 1, 2 * s, 2 * s)
    if regime == "canvas":
        offsets = torch.randint(0, s + 1, (n, 2), generator=generator)
    else:  # aligned: one of the four windows
        offsets = torch.randint(0, 2, (n, 2), generator=generator) * s
    for i, (y, x) in enumerate(offsets.tolist()):
        canvas[i, :, y: y + s, x: x + s] = images[i]
    return canvas


def batches(images: torch.Tensor, labels: torch.Tensor, size: int, seed: int,
            transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor]) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless random batches, the same sequence for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        index = torch.randint(0, len(images), (size,), generator=generator)
        yield normalize(transform(images[index], generator)), labels[index]


# --- models ----------------------------------------------------------------------------------------------------


def spaced(count: int, depth: int) -> tuple[int, ...]:
    """``count`` global blocks spread as ViTDet does: the last block of each of ``count`` equal groups."""
    return tuple((i + 1) * depth // count - 1 for i in range(count))


def plain_vit(args: argparse.Namespace) -> VisionTransformer:
    # Final norm before average pooling (fc_norm off) matches the SAM runtime's neck norm + average pool.
    return VisionTransformer(img_size=args.native, patch_size=args.patch, in_chans=1, num_classes=10,
                             embed_dim=args.dim, depth=args.depth, num_heads=args.heads, global_pool="avg",
                             fc_norm=False)


def windowed_vit(args: argparse.Namespace, setup: Setup, img_size: int) -> VisionTransformerSAM:
    """ViTDet-style runtime: windows of the pretrained grid's size, ``setup.global_blocks`` global."""
    return VisionTransformerSAM(
        img_size=img_size, patch_size=args.patch, in_chans=1, num_classes=10, embed_dim=args.dim, depth=args.depth,
        num_heads=args.heads, window_size=args.native // args.patch, global_attn_indexes=setup.global_blocks,
        use_rel_pos=setup.rel_pos, neck_chans=0, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
    )


def runtime_state(plain: dict[str, torch.Tensor], pos_embed: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """A plain-ViT state dict under the SAM runtime's names; the cls token and its embedding row dropped."""
    renames = {"norm.weight": "neck.weight", "norm.bias": "neck.bias", "head.weight": "head.fc.weight",
               "head.bias": "head.fc.bias"}
    state = {renames.get(k, k): v for k, v in plain.items() if k not in ("cls_token", "pos_embed")}
    if pos_embed is not None:
        side = math.isqrt(pos_embed.shape[1] - 1)
        state["pos_embed"] = pos_embed[:, 1:].reshape(1, side, side, -1)
    return state


def load_runtime(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Strict apart from what the plain ViT never had: relative-position tables (zero-init, as ViTDet adds them)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("rel_pos" in k for k in missing), (missing, unexpected)


def position_grid(model: torch.nn.Module, size: int) -> torch.Tensor:
    """The embedding the runtime adds on a ``size`` token grid, ``[H, W, C]`` (a patched model's as bake writes it)."""
    if hasattr(model, "_abswin_patch"):
        return abswin_convert.bake(model, size * model.patch_embed.patch_size[0])["pos_embed"][0]
    return model.pos_embed.detach()[0]


def window_energy(grid: torch.Tensor, window: int) -> float:
    from abswin_convert.maths import absolute_win

    return absolute_win.normalized_window_energy(grid.detach().cpu().double().numpy(), (window, window))


# --- training --------------------------------------------------------------------------------------------------


def optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW; no weight decay on position parameters (absolute, relative, split parts), norms and biases."""
    params = list(model.named_parameters())
    decayed = {n for n, p in params if p.ndim > 1 and "pos" not in n}
    return torch.optim.AdamW([{"params": [p for n, p in params if n in decayed], "weight_decay": 0.05},
                              {"params": [p for n, p in params if n not in decayed], "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95))


def train(model: torch.nn.Module, data: Iterator, steps: int, lr: float, device: torch.device, cosine: bool,
          on_step: Callable[[int], None] = lambda step: None) -> None:
    """``steps`` AdamW steps with 20 warmup steps, then cosine or constant; ``on_step(k)`` after k steps."""
    opt = optimizer(model, lr)
    warmup = min(20, steps)
    for step in range(1, steps + 1):
        scale = step / warmup if step <= warmup else 1.0
        if cosine and step > warmup:
            scale = 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        model.train()
        images, labels = next(data)
        loss = F.cross_entropy(model(images.to(device)), labels.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        on_step(step)


@torch.inference_mode()
def top1(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    model.eval()
    hits = sum(int((model(x.to(device)).argmax(1).cpu() == y).sum())
               for x, y in zip(images.split(250), labels.split(250)))
    return hits / len(labels)


# --- the product -----------------------------------------------------------------------------------------------


def abswin_cli(*argv: str) -> None:
    """Run ``abswin-convert`` (the entry point installed beside this interpreter)."""
    done = subprocess.run([str(CLI), *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"abswin-convert {' '.join(argv)} failed: {done.stderr.strip()}")


def convert_inits(source: Path, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """``pos_embed`` ``[1, 1 + h*w, C]`` for the 2x size: naive (global size = pretrained grid) and tiled."""
    grid, size = args.native // args.patch, 2 * args.native
    common = ["--img-size", str(size), "--window", f"{grid}x{grid}", "--force"]
    out = {}
    for init, extra in (("naive", ["--global-size", f"{grid}x{grid}"]), ("tiled", [])):
        dest = source.with_name(f"{source.stem}-{init}.safetensors")
        abswin_cli("convert", str(source), "-o", str(dest), *common, *extra)
        out[init] = load_file(dest)["pos_embed"]
    check_inits(load_file(source)["pos_embed"], out, grid)
    return out


def check_inits(pretrained: torch.Tensor, inits: dict[str, torch.Tensor], grid: int) -> None:
    """The conversions are what they claim: a plain bicubic resize, and the pretrained grid in every window."""
    src = pretrained[0, 1:].reshape(grid, grid, -1)
    naive = inits["naive"][0, 1:].reshape(2 * grid, 2 * grid, -1)
    tiled = inits["tiled"][0, 1:].reshape(2 * grid, 2 * grid, -1)
    expected = F.interpolate(src.permute(2, 0, 1)[None], scale_factor=2, mode="bicubic")[0].permute(1, 2, 0)
    assert torch.allclose(naive, expected, atol=1e-5), "naive init is not the bicubic resize"
    assert torch.equal(tiled, src.repeat(2, 2, 1)), "tiled init is not the pretrained grid per window"


# --- the experiment --------------------------------------------------------------------------------------------


def setups(args: argparse.Namespace) -> dict[str, Setup]:
    eval_at = tuple(sorted({0, args.steps, *(int(s) for s in args.eval_at.split(","))}))
    base = Setup("base", spaced(args.global_blocks, args.depth), False, args.steps, eval_at)
    return {
        "base": base,
        "more-global": Setup("more-global", spaced(args.more_global_blocks, args.depth), False, args.steps, eval_at),
        "relpos": Setup("relpos", base.global_blocks, True, args.steps, eval_at),
        "long": Setup("long", base.global_blocks, False, args.long_steps, tuple(sorted({*eval_at, args.long_steps}))),
    }


def pretrain(args: argparse.Namespace, seed: int, data: dict, device: torch.device) -> tuple[Path, dict]:
    """Train the plain ViT at the native size (or reuse it); save it as timm safetensors; its native top-1."""
    path = args.work / f"vit-seed{seed}.safetensors"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        return path, json.loads(meta_path.read_text())
    torch.manual_seed(seed)
    model = plain_vit(args).to(device)
    t0 = time.perf_counter()
    train(model, batches(*data["train"], args.pretrain_batch_size, seed, lambda x, g: x), args.pretrain_steps,
          args.pretrain_lr, device, cosine=True)
    test_images, test_labels = data["test"]
    meta = {"seed": seed, "top1_native": top1(model, normalize(test_images), test_labels, device),
            "seconds": time.perf_counter() - t0}
    # Sanity: the runtime at the native size (one window = the whole grid) without the cls token.
    runtime = windowed_vit(args, setups(args)["base"], args.native).to(device)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    load_runtime(runtime, runtime_state(state, state["pos_embed"]))
    meta["top1_runtime_native"] = top1(runtime, normalize(test_images), test_labels, device)
    args.work.mkdir(parents=True, exist_ok=True)
    save_file(state, path)
    meta_path.write_text(json.dumps(meta))
    return path, meta


def start(args: argparse.Namespace, setup: Setup, init: str, plain: dict, pos: dict, device: torch.device):
    """The windowed runtime at 2x, initialised as ``init`` says."""
    size = 2 * args.native
    if init == "split":
        # absolute win as the paper trains it: the runtime at the pretrained size, its embedding (one window there)
        # split by abswin_convert.patch into a window part (tiled at run time) and a zero global part of the
        # pretrained grid's size (bicubic-resized); the model then runs at 2x
        model = windowed_vit(args, setup, args.native)
        load_runtime(model, runtime_state(plain, plain["pos_embed"]))
        abswin_convert.patch(model, split=True)
        tiled = pos["tiled"][0, 1:].reshape(1, size // args.patch, size // args.patch, -1)
        assert torch.equal(abswin_convert.bake(model, size)["pos_embed"], tiled), "split must compose to the tiled one"
    else:
        model = windowed_vit(args, setup, size)
        load_runtime(model, runtime_state(plain, pos[init]))
    return model.to(device)


def run_one(args: argparse.Namespace, setup: Setup, regime: str, init: str, seed: int, plain: dict, pos: dict,
            data: dict, device: torch.device) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = start(args, setup, init, plain, pos, device)
    window = args.native // args.patch
    record = {"variant": setup.variant, "regime": regime, "init": init, "seed": seed, "steps": setup.steps,
              "global_blocks": list(setup.global_blocks), "rel_pos": setup.rel_pos,
              "energy_init": window_energy(position_grid(model, 2 * window), window), "top1": {}}
    eval_images, eval_labels = data["eval"][regime]

    def on_step(step: int) -> None:
        if step in setup.eval_at:
            record["top1"][str(step)] = top1(model, eval_images, eval_labels, device)

    on_step(0)
    train_images, train_labels = data["train"]
    train(model, batches(train_images, train_labels, args.batch_size, 1000 + seed, lambda x, g: place(x, regime, g)),
          setup.steps, args.lr, device, cosine=False, on_step=on_step)
    record["energy_final"] = window_energy(position_grid(model, 2 * window), window)
    record["seconds"] = time.perf_counter() - t0
    return record


def read_runs(path: Path) -> tuple[list[dict], list[dict]]:
    """Pretraining records and finetune records from the JSON-lines file."""
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r["pretrain"] for r in lines if "pretrain" in r], [r for r in lines if "pretrain" not in r]


def done_keys(path: Path) -> set[tuple]:
    return {(r["variant"], r["regime"], r["init"], r["seed"]) for r in read_runs(path)[1]}


def run_matrix(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    by_name = setups(args)
    chosen = [by_name[v] for v in args.variants.split(",")]
    regimes, inits = args.regimes.split(","), args.inits.split(",")
    train_set = load_split(args.data, "train", args.native)
    test_images, test_labels = load_split(args.data, "test", args.native)
    test_images, test_labels = test_images[: args.eval_images], test_labels[: args.eval_images]
    generator = torch.Generator().manual_seed(0)  # one fixed placement of the test images per regime
    data = {"train": train_set, "test": (test_images, test_labels),
            "eval": {r: (normalize(place(test_images, r, generator)), test_labels) for r in regimes}}
    args.runs.parent.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seeds):
        source, meta = pretrain(args, seed, data, device)
        print(f"seed {seed}: plain ViT top-1 @{args.native} {meta['top1_native']:.3f}, in the runtime without cls "
              f"{meta['top1_runtime_native']:.3f}", flush=True)
        if seed not in {m["seed"] for m in read_runs(args.runs)[0]}:
            _append(args.runs, {"pretrain": meta})
        plain, pos = load_file(source), convert_inits(source, args)
        for setup in chosen:
            for regime in regimes:
                for init in inits:
                    if (setup.variant, regime, init, seed) in done_keys(args.runs):
                        continue
                    record = run_one(args, setup, regime, init, seed, plain, pos, data, device)
                    _append(args.runs, record)
                    print(f"{setup.variant} {regime} {init} seed {seed}: {record['top1']} energy "
                          f"{record['energy_init']:.3f} -> {record['energy_final']:.3f}, {record['seconds']:.0f}s",
                          flush=True)


def _append(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")

# --- the report ------------------------------------------------------------------------------------------------


def cells(runs: list[dict]) -> dict[tuple[str, str, str], dict[int, list[float]]]:
    """(variant, regime, init) -> step -> top-1 per seed, seeds in order."""
    table: dict[tuple[str, str, str], dict[int, list[float]]] = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        for step, value in r["top1"].items():
            table.setdefault((r["variant"], r["regime"], r["init"]), {}).setdefault(int(step), []).append(value)
    return table


def paired(table: dict, variant: str, regime: str, init: str, step: int) -> list[float] | None:
    """Per-seed difference ``init - naive`` (every seed finetunes both on the same batches)."""
    a, b = table.get((variant, regime, init), {}).get(step), table.get((variant, regime, "naive"), {}).get(step)
    return [x - y for x, y in zip(a, b)] if a and b and len(a) == len(b) else None


def variant_table(table: dict, runs: list[dict], variant: str) -> list[str]:
    rs = [r for r in runs if r["variant"] == variant]
    steps = sorted({int(s) for r in rs for s in r["top1"]})
    seeds = len({r["seed"] for r in rs})
    first = rs[0]
    rel_pos = "on (zero-init)" if first["rel_pos"] else "off"
    title = (f"### {variant}: global blocks {first['global_blocks']}, relative positions {rel_pos}, "
             f"{first['steps']} finetune steps ({seeds} seeds)")
    header = ("| regime | init | " + " | ".join(f"{s} steps" for s in steps) + " | − naive, points: "
              + " / ".join(str(s) for s in steps) + " |")
    lines = [title, "", header, "|---|---|" + "---|" * (len(steps) + 1)]
    for regime in REGIMES:
        for init in INITS:
            curve = table.get((variant, regime, init))
            if not curve:
                continue
            diffs = [paired(table, variant, regime, init, s) for s in steps] if init != "naive" else []
            delta = " / ".join(points(d) if d else "—" for d in diffs) if diffs else ""
            values = " | ".join(mean_sd(curve[s]) if s in curve else "—" for s in steps)
            lines.append(f"| {regime} | {init} | {values} | {delta} |")
    return lines + [""]


def energy_table(runs: list[dict]) -> list[str]:
    lines = ["| variant | regime | init | window energy at init | after finetune |", "|---|---|---|---|---|"]
    for variant in VARIANTS:
        for regime in REGIMES:
            for init in INITS:
                rs = [r for r in runs if (r["variant"], r["regime"], r["init"]) == (variant, regime, init)]
                if rs:
                    lines.append(f"| {variant} | {regime} | {init} | {mean_sd([r['energy_init'] for r in rs])} "
                                 f"| {mean_sd([r['energy_final'] for r in rs])} |")
    return lines + [""]


def wins(table: dict) -> list[str]:
    """Cells where tiled or split beat naive in every seed."""
    found = []
    for (variant, regime, init), curve in sorted(table.items()):
        for step in sorted(curve) if init != "naive" else []:
            diff = paired(table, variant, regime, init, step)
            if diff and min(diff) > 0:
                found.append(f"- {variant}, {regime}, {init} at {step} steps: {points(diff)} points over naive")
    return found or ["- none: in no variant, regime and step count did tiled or split beat naive in every seed"]


def describe(args: argparse.Namespace, finetunes: int, seconds: float) -> list[str]:
    """The report's opening: what was trained, converted and measured (from this invocation's options)."""
    g = f"{args.native // args.patch}x{args.native // args.patch}"
    return [
        "# Toy replication, ViTDet arm: naive resize vs the tiling recipe vs split absolute win",
        "",
        (f"Written by `scripts/replicate_toy.py --arm vitdet` from `{args.runs}` ({finetunes} finetunes, "
         f"{seconds / 60:.1f} minutes of pretraining, finetuning and evaluation, wall clock at {args.threads} "
         "thread(s); the command lines are in the script's docstring)."),
        "",
        (f"Plain ViT (timm `VisionTransformer`, patch {args.patch}, dim {args.dim}, {args.heads} heads, depth "
         f"{args.depth}, cls token, average pooling, 1 input channel) trained with global attention on Fashion-MNIST "
         f"at {args.native} px ({args.pretrain_steps} steps, batch {args.pretrain_batch_size}, AdamW lr "
         f"{args.pretrain_lr}, cosine). Run at {2 * args.native} px in timm's `VisionTransformerSAM` with {g} "
         "windows (the pretrained grid) and the listed global blocks; the cls token is dropped, as ViTDet does. "
         f"Finetune: batch {args.batch_size}, AdamW lr {args.lr} (20 warmup steps, then constant), the same batches "
         f"for every init of a seed. Top-1 on the first {args.eval_images} test images (one fixed placement per "
         "regime). Mean ± sample sd over seeds; \"− naive\" is the per-seed paired difference in points."),
        "",
        (f"Inits, all from the product's CLI on the pretrained timm safetensors: **naive** = `convert --window {g} "
         f"--global-size {g}` (the plain bicubic resize), **tiled** = `convert --window {g}` (the pretrained grid in "
         "every window, baked), **split** = the tiled output's first window as a trainable window part plus a "
         f"zero-initialised trainable {g} global part (bicubic-resized), as the paper trains absolute win. Regimes: "
         "**content** = the image upsampled 2x; **canvas** = the native image at a random place on a 2x canvas; "
         "**aligned** = the same at a random window (one of four)."),
        "",
    ]


def write_report(args: argparse.Namespace, out: Path) -> None:
    pretrained, runs = read_runs(args.runs)
    table = cells(runs)
    seconds = sum(m["seconds"] for m in pretrained) + sum(r["seconds"] for r in runs)
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in runs)]
    lines = [*describe(args, len(runs), seconds), "## Pretraining", "",
             "| seeds | plain ViT top-1 @native | the same weights in the runtime @native, without cls |",
             "|---|---|---|",
             (f"| {len(pretrained)} | {mean_sd([m['top1_native'] for m in pretrained])} "
              f"| {mean_sd([m['top1_runtime_native'] for m in pretrained])} |"),
             "", "## Top-1 at 2x", ""]
    for variant in variants:
        lines += variant_table(table, runs, variant)
    lines += ["## Where tiled or split beat naive in every seed", "", *wins(table), "",
              "## Window energy of each init (normalised; 0 = no window pattern, 1 = perfectly periodic)", "",
              *energy_table(runs), "![top-1 against finetune steps](vitdet_accuracy.png)", "",
              "What this means for choosing a recipe: [README](../README.md#which-recipe-for-a-plain-vit).", ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / "vitdet.md").write_text("\n".join(lines))
    plot(table, variants, statistics.mean(m["top1_native"] for m in pretrained), out / "vitdet_accuracy.png")
    print(f"wrote {out / 'vitdet.md'}")


def plot(table: dict, variants: list[str], native: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = [r for r in REGIMES if any(k[1] == r for k in table)]
    fig, axes = plt.subplots(len(variants), len(regimes), figsize=(4.2 * len(regimes), 3.2 * len(variants)),
                             squeeze=False)
    colors = {"naive": "tab:red", "tiled": "tab:green", "split": "tab:blue"}
    for row, variant in zip(axes, variants):
        for ax, regime in zip(row, regimes):
            if not any((variant, regime, init) in table for init in INITS):
                ax.axis("off")
                continue
            for init in INITS:
                curve = table.get((variant, regime, init))
                if not curve:
                    continue
                steps = sorted(curve)
                values = torch.tensor([curve[s] for s in steps])
                mean, sd = values.mean(1), values.std(1) if values.shape[1] > 1 else torch.zeros(len(steps))
                ax.plot(steps, mean, "o-", color=colors[init], label=init, markersize=3)
                ax.fill_between(steps, mean - sd, mean + sd, color=colors[init], alpha=0.15)
            ax.axhline(native, color="gray", linestyle="--", linewidth=1, label="plain ViT @native")
            ax.set_title(f"{variant}, {regime}", fontsize=9)
            ax.set_xlabel("finetune steps")
            ax.set_ylabel("top-1")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.report:
        run_matrix(args)
    write_report(args, args.out)


if __name__ == "__main__":
    main()
