"""Convert (and optionally check and push) a whole model zoo from a TOML manifest.

    [defaults]                      # optional; any model key but `source` and `name`
    target = "baked"
    out = "converted"               # relative to the manifest's folder; --out overrides it

    [[model]]
    source = "org/hiera_tiny_224@main"      # a Hub name or a local path (relative to the manifest's folder)
    img_size = [448, "448x640"]             # one output per size
    target = "timm-abswin"
    global_size = "full"                    # or "28x28"
    push_to = "org/hiera_tiny_abswin_{size}"  # optional; {size}, {target}, {name} are filled in
    hooks = ["verify", {name = "eval", data = "fashion-mnist"}]  # or [[model.hooks]] tables
    resources = {num_gpus = 1}              # optional: what a Ray task asks for (--executor ray)
    # key, layout, window, patch_stride: as `convert --key ...` takes them, for a family we do not know

Each output is a folder ``OUT/{name}-{target}-{size}`` holding what ``convert -o FOLDER`` writes, plus
``abswin-hooks.json`` when hooks ran. It is built in a hidden staging folder and renamed into place only when the
conversion and its hooks succeeded, so an output folder is always complete. An output whose provenance records
the same source sha256, tool version and options is skipped, so a rerun after a crash or ``kill -9`` does only
what is missing. Outputs run in threads here (``local``) or as tasks on a Ray cluster (``ray``).

Modules: ``manifest`` (schema, checked on load), ``output`` (one output: skip, build, preview), ``executors`` (local
threads; ``ray_executor``: Ray tasks), ``runner`` (``run_zoo``), ``report`` (rows, report.json/report.md).
"""

from __future__ import annotations

from .executors import EXECUTORS, Progress
from .manifest import HookSpec, Manifest, OutputJob, load_manifest
from .report import REPORT_JSON, REPORT_MD, OutputRow, ZooReport
from .runner import run_zoo

__all__ = [
    "EXECUTORS", "REPORT_JSON", "REPORT_MD", "HookSpec", "Manifest", "OutputJob", "OutputRow",
    "Progress", "ZooReport", "load_manifest", "run_zoo",
]
