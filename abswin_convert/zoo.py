"""Convert (and optionally check and push) a whole model zoo from a TOML manifest.

    [defaults]                      # optional; any model key but `source` and `name`
    to = "baked"
    out = "converted"               # relative to the manifest's folder; --out overrides it

    [[model]]
    source = "org/hiera_tiny_224@main"      # a Hub name or a local path (relative to the manifest's folder)
    img_size = [448, "448x640"]             # one output per size
    to = "timm-abswin"
    global_size = "full"                    # or "28x28"
    push_to = "org/hiera_tiny_abswin_{size}"  # optional; {size}, {target}, {name} are filled in
    hooks = ["verify", {name = "eval", data = "fashion-mnist"}]  # or [[model.hooks]] tables

Each output is a folder ``OUT/{name}-{target}-{size}`` holding what ``convert -o FOLDER`` writes, plus
``abswin-hooks.json`` when hooks ran. It is built in a hidden staging folder and renamed into place only when the
conversion and its hooks succeeded, so an output folder is always complete. An output whose provenance records
the same source sha256, tool version and options is skipped, so a rerun after a crash or ``kill -9`` does only
what is missing. Entries run concurrently in threads (downloads, file I/O and torch release the GIL).
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .api import convert
from .errors import AbswinError
from .families.base import TARGETS
from .hub.model_card import format_value, markdown_table
from .hub.push import push
from .hub.sources import open_source, parse_hub_source
from .io.jsonfile import write_json
from .io.outputs import WEIGHT_SUFFIXES, read_output, write_hooks
from .io.provenance import sha256_of
from .io.writer import atomic_file
from .maths.grid import format_size, parse_size
from .maths.resize import Size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
STAGING_MARK = ".abswin-zoo-"  # hidden folders `.NAME.abswin-zoo-partial` / `-old`: never a finished output
_MODEL_KEYS = {"source", "name", "img_size", "to", "global_size", "format", "family", "push_to", "private", "hooks"}
_DEFAULT_KEYS = (_MODEL_KEYS - {"source", "name"}) | {"out"}
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class HookSpec:
    """A hook to run on each output: a built-in name or ``package.module:function``, with its options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "options": self.options}


@dataclass(frozen=True)
class OutputJob:
    """One output of one manifest entry."""

    entry: int  # index of the [[model]] table, from 0
    source: str  # as the manifest writes it (the report shows this)
    location: str  # what is opened: a Hub name, or a local path resolved against the manifest's folder
    name: str
    img_size: Size
    target: str
    global_size: str
    fmt: str
    family: str | None
    folder: Path
    push_to: str | None
    private: bool
    hooks: tuple[HookSpec, ...]

    @property
    def size(self) -> str:
        return format_size(self.img_size)

    def options(self) -> str:
        """Everything that decides the output's contents besides the source, as recorded in its provenance."""
        options = {
            "target": self.target,
            "img_size": self.size,
            "global_size": self.global_size,
            "format": self.fmt,
            "family": self.family,
            "hooks": [hook.to_json() for hook in self.hooks],
        }
        return json.dumps(options, sort_keys=True, separators=(",", ":"))


@dataclass
class OutputRow:
    """One line of the report."""

    output: str
    source: str
    size: str
    target: str
    status: str  # converted | skipped | failed (dry run: would convert | up to date)
    seconds: float = 0.0
    residual: float | None = None
    window_energy: float | None = None
    pushed: str | None = None  # the commit (or refs/pr/N) the output is at on the Hub
    error: str | None = None
    hooks: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return dict(self.__dict__, seconds=round(self.seconds, 3))


@dataclass
class ZooReport:
    manifest: Path
    out: Path
    rows: list[OutputRow]
    dry_run: bool = False

    @property
    def failed(self) -> int:
        return sum(row.status == "failed" for row in self.rows)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        return counts

    def to_json(self) -> dict:
        return {
            "manifest": str(self.manifest),
            "out": str(self.out),
            "version": __version__,
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "outputs": [row.to_json() for row in self.rows],
        }

    def markdown(self) -> str:
        header = ("output", "source", "size", "target", "status", "seconds", "residual", "window energy", "pushed",
                  "hooks", "error")
        rows = [
            (
                f"`{r.output}`",
                f"`{r.source}`",
                r.size,
                r.target,
                r.status,
                f"{r.seconds:.1f}",
                _number(r.residual),
                _number(r.window_energy),
                f"`{r.pushed[:12]}`" if r.pushed else "",
                _hooks_cell(r.hooks),
                " ".join((r.error or "").split()),
            )
            for r in self.rows
        ]
        title = f"# abswin-convert zoo: {self.manifest.name}"
        return f"{title}\n\n{self.summary()}.\n\n{markdown_table(header, rows)}\n"

    def summary(self) -> str:
        """E.g. ``5 outputs: 3 converted, 1 failed, 1 skipped``."""
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts().items()))
        return f"{len(self.rows)} outputs: {counts}"


