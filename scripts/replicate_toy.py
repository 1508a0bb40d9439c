"""Toy replication of "Window Attention is Bugged" (Bolya et al., ICLR 2024) on Fashion-MNIST.

Train a tiny Hiera (timm, 1 input channel) at 64 px, then move it to 128 px two ways and compare top-1:

- naive:  the learned embedding resized with timm's antialiased bicubic (what loaders do today);
- abswin: the embedding split into window part (tiled) + global part (resized), as two separate parameters of
          timm's absolute-win Hiera (``abswin_convert.evaluation.hooks.finetune.start_model``).

Both are evaluated zero-shot and after each of a few finetune steps, over several seeds. ``--mae-steps N`` adds a
second arm that first pretrains the encoder with hiera-transformer's masked autoencoder, to see whether MAE
pretraining makes the embedding window-periodic (the paper's explanation). Writes ``results.md`` and PNGs.

    python scripts/replicate_toy.py                     # defaults: about 10-15 min on 2 CPU cores
    python scripts/replicate_toy.py --device cuda --seeds 5 --train-steps 5000 --mae-steps 2000

``--arm vitdet`` runs the ViTDet arm instead (a plain ViT moved into a windowed runtime: naive resize, the tiling
recipe, split absolute win); it lives in ``scripts/replicate_toy_vitdet.py`` with its own options and writes
``results/vitdet.md``:

    python scripts/replicate_toy.py --arm vitdet --help
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.models._hub import save_for_hf

from abswin_convert import families
from abswin_convert.evaluation.classifier import Classifier, load_classifier
from abswin_convert.evaluation.data import FASHION_MNIST_DIR, Preprocess, open_dataset
from abswin_convert.evaluation.eval import evaluate, make_loader, prepare, resolve_device
from abswin_convert.evaluation.finetune import start_model, train
from abswin_convert.families import hiera as hiera_family
from abswin_convert.io.checkpoint import open_checkpoint
from abswin_convert.io.torch_bridge import to_torch
from abswin_convert.maths import absolute_win as aw
from abswin_convert.maths.grid import to_grid
from abswin_convert.maths.resize import BICUBIC_ANTIALIAS
from abswin_convert.plot import draw_panels

ARCH = "hiera_tiny_224"
# q_pool=2 as the official MAE Hiera-T; at 64 px the 16x16 token grid holds 2x2 mask units of 8x8.
MODEL_ARGS = {"embed_dim": 16, "num_heads": 1, "stages": [1, 1, 2, 1], "q_pool": 2, "in_chans": 1}
ARMS = ("hiera", "vitdet")
NATIVE, TARGET = 64, 128
WINDOW = (8, 8)
MEAN, STD = (0.2860,), (0.3530,)  # Fashion-MNIST train statistics
PRETRAINED_CFG = {
    "mean": list(MEAN), "std": list(STD), "interpolation": "bicubic", "crop_pct": 1.0, "input_size": [1, NATIVE, NATIVE],
    "tag": "fashion_mnist_toy", "license": "apache-2.0", "hf_hub_id": None,
}


@dataclass
class Run:
    """One seed of one pretraining arm."""

    arm: str
    seed: int
    native_top1: float = 0.0
    curves: dict[str, dict[int, float]] = field(default_factory=dict)  # pos -> step -> top1 at TARGET
    energy: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arm", choices=ARMS, default="hiera", help="vitdet: the ViTDet arm, with its own options")
    p.add_argument("--data", default=f"fashion-mnist:{FASHION_MNIST_DIR}")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=400, help="supervised steps at 64 px")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shift", type=int, default=0, help="random translation (pixels at 64 px) while training; 0 = off")
    p.add_argument("--mae-steps", type=int, default=200, help="steps of MAE pretraining for the second arm; 0 = no MAE arm")
    p.add_argument("--mae-mask-ratio", type=float, default=0.5)
    p.add_argument("--finetune-steps", type=int, default=40, help="steps at 128 px")
    p.add_argument("--finetune-lr", type=float, default=5e-4)
    p.add_argument("--finetune-batch-size", type=int, default=32)
    p.add_argument("--eval-at", default="0,10,20,40", help="finetune steps after which to evaluate")
    p.add_argument("--eval-images", type=int, default=500, help="test images per evaluation")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the default suits a shared machine)")
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument("--save-example", type=Path, default=None, help="save the seed-0 supervised model here (timm folder)")
    return p.parse_args()


def shifted(preprocess: Preprocess, pad: int):
    """Training transform: the eval geometry, then a random translation by up to ``pad`` pixels (zero fill)."""

    def transform(image: torch.Tensor) -> torch.Tensor:
        image = preprocess.geometry(image)
        if pad == 0:
            return image
        dy, dx = torch.randint(-pad, pad + 1, (2,)).tolist()
        return torch.roll(F.pad(image, (pad, pad, pad, pad)), (dy, dx), dims=(1, 2))[:, pad:-pad, pad:-pad]

    return transform


def new_classifier() -> Classifier:
    model = timm.create_model(ARCH, pretrained=False, num_classes=10, img_size=NATIVE, **MODEL_ARGS)
    preprocess = Preprocess(NATIVE, 1, MEAN, STD, "bicubic", 1.0)
    return Classifier(model, preprocess, "timm", 10, {})


def mae_pretrain(classifier: Classifier, args: argparse.Namespace, seed: int, device: torch.device, work: Path) -> float:
    """Pretrain with hiera-transformer's MAE, copy the encoder into the timm model; returns the embedding's energy."""
    from hiera.hiera_mae import MaskedAutoencoderHiera

    torch.manual_seed(seed)
    official = {k: v for k, v in MODEL_ARGS.items() if k != "in_chans"}
    mae = MaskedAutoencoderHiera(
        in_chans=1, input_size=(NATIVE, NATIVE), **official, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=1
    ).to(device)
    data = open_dataset(args.data, "train", shifted(classifier.preprocess, args.shift))
    batches = iter(make_loader(data, args.batch_size, device, shuffle=True, seed=seed))
    optimizer = torch.optim.AdamW(mae.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.05)
    for _ in range(args.mae_steps):
        try:
            images, _ = next(batches)
        except StopIteration:
            batches = iter(make_loader(data, args.batch_size, device, shuffle=True, seed=seed + 1))
            images, _ = next(batches)
        loss = mae(classifier.preprocess.normalize(images.to(device)), mask_ratio=args.mae_mask_ratio)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # Through the library: the official checkpoint's keys mapped to timm's, MAE-only parts dropped.
    path = work / f"mae-{seed}.pth"
    torch.save({"model_state": {k: v.detach().cpu() for k, v in mae.state_dict().items()}}, path)
    ckpt = open_checkpoint(path)
    det = families.detect(ckpt)
    mapping = hiera_family.timm_key_map(ckpt, det)
    state = {mapping[k]: to_torch(ckpt.tensor(k)) for k in mapping if not mapping[k].startswith("head.")}
    missing, unexpected = classifier.model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("head.") for k in missing), (missing, unexpected)
    return energy_of(classifier.model)


def energy_of(model: torch.nn.Module) -> float:
    return aw.normalized_window_energy(embedding_grid(model), WINDOW)


def embedding_grid(model: torch.nn.Module, size: int | None = None) -> np.ndarray:
    """The embedding the model adds, as a float64 ``[H, W, C]`` (composed at the model's grid when split)."""
    if model.pos_embed_win is not None:
        window = to_grid(model.pos_embed_win.detach().cpu().double().numpy(), "nchw").grid
        global_ = to_grid(model.pos_embed.detach().cpu().double().numpy(), "nchw").grid
        return aw.compose(window, global_, tuple(model.tokens_spatial_shape), BICUBIC_ANTIALIAS)
    grid = model.tokens_spatial_shape
    return model.pos_embed.detach().cpu()[0].reshape(grid[0], grid[1], -1).double().numpy()


def pretrain(run: Run, args: argparse.Namespace, device: torch.device, work: Path) -> Path:
    """Train at 64 px (after MAE for the ``mae`` arm); save as timm's save_for_hf does; returns the folder."""
    torch.manual_seed(run.seed)
    classifier = prepare(new_classifier(), device)
    if run.arm == "mae":
        run.energy["after_mae"] = mae_pretrain(classifier, args, run.seed, device, work)
    data = open_dataset(args.data, "train", shifted(classifier.preprocess, args.shift))
    train(classifier, make_loader(data, args.batch_size, device, shuffle=True, seed=run.seed), args.train_steps, args.lr,
          device, cosine=True)
    run.energy["learned"] = energy_of(classifier.model)
    folder = work / f"{run.arm}-{run.seed}"
    save_for_hf(classifier.model.cpu(), str(folder), model_config={"pretrained_cfg": PRETRAINED_CFG}, safe_serialization=True)
    return folder


def eval_loader(args: argparse.Namespace, classifier: Classifier, device: torch.device):
    data = open_dataset(args.data, "eval", classifier.preprocess.geometry)
    return make_loader(data, 250, device, limit=args.eval_images)


def transfer(run: Run, folder: Path, args: argparse.Namespace, device: torch.device, eval_at: list[int]) -> dict:
    """Zero-shot and finetuned accuracy at TARGET from each starting embedding; returns the embeddings drawn."""
    native = prepare(load_classifier(folder, NATIVE), device)
    run.native_top1 = evaluate(native, eval_loader(args, native, device), device, progress=False)["top1"]
    grids = {"learned": embedding_grid(native.model)}
    for pos in ("naive", "abswin"):
        torch.manual_seed(run.seed)
        classifier = prepare(start_model(folder, TARGET, pos), device)
        grids[pos] = embedding_grid(classifier.model)
        run.energy[pos] = aw.normalized_window_energy(grids[pos], WINDOW)
        loader = eval_loader(args, classifier, device)
        curve = run.curves.setdefault(pos, {})

        def on_eval(step: int, curve=curve, classifier=classifier, loader=loader) -> None:
            curve[step] = evaluate(classifier, loader, device, progress=False)["top1"]

        data = open_dataset(args.data, "train", shifted(classifier.preprocess, 2 * args.shift))
        train(classifier, make_loader(data, args.finetune_batch_size, device, shuffle=True, seed=run.seed),
              args.finetune_steps, args.finetune_lr, device, eval_at=eval_at, on_eval=on_eval)
        run.energy[f"{pos}_finetuned"] = aw.normalized_window_energy(embedding_grid(classifier.model), WINDOW)
    return grids


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def points(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):+.1f} ± {100 * sd:.1f}"


