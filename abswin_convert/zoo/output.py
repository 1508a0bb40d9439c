"""One output of the zoo, wherever it runs (a thread here, or a Ray worker): skip it, build it, or preview it.

An output is built in a hidden temp folder beside its final place (``io/staging.replaced_folder``), its hooks run
there, and it replaces the old folder whole only when the conversion and every hook succeeded; so an output folder
is always complete, and whatever a killed process leaves is a hidden temp folder the next zoo run removes.
"""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from ..api import convert
from ..errors import AbswinError, missing_torch
from ..evaluation.hooks import run_hook
from ..hub.locations import open_source
from ..io.outputs import read_output, write_hooks
from ..io.provenance import public_name, sha256_of
from ..io.staging import forget_claim, replaced_folder
from .manifest import HookSpec, OutputJob
from .report import OutputRow

SourceDigest = Callable[[], str]


def source_digest(location: str) -> SourceDigest:
    """The source's sha256 (a Hub source is downloaded, its LFS sha256 used), found once, when first asked for."""
    return functools.cache(lambda: _sha256_of_source(location))


def run_output(job: OutputJob, dry_run: bool, source_sha: SourceDigest) -> OutputRow:
    """Do ``job`` (or for a dry run, say what a run would do); a failure is the row's error, never raised."""
    start = time.monotonic()
    row = OutputRow(job.folder.name, job.source, job.size, job.target, "failed", host=socket.gethostname())
    try:
        (_preview if dry_run else _make)(job, row, source_sha)
    except AbswinError as error:
        row.status, row.error = "failed", str(error)
    except Exception as error:  # a bug in one output must not stop the others; the report names it
        row.status, row.error = "failed", f"internal error: {error.__class__.__name__}: {error}"
    row.seconds = time.monotonic() - start
    return row


def _make(job: OutputJob, row: OutputRow, source_sha: SourceDigest) -> None:
    if _up_to_date(job, source_sha):
        row.status = "skipped"
    else:
        _build(job)
        row.status = "converted"
    row.fill_from(job.folder)
    if job.push_to:
        from ..hub.push import push  # the Hub client is imported only by a zoo that pushes

        row.pushed = push(job.folder, job.push_to, private=job.private).pushed_revision


def _preview(job: OutputJob, row: OutputRow, source_sha: SourceDigest) -> None:
    """A source that cannot be fetched or read fails here already."""
    source_sha()
    if _up_to_date(job, source_sha):
        row.status = "up to date"
        row.fill_from(job.folder)
    else:
        row.status = "would convert"


def _up_to_date(job: OutputJob, source_sha: SourceDigest) -> bool:
    """Whether ``job.folder`` holds this tool version's output of this very source file with these options."""
    if not job.folder.is_dir():
        return False
    try:
        recorded = read_output(job.folder).provenance
    except AbswinError:  # not an output of ours (or a damaged one): build it again
        return False
    target = recorded.conversion.target if recorded.conversion else None
    recorded_options = (recorded.version, recorded.zoo_options, target, recorded.img_size)
    if recorded_options != (__version__, job.options(), job.target, job.img_size):
        return False
    return recorded.source_sha256 == source_sha()


def _sha256_of_source(location: str) -> str:
    """A Hub file's sha256 as its LFS metadata gives it (what a conversion records too), unhashed: it changes with
    the file, and is given only for the commit the file was downloaded from; else the file's own hash."""
    ckpt, hub_file = open_source(location)  # fetched through the Hugging Face cache for Hub sources
    if hub_file is not None and hub_file.sha256 is not None:
        return hub_file.sha256
    return sha256_of(ckpt.path)


def _build(job: OutputJob) -> None:
    """Convert into a hidden temp folder, run the hooks there, then put it in the place of the old output."""
    forget_claim(job.folder)  # a lost attempt's (its worker on another node, maybe): this path is this output's alone
    with replaced_folder(job.folder) as staging:
        result = convert(
            source=job.location,
            output=staging,
            img_size=job.img_size,
            target=job.target,
            global_size=job.global_size,
            fmt=job.fmt,
            family=job.family,
            overrides=job.overrides,
            provenance={"zoo_options": job.options()},
            **_window_options(job),
        )
        if job.hooks:
            write_hooks(staging, _run_hooks(job.hooks, result.output, job.location))


def _window_options(job: OutputJob) -> dict:
    """``convert``'s window-change arguments for the job's ``window_size`` (none when it has none)."""
    change = job.window_change
    if change is None:
        return {}
    return {"window_size": change.window, "relpos_resize": change.relpos_resize, "window_part": change.window_part}


def _run_hooks(hooks: tuple[HookSpec, ...], weights: Path, source: str) -> dict[str, dict]:
    """Every hook's metrics; a hook that raises, or says ``ok: false``, fails the output. ``verify`` is told the
    source the zoo converted (unless the entry names one), so that it recomputes the conversion from it."""
    results = {}
    for hook in hooks:
        options = {"source": source, **hook.options} if hook.name == "verify" else hook.options
        try:
            results[hook.name] = _shareable(run_hook(hook.name, weights, options))
        except AbswinError as error:
            raise AbswinError(f"hook {hook.name}: {error}") from error
        except Exception as error:  # a hook is somebody's code: its crash fails this output, named as its own
            install = missing_torch(error)
            why = f": {install}" if install else f" raised {error.__class__.__name__}: {error}"
            raise AbswinError(f"hook {hook.name}{why}") from error
        if results[hook.name].get("ok") is False:
            raise AbswinError(f"hook {hook.name} failed: {_why_not_ok(results[hook.name])}")
    return results


# Metrics that name files or data sets: recorded (and uploaded with the output) by name, not by local path.
_PATH_METRICS = ("checkpoint", "output", "data", "source")


def _shareable(metrics: dict) -> dict:
    return {k: public_name(v) if k in _PATH_METRICS and isinstance(v, str) else v for k, v in metrics.items()}


def _why_not_ok(result: dict) -> str:
    """One line from what a hook that said ``ok: false`` gave as its reasons."""
    problems = result.get("problems")
    reasons = [str(p) for p in problems] if isinstance(problems, list) else [str(problems or "")]
    reasons = [r for r in reasons if r] or [str(result.get("runtime") or "ok is false, without a reason")]
    return " ".join("; ".join(reasons).split())