class Progress:
    """Callbacks the runner calls from its worker threads; the default does nothing (a library stays quiet)."""

    def started(self, job: OutputJob) -> None:
        pass

    def finished(self, row: OutputRow) -> None:
        pass


# --- the manifest -----------------------------------------------------------------------------------------------


def load_manifest(path: Path, out: Path | None = None) -> tuple[Path, list[OutputJob]]:
    """The output folder and every output the manifest at ``path`` asks for; AbswinError for a bad manifest."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as error:
        raise AbswinError(f"{path}: cannot read the manifest ({error.strerror})") from error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise AbswinError(f"{path}: not valid TOML ({error})") from error
    unknown = sorted(set(data) - {"defaults", "model"})
    if unknown:
        raise AbswinError(f"{path}: unknown table(s) {', '.join(unknown)}; a manifest has [defaults] and [[model]]")
    defaults = _table(data.get("defaults", {}), "[defaults]", _DEFAULT_KEYS, path)
    models = data.get("model")
    if not isinstance(models, list) or not models:
        raise AbswinError(f"{path}: no [[model]] entries; add one per checkpoint, with at least source and img_size")
    here = Path(path).resolve().parent
    out_dir = Path(out) if out is not None else here / str(defaults.get("out", "converted"))
    jobs = [job for i, model in enumerate(models) for job in _entry_jobs(i, model, defaults, here, out_dir, path)]
    _check_unique(jobs, path)
    return out_dir, jobs


def _table(value: object, where: str, allowed: set[str], path: Path) -> dict:
    if not isinstance(value, dict):
        raise AbswinError(f"{path}: {where} must be a table")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise AbswinError(f"{path}: {where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    return value


def _entry_jobs(index: int, model: object, defaults: dict, here: Path, out: Path, path: Path) -> list[OutputJob]:
    where = f"[[model]] #{index + 1}"
    entry = {**defaults, **_table(model, where, _MODEL_KEYS, path)}
    entry.pop("out", None)
    if not isinstance(entry.get("source"), str) or not entry["source"]:
        raise AbswinError(f"{path}: {where} has no source; give a Hub name or a checkpoint path")
    location = _location(entry["source"], here)
    target = str(entry.get("to", "baked"))
    if target not in TARGETS:
        raise AbswinError(f"{path}: {where} has to = {target!r}; use one of {', '.join(TARGETS)}")
    sizes = _sizes(entry.get("img_size"), f"{path}: {where}")
    name = _NAME_UNSAFE.sub("_", str(entry.get("name") or _default_name(entry["source"])))
    push_to = entry.get("push_to")
    if not isinstance(push_to, (str, type(None))) or not isinstance(entry.get("private", False), bool):
        raise AbswinError(f"{path}: {where}: push_to must be a string (org/name) and private true or false")
    if push_to and len(sizes) > 1 and "{size}" not in push_to:
        raise AbswinError(
            f"{path}: {where} pushes {len(sizes)} sizes to one repo {push_to!r}; put {{size}} in push_to, "
            "e.g. org/model_abswin_{size}"
        )
    hooks = tuple(_hook(spec, f"{path}: {where}") for spec in entry.get("hooks", []))
    fmt = str(entry.get("format", "safetensors"))
    jobs = []
    for size in sizes:
        size_text = format_size(size)
        jobs.append(
            OutputJob(
                entry=index,
                source=entry["source"],
                location=location,
                name=name,
                img_size=size,
                target=target,
                global_size=str(entry.get("global_size", "full")),
                fmt=fmt,
                family=entry.get("family"),
                folder=out / f"{name}-{target}-{size_text}",
                push_to=push_to.format(size=size_text, target=target, name=name) if push_to else None,
                private=bool(entry.get("private", False)),
                hooks=hooks,
            )
        )
    return jobs


def _location(text: str, here: Path) -> str:
    """A local path relative to the manifest's folder when it exists there; otherwise the text as written."""
    local = here / text
    return str(local) if not Path(text).is_absolute() and local.exists() else text