def write_results(runs: list[Run], args: argparse.Namespace, eval_at: list[int], grids: dict, out: Path, minutes: float,
                  device: torch.device) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(runs, eval_at, out / "accuracy_vs_steps.png")
    plot_grids(grids, out / "embedding.png")
    last = eval_at[-1]
    arms = sorted({r.arm for r in runs}, key=["supervised", "mae"].index)
    lines = [
        "# Toy replication: naive vs absolute-win position embeddings, 64 px -> 128 px",
        "",
        f"Written by `scripts/replicate_toy.py` ({_command(args)}), {len(runs) // len(arms)} seeds per arm, "
        f"{minutes:.1f} min on {device} ({torch.get_num_threads()} thread(s)).",
        "",
        f"Model: timm `{ARCH}` with {json.dumps(MODEL_ARGS)}, 10 classes; trained {args.train_steps} steps at {NATIVE} px "
        f"(batch {args.batch_size}, AdamW lr {args.lr}, cosine{f', random shift ±{args.shift} px' if args.shift else ''}). "
        f"At {NATIVE} px the 16x16 token grid is 2x2 mask units of 8x8; at {TARGET} px it is 32x32 = 4x4 units. "
        f"Finetune at {TARGET} px: {args.finetune_steps} steps, batch {args.finetune_batch_size}, lr {args.finetune_lr} "
        "(warmup then constant). "
        f"Top-1 on the first {args.eval_images} Fashion-MNIST test images. Mean ± sample standard deviation over seeds.",
        "",
        f"| arm | top-1 @{NATIVE} | naive @{TARGET}, 0 steps | abswin @{TARGET}, 0 steps | naive @{TARGET}, {last} steps "
        f"| abswin @{TARGET}, {last} steps | abswin − naive, 0 / {last} steps (points) |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm in arms:
        rs = [r for r in runs if r.arm == arm]
        col = lambda pos, step, rs=rs: [r.curves[pos][step] for r in rs]  # noqa: E731
        diff = lambda step, col=col: [a - n for a, n in zip(col("abswin", step), col("naive", step))]  # noqa: E731
        lines.append(
            f"| {arm} | {mean_sd([r.native_top1 for r in rs])} | {mean_sd(col('naive', 0))} | {mean_sd(col('abswin', 0))} "
            f"| {mean_sd(col('naive', last))} | {mean_sd(col('abswin', last))} | {points(diff(0))} / {points(diff(last))} |"
        )
    lines += [
        "",
        "Normalised window energy of the position embedding (0 = no window pattern, 1 = perfectly window-periodic; "
        "`absolute_win.normalized_window_energy`, 8x8 windows):",
        "",
        "| arm | after MAE | learned @64 | naive-resized @128 | absolute win @128 "
        "| naive after finetune | abswin after finetune |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm in arms:
        rs = [r for r in runs if r.arm == arm]
        e = lambda key, rs=rs: mean_sd([r.energy[key] for r in rs]) if key in rs[0].energy else "—"  # noqa: E731
        lines.append(f"| {arm} | {e('after_mae')} | {e('learned')} | {e('naive')} | {e('abswin')} "
                     f"| {e('naive_finetuned')} | {e('abswin_finetuned')} |")
    lines += ["", "Per seed (top-1 at each evaluated finetune step):", "",
              "| arm | seed | top-1 @64 | " + " | ".join(f"naive {s}" for s in eval_at) + " | "
              + " | ".join(f"abswin {s}" for s in eval_at) + " |",
              "|---|---|---|" + "---|" * (2 * len(eval_at))]
    for r in runs:
        lines.append(f"| {r.arm} | {r.seed} | {r.native_top1:.3f} | "
                     + " | ".join(f"{r.curves['naive'][s]:.3f}" for s in eval_at)
                     + " | " + " | ".join(f"{r.curves['abswin'][s]:.3f}" for s in eval_at) + " |")
    lines += ["", "![accuracy vs finetune steps](accuracy_vs_steps.png)", "",
              "![embedding: learned, naive-resized, absolute win](embedding.png)", ""]
    (out / "results.md").write_text("\n".join(lines))


def _command(args: argparse.Namespace) -> str:
    defaults = vars(parse_defaults())
    changed = [f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v != defaults.get(k) and k != "save_example"]
    return "defaults" if not changed else " ".join(changed)


def parse_defaults() -> argparse.Namespace:
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        return parse_args()
    finally:
        sys.argv = argv


def plot_curves(runs: list[Run], eval_at: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = sorted({r.arm for r in runs}, key=["supervised", "mae"].index)
    fig, axes = plt.subplots(1, len(arms), figsize=(5 * len(arms), 3.8), squeeze=False)
    for ax, arm in zip(axes[0], arms):
        rs = [r for r in runs if r.arm == arm]
        for pos, color in (("naive", "tab:red"), ("abswin", "tab:blue")):
            values = torch.tensor([[r.curves[pos][s] for s in eval_at] for r in rs])
            mean, sd = values.mean(0), values.std(0) if len(rs) > 1 else torch.zeros(len(eval_at))
            ax.plot(eval_at, mean, "o-", color=color, label=f"{pos} @{TARGET}")
            ax.fill_between(eval_at, mean - sd, mean + sd, color=color, alpha=0.2)
        native = statistics.mean(r.native_top1 for r in rs)
        ax.axhline(native, color="gray", linestyle="--", label=f"native @{NATIVE}")
        ax.set_xlabel(f"finetune steps at {TARGET} px")
        ax.set_ylabel("top-1")
        ax.set_title(f"{arm} ({len(rs)} seeds, mean ± sd)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_grids(grids: dict[str, dict[str, torch.Tensor]], path: Path) -> None:
    """One row per arm (seed 0): learned @64, naive @128, absolute win @128, in one colour basis per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(grids), 3, figsize=(9.6, 3.6 * len(grids)), squeeze=False)
    titles = {"learned": f"{{}}: learned @{NATIVE}", "naive": f"naive resize @{TARGET}", "abswin": f"absolute win @{TARGET}"}
    for row, (arm, g) in zip(axes, grids.items()):
        draw_panels(row, [(titles[k].format(arm), g[k]) for k in ("learned", "naive", "abswin")], WINDOW)
    fig.suptitle("position embedding, first 3 principal components as RGB; lines: 8x8 windows", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def chosen_arm(argv: list[str]) -> tuple[str, list[str]]:
    """``--arm`` and the rest of the command line, which belongs to that arm."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--arm", choices=ARMS, default="hiera")
    known, rest = pre.parse_known_args(argv)
    return known.arm, rest


def main() -> None:
    arm, rest = chosen_arm(sys.argv[1:])
    if arm == "vitdet":
        from replicate_toy_vitdet import main as vitdet_main  # scripts/ is on sys.path when run as a script

        vitdet_main(rest)
        return
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    eval_at = sorted({int(s) for s in args.eval_at.split(",")} | {0, args.finetune_steps})
    eval_at = [s for s in eval_at if s <= args.finetune_steps]
    arms = ["supervised"] + (["mae"] if args.mae_steps else [])
    runs, grids = [], {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="abswin-toy-") as tmp:
        for seed in range(args.seeds):
            for arm in arms:
                run = Run(arm, seed)
                t0 = time.perf_counter()
                folder = pretrain(run, args, device, Path(tmp))
                drawn = transfer(run, folder, args, device, eval_at)
                run.seconds = time.perf_counter() - t0
                runs.append(run)
                if seed == 0:
                    grids[arm] = drawn
                    if arm == "supervised" and args.save_example:
                        save_example(folder, args.save_example)
                print(f"{arm} seed {seed}: top-1 @{NATIVE} {run.native_top1:.3f}; @{TARGET} naive "
                      f"{run.curves['naive']} abswin {run.curves['abswin']}; energy "
                      f"{ {k: round(v, 3) for k, v in run.energy.items()} }; {run.seconds:.0f}s", flush=True)
    write_results(runs, args, eval_at, grids, args.out, (time.perf_counter() - start) / 60, device)
    print(f"wrote {args.out / 'results.md'}")


def save_example(folder: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "config.json"):
        (dest / name).write_bytes((folder / name).read_bytes())
    print(f"saved the example to {dest}")


if __name__ == "__main__":
    main()
