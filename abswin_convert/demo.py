"""``abswin-convert demo``: inspect, convert and verify the example checkpoint that ships with the package."""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

import torch

from . import families
from .api import convert, inspect
from .evaluation.verify import max_logit_difference, native_error
from .families import hiera
from .families.base import read_position
from .io.checkpoint import open_checkpoint
from .io.torch_bridge import torch_state_dict
from .maths import absolute_win as aw
from .maths.grid import to_grid
from .maths.resize import BICUBIC_ANTIALIAS
from .runtimes import timm as timm_runtime
from .vocabulary import TIMM_ABSWIN

EXAMPLE = "hiera_tiny"
TARGET = 128  # the example is trained at 64 px; absolute win carries it to twice the size
SLICE = 500  # Fashion-MNIST test images for the accuracy report


def example_path() -> Path:
    """The folder of the shipped example (``model.safetensors`` + timm's ``config.json``): a tiny Hiera trained
    on Fashion-MNIST at 64 px by ``scripts/replicate_toy.py``."""
    return Path(str(resources.files("abswin_convert") / "examples" / EXAMPLE))


def run_demo(out_dir: str | None = None) -> dict:
    """Run the whole path; returns a report with the printable ``lines``."""
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="abswin-demo-") as tmp:
            return _run(Path(tmp), kept=False)
    return _run(Path(out_dir), kept=True)


def _run(out: Path, kept: bool) -> dict:
    source = example_path()
    info = inspect(source)
    abswin = convert(source, out / TIMM_ABSWIN, TARGET, target=TIMM_ABSWIN, force=True)
    baked = convert(source, out / "baked", TARGET, target="baked", force=True)
    ckpt = open_checkpoint(source)
    det = families.detect(ckpt, hiera.NAME)
    report = {
        "inspect": info.to_json(),
        # a temp folder is gone when the demo returns: name its files by their place inside it
        "outputs": [str(p if kept else p.relative_to(out)) for p in (abswin.output, baked.output)],
        "kept": kept,
        "native_max_abs_error": native_error(ckpt, det, abswin.output),
        **_pattern_kept(ckpt, det, baked.output),
    }
    report.update(_runtime_checks(source, abswin.output, baked.output, det.native_input[0]))
    report["accuracy"] = _accuracy(source, baked.output.parent, det.native_input[0])
    report["lines"] = _lines(report)
    return report


def _pattern_kept(ckpt, det, baked_path: Path) -> dict:
    """Window energy at the target size: absolute win keeps the pattern, the naive resize smears it."""
    grid = read_position(ckpt, det).grid
    out_grid = (TARGET // det.patch_stride,) * 2
    baked = to_grid(open_checkpoint(baked_path).tensor(det.pos_key).float64(), "flat").grid
    naive = aw.naive(grid, out_grid, BICUBIC_ANTIALIAS)
    return {
        "energy_source": aw.normalized_window_energy(grid, det.window),
        "energy_abswin": aw.normalized_window_energy(baked, det.window),
        "energy_naive": aw.normalized_window_energy(naive, det.window),
    }


def _runtime_checks(source: Path, abswin_path: Path, baked_path: Path, native: int) -> dict:
    """Strict loads into timm and logit comparisons; without timm nothing is verified, and the demo says so."""
    try:
        import timm  # noqa: F401  (only asking whether it is installed)
    except ImportError:
        return {"runtime": "not verified: timm is not installed (pip install timm)"}
    config = open_checkpoint(source).config or {}
    channels = int(config.get("model_args", {}).get("in_chans", 3))
    states = {name: torch_state_dict(open_checkpoint(path))
              for name, path in (("source", source), ("abswin", abswin_path), ("baked", baked_path))}

    def build(name: str, size: int) -> torch.nn.Module:
        shapes = {key: tuple(value.shape) for key, value in states[name].items()}
        return timm_runtime.create(config["architecture"], timm_runtime.model_kwargs(config, size, shapes), states[name])

    return {
        "runtime": timm_runtime.version(),
        "logits_diff_native": max_logit_difference(build("source", native), build("abswin", native), native, channels=channels),
        "logits_diff_baked_vs_abswin": max_logit_difference(build("baked", TARGET), build("abswin", TARGET), TARGET,
                                                            channels=channels),
    }


def _accuracy(source: Path, baked: Path, native: int) -> dict | None:
    """Top-1 on a slice of the Fashion-MNIST test set, when its files are installed: the example at its own
    size, and at TARGET with the naive-resized embedding and with absolute win (no finetuning)."""
    from .evaluation.data import FASHION_MNIST_DIR

    if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        return None
    import torch

    from .evaluation.classifier import load_classifier
    from .evaluation.data import open_dataset
    from .evaluation.eval import evaluate, make_loader
    from .evaluation.finetune import start_model

    cpu = torch.device("cpu")
    results = {}
    for name, classifier in (
        (f"example @{native}", load_classifier(source, native)),
        (f"naive @{TARGET}", start_model(source, TARGET, "naive")),
        (f"absolute win @{TARGET}", load_classifier(baked, TARGET)),
    ):
        data = open_dataset(f"fashion-mnist:{FASHION_MNIST_DIR}", "eval", classifier.preprocess.geometry)
        results[name] = evaluate(classifier, make_loader(data, 250, cpu, limit=SLICE), cpu, progress=False)["top1"]
    return results


def _lines(r: dict) -> list[str]:
    i = r["inspect"]
    lines = [
        f"example        {i['file']}",
        f"               {i['family']} ({i['format']}), {i['position_key']} {i['position_shape']}, grid {i['grid']}, "
        f"window {i['window']}, window energy {i['window_energy_normalized']:.3f} (normalised)",
        f"converted      -> {r['outputs'][0]} (timm abswin parts)",
        f"               -> {r['outputs'][1]} (baked for {TARGET}x{TARGET})"
        + ("" if r["kept"] else "; in a temp folder, deleted on exit: -o DIR keeps them"),
        f"native check   window + global composed at {i['grid']} vs source: max abs error {r['native_max_abs_error']:.1e}",
        f"pattern        window energy at {TARGET}: absolute win {r['energy_abswin']:.3f}, "
        f"naive bicubic {r['energy_naive']:.3f} (source {r['energy_source']:.3f})",
    ]
    if "logits_diff_native" in r:
        lines += [
            f"runtime        {r['runtime']}: strict loads at {i['native_input']} and {TARGET} ok",
            f"               abswin model at {i['native_input']} vs original: max logit diff {r['logits_diff_native']:.1e}",
            f"               baked {TARGET} model vs abswin {TARGET} model: "
            f"max logit diff {r['logits_diff_baked_vs_abswin']:.1e}",
        ]
    else:
        lines.append(f"runtime        {r['runtime']}")
    if r["accuracy"]:
        lines.append(f"accuracy       Fashion-MNIST, first {SLICE} test images, no finetuning: "
                     + ", ".join(f"{k} {v:.3f}" for k, v in r["accuracy"].items()))
    else:
        lines.append("accuracy       skipped: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    checked = "logits_diff_native" in r  # without a runtime the logits were never compared
    ok = checked and r["native_max_abs_error"] < 1e-5 and r["logits_diff_native"] < 1e-4
    lines.append("verified       OK" if ok else "verified       FAILED" if checked else f"verified       NO: {r['runtime']}")
    r["ok"] = ok
    return lines
