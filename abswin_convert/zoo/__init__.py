"""Convert (and optionally check and push) a whole model zoo from a TOML manifest.

The manifest's schema, with examples, is ``abswin-convert zoo --help`` (``cli/zoo.py``); ``manifest`` checks it.

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
