"""``abswin-convert demo``: inspect, convert and verify the example checkpoint that ships with the package."""

from __future__ import annotations

import json
import tempfile
from importlib import resources
from pathlib import Path

from . import absolute_win as aw
from .convert import convert, inspect
from .checkpoint import open_checkpoint
from .families import hiera
from .families.base import read_position
from .grid import to_grid
from .resize import BICUBIC_ANTIALIAS
from .verify import load_state, max_logit_difference, native_error, timm_model

EXAMPLE = "hiera_tiny"
TARGET = 448


def example_path() -> Path:
    """The folder of the shipped example (``model.safetensors`` + timm's ``config.json``)."""
    return Path(str(resources.files("abswin_convert") / "examples" / EXAMPLE))


def run_demo(out_dir: str | None = None) -> dict:
    """Run the whole path; returns a report with the printable ``lines``."""
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="abswin-demo-") as tmp:
            return _run(Path(tmp))
    return _run(Path(out_dir))


def _run(out: Path) -> dict:
    source = example_path()
    info = inspect(source)
    abswin = convert(source, out / "timm-abswin", TARGET, target="timm-abswin", force=True)
    baked = convert(source, out / "baked", TARGET, target="baked", force=True)
    ckpt = open_checkpoint(source)
    det = hiera.detect(ckpt)
    assert det is not None
    report = {
        "inspect": info,
        "outputs": [str(abswin.output), str(baked.output)],
        "native_max_abs_error": native_error(ckpt, det, abswin.output),
        **_pattern_kept(ckpt, det, baked.output),
    }
    report.update(_runtime_checks(source, abswin.output, baked.output))
    report["lines"] = _lines(report)
    return report


def _pattern_kept(ckpt, det, baked_path: Path) -> dict:
    """Window energy at the target size: absolute win keeps the pattern, the naive resize smears it."""
    grid = read_position(ckpt, det).grid
    out_grid = (TARGET // det.patch_stride,) * 2
    baked = to_grid(open_checkpoint(baked_path).tensor(det.pos_key), "flat").grid
    naive = aw.naive(grid, out_grid, BICUBIC_ANTIALIAS)
    return {
        "energy_source": aw.normalized_window_energy(grid, det.window),
        "energy_abswin": aw.normalized_window_energy(baked, det.window),
        "energy_naive": aw.normalized_window_energy(naive, det.window),
    }


def _runtime_checks(source: Path, abswin_path: Path, baked_path: Path) -> dict:
    """Strict loads into timm and logit comparisons; skipped (and said so) when timm is not installed."""
    try:
        import timm  # noqa: F401
    except ImportError:
        return {"runtime": "skipped: timm is not installed (pip install timm)"}
    config = json.loads((source / "config.json").read_text())
    arch = config["architecture"]
    args = {**config.get("model_args", {}), "num_classes": config["num_classes"]}
    abswin_args = {**args, "abs_win_pos_embed": True, "global_pos_size": (56, 56)}
    original = timm_model(arch, args, load_state(source / "model.safetensors"))
    abswin_state = load_state(abswin_path)
    native = timm_model(arch, abswin_args, abswin_state, img_size=224)
    abswin_big = timm_model(arch, abswin_args, abswin_state, img_size=TARGET)
    baked_big = timm_model(arch, args, load_state(baked_path), img_size=TARGET)
    return {
        "runtime": f"timm {timm.__version__}",
        "logits_diff_native": max_logit_difference(original, native, 224),
        "logits_diff_baked_vs_abswin": max_logit_difference(baked_big, abswin_big, TARGET),
    }


def _lines(r: dict) -> list[str]:
    i = r["inspect"]
    lines = [
        f"example        {i['file']}",
        f"               {i['family']} ({i['format']}), {i['position_key']} {i['position_shape']}, grid {i['grid']}, "
        f"window {i['window']}, window energy {i['window_energy_normalized']:.3f} (normalised)",
        f"converted      -> {r['outputs'][0]} (timm abswin parts)",
        f"               -> {r['outputs'][1]} (baked for {TARGET}x{TARGET})",
        f"native check   window + global composed at 56x56 vs source: max abs error {r['native_max_abs_error']:.1e}",
        f"pattern        window energy at {TARGET}: absolute win {r['energy_abswin']:.3f}, "
        f"naive bicubic {r['energy_naive']:.3f} (source {r['energy_source']:.3f})",
    ]
    if "logits_diff_native" in r:
        lines += [
            f"runtime        {r['runtime']}: strict loads at 224 and {TARGET} ok",
            f"               abswin model at 224 vs original: max logit diff {r['logits_diff_native']:.1e}",
            f"               baked {TARGET} model vs abswin {TARGET} model: max logit diff {r['logits_diff_baked_vs_abswin']:.1e}",
        ]
    else:
        lines.append(f"runtime        {r['runtime']}")
    ok = r["native_max_abs_error"] < 1e-5 and r.get("logits_diff_native", 0) < 1e-4
    lines.append("verified       OK" if ok else "verified       FAILED")
    r["ok"] = ok
    return lines
