"""The ``verify`` hook: does the converted checkpoint load into its runtime, and is it exact at the native size?

1. The model its ``config.json`` describes is built at ``img_size`` and loads the weights with ``strict=True``;
   a forward pass on a blank batch gives finite logits. A split output written as a bare file (no config of its
   own) is built from its source's timm config: the runtime reads the split from the weights.
2. A split output (window + global parts) composed at the source's native size equals the source embedding.

A failed check is a metric (``ok: false`` and the reason), not an exception: the zoo report shows it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import families
from ..checkpoint import open_checkpoint
from ..errors import AbswinError
from ..provenance import read_provenance
from ..verify import native_error
from .models import load_classifier

NATIVE_TOLERANCE = 1e-5


def run_verify(checkpoint: str | Path, img_size: int, source: str | Path | None = None) -> dict:
    """Check the converted ``checkpoint`` at ``img_size``; ``source`` defaults to the one its provenance names."""
    path = Path(checkpoint)
    ckpt = open_checkpoint(path)
    provenance = read_provenance(ckpt.metadata)
    _, det = families.detect(ckpt, provenance.get("family"))  # the family it was converted as, when recorded
    report: dict = {"family": det.family, "format": det.format, "img_size": img_size, "problems": []}
    source = source or provenance.get("source")
    report.update(_runtime_check(path, img_size, _config_for(path, source)))
    if det.format == "timm-abswin" and source and Path(source).exists():
        src = open_checkpoint(source)
        _, src_det = families.detect(src, det.family)
        error = native_error(src, src_det, ckpt.path)
        report["native_max_abs_error"] = error
        if error > NATIVE_TOLERANCE:
            report["problems"].append(f"window + global at the native size differ from the source by {error:.2e}")
    for key in ("residual", "window_energy"):
        if key in provenance:
            report[key] = float(provenance[key])
    if report.get("runtime_ok") is False:
        report["problems"].append(report["runtime_error"])
    report["ok"] = not report["problems"]
    return report


def _config_for(path: Path, source: str | Path | None) -> Path | None:
    """The output's own config.json, else its source's."""
    own = path / "config.json" if path.is_dir() else path.parent / "config.json"
    if own.is_file():
        return own
    if source is None:
        return None
    folder = Path(source) if Path(source).is_dir() else Path(source).parent
    return folder / "config.json" if (folder / "config.json").is_file() else None


def _runtime_check(path: Path, img_size: int, config: Path | None) -> dict:
    if config is None:
        return {"runtime": "skipped: no config.json beside the weights or their source to build the model from"}
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