def _default_name(source: str) -> str:
    hub = parse_hub_source(source)
    if hub is not None:
        return hub.repo_id.split("/")[1]
    path = Path(source)
    return path.stem if path.name.lower().endswith(WEIGHT_SUFFIXES) else path.name


def _sizes(value: object, where: str) -> list[Size]:
    values = value if isinstance(value, list) else [value]
    if value is None or not values:
        raise AbswinError(f"{where} has no img_size; give one size (448, \"448x640\") or a list of them")
    sizes = []
    for item in values:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise AbswinError(f"{where}: img_size {item!r} is neither a number nor \"HxW\"")
        sizes.append((item, item) if isinstance(item, int) else parse_size(item))
    return sizes


def _hook(spec: object, where: str) -> HookSpec:
    if isinstance(spec, str):
        return HookSpec(spec)
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        return HookSpec(spec["name"], {k: v for k, v in spec.items() if k != "name"})
    raise AbswinError(f"{where}: hook {spec!r} is neither a name nor a table with name = ...")


def _check_unique(jobs: list[OutputJob], path: Path) -> None:
    for attribute, what in (("folder", "output folder"), ("push_to", "push_to repo")):
        seen: dict[object, int] = {}
        for job in jobs:
            value = getattr(job, attribute)
            if value is None:
                continue
            if value in seen and seen[value] != job.entry:
                raise AbswinError(
                    f"{path}: [[model]] #{seen[value] + 1} and #{job.entry + 1} share the {what} "
                    f"{value if attribute == 'push_to' else Path(value).name}; give one of them another name"
                )
            seen[value] = job.entry


# --- running ----------------------------------------------------------------------------------------------------


def run_zoo(
    manifest: str | Path,
    out: str | Path | None = None,
    jobs: int = 1,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ZooReport:
    """Run every output of ``manifest``; a failure is reported in its row, never raised, and stops nothing else.

    Writes ``report.json`` and ``report.md`` into the output folder (not for a dry run, which converts, runs and
    pushes nothing and only says which outputs are up to date).
    """
    manifest = Path(manifest)
    out_dir, all_jobs = load_manifest(manifest, Path(out) if out is not None else None)
    progress = progress or Progress()
    entries: dict[int, list[OutputJob]] = {}
    for job in all_jobs:
        entries.setdefault(job.entry, []).append(job)
    if dry_run:
        rows = _run_entries(entries, jobs, lambda entry: _plan_entry(entry, progress))
        return ZooReport(manifest, out_dir, rows, dry_run=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir):
        _remove_staging(out_dir)  # left by a run that was killed: nobody else holds the folder now
        rows = _run_entries(entries, jobs, lambda entry: _run_entry(entry, progress))
        report = ZooReport(manifest, out_dir, rows)
        _write_reports(report)
    return report


def _run_entries(
    entries: dict[int, list[OutputJob]], jobs: int, run: Callable[[list[OutputJob]], list[OutputRow]]
) -> list[OutputRow]:
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="zoo") as pool:
        results = list(pool.map(run, entries.values()))  # manifest order, whatever order they finish in
    return [row for rows in results for row in rows]


def _run_entry(jobs: list[OutputJob], progress: Progress) -> list[OutputRow]:
    """The outputs of one manifest entry, one after the other (they share the source download and its hash)."""
    source_sha = functools.cache(lambda: _source_sha256(jobs[0].location))
    rows = []
    for job in jobs:
        progress.started(job)
        row = _run_job(job, source_sha)
        progress.finished(row)
        rows.append(row)
    return rows


def _run_job(job: OutputJob, source_sha: Callable[[], str]) -> OutputRow:
    start = time.monotonic()
    row = OutputRow(job.folder.name, job.source, job.size, job.target, "failed")
    try:
        if _up_to_date(job, source_sha):
            row.status = "skipped"
        else:
            _build(job)
            row.status = "converted"
        _fill_from_output(row, job.folder)
        if job.push_to:
            row.pushed = push(job.folder, job.push_to, private=job.private).pushed_revision
    except AbswinError as error:
        row.status, row.error = "failed", str(error)
    except Exception as error:  # a bug in one output must not stop the others; the report names it
        row.status, row.error = "failed", f"internal error: {error.__class__.__name__}: {error}"
    row.seconds = time.monotonic() - start
    return row


