"""The ``verify`` hook: does the converted checkpoint load into its runtime, and is it exact at the native size?

1. The model its ``config.json`` describes is built at ``img_size`` and loads the weights with ``strict=True``;
   a forward pass on a blank batch gives finite logits. A split output written as a bare file (no config of its
   own) is built from its source's timm config: the runtime reads the split from the weights.
2. A split output (window + global parts) composed at the source's native size equals the source embedding.

A failed check is a metric (``ok: false`` and the reason), not an exception: the zoo report shows it. ``ok`` is
true only when something was checked (a runtime built and loaded, or the native-size equivalence computed): a
verification that could not run says ``verified: false``, "not verified", and is not ok.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import families
from ..errors import AbswinError
from ..families.base import Detection, native_grid, read_position, read_window
from ..io.checkpoint import Checkpoint, open_checkpoint
from ..io.outputs import config_beside
from ..io.provenance import ONE_WINDOW, Provenance
from ..maths.absolute_win import compose
from ..vocabulary import TIMM_ABSWIN
from .classifier import load_classifier

NATIVE_TOLERANCE = 1e-5


def run_verify(checkpoint: str | Path, img_size: int, source: str | Path | None = None) -> dict:
    """Check the converted ``checkpoint`` at ``img_size``; ``source`` defaults to the one its provenance names."""
    path = Path(checkpoint)
    ckpt = open_checkpoint(path)
    provenance = Provenance.from_metadata(ckpt.metadata, str(path))
    conversion = provenance.conversion if provenance else None
    # the family it was converted as, when recorded
    _, det = families.recognise(ckpt, conversion.family if conversion else None)
    report: dict = {"family": det.family, "format": det.spelling, "img_size": img_size, "problems": []}
    source = source or (provenance.source if provenance else None)
    report.update(_runtime_check(path, img_size, _config_for(path, source)))
    if det.spelling == TIMM_ABSWIN and not (source and Path(source).exists()):
        # provenance names a source without its folder: the native-size check needs the file itself
        report["native_check"] = "not verified: pass the source (source=PATH) to compare at the native size"
    elif det.spelling == TIMM_ABSWIN:
        src, src_det = families.recognise(open_checkpoint(source), det.family)  # type: ignore[arg-type]
        error = native_error(src, src_det, ckpt.path)
        report["native_max_abs_error"] = error
        if error > NATIVE_TOLERANCE:
            report["problems"].append(f"window + global at the native size differ from the source by {error:.2e}")
    if conversion is not None:
        report["residual"] = conversion.residual
        report["window_energy"] = ONE_WINDOW if conversion.window_energy is None else conversion.window_energy
    if report.get("runtime_ok") is False:
        report["problems"].append(report["runtime_error"])
    report["verified"] = report.get("runtime_ok") is True or "native_max_abs_error" in report
    if not report["verified"]:
        report["problems"].append(report.get("runtime") or "not verified: nothing was checked")
    report["ok"] = report["verified"] and not report["problems"]
    report["verdict"] = "verified" if report["ok"] else "failed" if report["verified"] else "not verified"
    return report


def native_error(source: Checkpoint, source_det: Detection, output: Path) -> float:
    """Max abs difference between the source embedding and the written window + global parts composed
    at the native size: 0 (to float precision) when the conversion is exact there."""
    out, out_det = families.recognise(open_checkpoint(output), source_det.family)
    window = read_window(out, out_det)
    if window is None:
        raise AbswinError(f"{output} holds no split absolute-win embedding to check")
    composed = compose(window, read_position(out, out_det).grid, source_det.grid, out_det.resize)
    return float(np.abs(composed - native_grid(source, source_det)).max())


@torch.no_grad()
def max_logit_difference(a: torch.nn.Module, b: torch.nn.Module, img_size: int, seed: int = 0, channels: int = 3) -> float:
    """Max abs difference of two models' outputs on the same random batch."""
    x = torch.randn(2, channels, img_size, img_size, generator=torch.Generator().manual_seed(seed))
    return float((a(x) - b(x)).abs().max())


def _config_for(path: Path, source: str | Path | None) -> Path | None:
    """The output's own config.json, else its source's."""
    own = config_beside(path)
    if own is not None or source is None:
        return own
    return config_beside(Path(source))


def _runtime_check(path: Path, img_size: int, config: Path | None) -> dict:
    if config is None:
        return {"runtime": "not verified: no config.json beside the weights or their source to build the model from"}
    try:
        classifier = load_classifier(path, img_size, config)
    except AbswinError as exc:
        return {"runtime_ok": False, "runtime_error": str(exc)}
    channels = classifier.preprocess.channels
    with torch.no_grad():
        logits = classifier(torch.zeros(1, channels, img_size, img_size))
    finite = bool(torch.isfinite(logits).all())
    result = {"runtime": classifier.runtime, "runtime_ok": finite, "num_classes": int(logits.shape[-1])}
    if not finite:
        result["runtime_error"] = "the model's logits on a blank batch are not finite"
    return result