def _plan_entry(jobs: list[OutputJob], progress: Progress) -> list[OutputRow]:
    """What a run would do with each output; a source that cannot be fetched or read fails here already."""
    source_sha = functools.cache(lambda: _source_sha256(jobs[0].location))
    rows = []
    for job in jobs:
        progress.started(job)
        start = time.monotonic()
        row = OutputRow(job.folder.name, job.source, job.size, job.target, "would convert")
        try:
            source_sha()
            if _up_to_date(job, source_sha):
                row.status = "up to date"
                _fill_from_output(row, job.folder)
        except AbswinError as error:
            row.status, row.error = "failed", str(error)
        row.seconds = time.monotonic() - start
        progress.finished(row)
        rows.append(row)
    return rows


def _up_to_date(job: OutputJob, source_sha: Callable[[], str]) -> bool:
    """Whether ``job.folder`` holds this tool version's output of this very source file with these options."""
    if not job.folder.is_dir():
        return False
    try:
        recorded = read_output(job.folder).provenance
    except AbswinError:  # not an output of ours (or a damaged one): build it again
        return False
    expected = {"version": __version__, "zoo_options": job.options(), "target": job.target, "img_size": job.size}
    if any(recorded.get(key) != value for key, value in expected.items()):
        return False
    return recorded.get("source_sha256") == source_sha()


def _source_sha256(source: str) -> str:
    ckpt, _ = open_source(source)  # fetched through the Hugging Face cache for Hub sources
    return sha256_of(ckpt.path)


def _build(job: OutputJob) -> None:
    """Convert into a hidden staging folder, run the hooks there, then rename it into place."""
    staging = _staging(job.folder, "partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        result = convert(
            job.location,
            staging,
            job.img_size,
            target=job.target,
            global_size=job.global_size,
            fmt=job.fmt,
            family=job.family,
            provenance={"zoo_options": job.options()},
        )
        if job.hooks:
            write_hooks(staging, _run_hooks(job.hooks, result.output))
        _install(staging, job.folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run_hooks(hooks: tuple[HookSpec, ...], weights: Path) -> dict[str, dict]:
    from .evaluation.hooks import run_hook

    results = {}
    for hook in hooks:
        try:
            results[hook.name] = run_hook(hook.name, weights, hook.options)
        except AbswinError as error:
            raise AbswinError(f"hook {hook.name}: {error}") from error
        except Exception as error:  # a hook is somebody's code: its crash fails this output, named as its own
            raise AbswinError(f"hook {hook.name} raised {error.__class__.__name__}: {error}") from error
    return results


def _install(staging: Path, folder: Path) -> None:
    """Put the finished staging folder at ``folder``, replacing an outdated output."""
    old = _staging(folder, "old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(staging, folder)
    shutil.rmtree(old, ignore_errors=True)


def _staging(folder: Path, kind: str) -> Path:
    return folder.with_name(f".{folder.name}{STAGING_MARK}{kind}")


def _remove_staging(out_dir: Path) -> None:
    for leftover in out_dir.glob(f".*{STAGING_MARK}*"):
        shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Hold an advisory lock on the output folder (released by the kernel even after ``kill -9``)."""
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise AbswinError(f"another zoo run is writing to {out_dir}; wait for it, or use another --out") from exc
        yield
    finally:
        os.close(fd)


def _fill_from_output(row: OutputRow, folder: Path) -> None:
    output = read_output(folder)
    row.residual = _float(output.provenance.get("residual"))
    row.window_energy = _float(output.provenance.get("window_energy"))
    row.hooks = output.hooks


def _write_reports(report: ZooReport) -> None:
    write_json(report.out / REPORT_JSON, report.to_json())
    with atomic_file(report.out / REPORT_MD) as f:
        f.write(report.markdown().encode())


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _number(value: float | None) -> str:
    return "" if value is None else format_value(value)


def _hooks_cell(hooks: dict[str, dict]) -> str:
    parts = []
    for name in sorted(hooks):
        metrics = hooks[name] if isinstance(hooks[name], dict) else {"result": hooks[name]}
        shown = ", ".join(f"{k}={format_value(v)}" for k, v in sorted(metrics.items()) if not isinstance(v, dict))
        parts.append(f"{name}: {shown}")
    return "; ".join(parts)
