"""The zoo's report: one row per output, as report.json and report.md in the output folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__, residual
from ..io.jsonfile import write_json
from ..io.outputs import read_output
from ..io.writer import atomic_file
from ..markdown import format_value, markdown_table

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


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
    executor: str = "local"  # where it ran: local | ray
    host: str | None = None  # the machine's name (None: a Ray worker lost before it could say)
    node: str | None = None  # the Ray node id
    attempts: int = 1  # more than one when a Ray worker was lost and the output ran again

    def to_json(self) -> dict:
        return dict(self.__dict__, seconds=round(self.seconds, 3))

    def fill_from(self, folder: Path) -> None:
        """The numbers the output's provenance and hook results hold."""
        output = read_output(folder)
        conversion = output.provenance.conversion
        self.residual = conversion.residual if conversion else None
        self.window_energy = conversion.window_energy if conversion else None
        self.hooks = output.hooks

    def ran_on(self) -> str:
        """E.g. ``local on box`` or ``ray on node-3 (node 5f1c0a2b), 2 attempts``."""
        text = f"{self.executor} on {self.host or 'an unknown host'}"
        if self.node:
            text += f" (node {self.node[:8]})"
        return text + (f", {self.attempts} attempts" if self.attempts > 1 else "")


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
                  "verdict", "native error", "top-1", "mIoU", "other hooks", "ran on", "error")
        rows: list[tuple[str, ...]] = [
            (
                f"`{r.output}`",
                f"`{r.source}`",
                r.size,
                r.target,
                r.status,
                f"{r.seconds:.1f}",
                "" if r.residual is None else residual.in_words(r.residual),
                _number(r.window_energy),
                f"`{r.pushed[:12]}`" if r.pushed else "",
                *_hook_cells(r.hooks),
                r.ran_on(),
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

    def write(self) -> None:
        """report.json and report.md in the output folder, each replaced whole."""
        write_json(self.out / REPORT_JSON, self.to_json())
        with atomic_file(self.out / REPORT_MD) as f:
            f.write(self.markdown().encode())


def _number(value: float | None) -> str:
    return "" if value is None else format_value(value)


# The hook results a person reads in report.md (report.json and the model card keep every metric).
_READ_HOOKS = ("verify", "eval", "finetune")


def _hook_cells(hooks: dict[str, dict]) -> tuple[str, str, str, str, str]:
    """verdict (verify's), native error (verify's max abs error at the native size), top-1 (eval's, and after a
    finetune), mIoU (any hook's ``miou``), and the other hooks by name with whether they passed."""
    results = {name: value if isinstance(value, dict) else {"result": value} for name, value in hooks.items()}
    verify = results.get("verify", {})
    native = verify.get("native_max_abs_error")
    top1 = [f"{format_value(results[name]['top1'])}{' (finetuned)' if name == 'finetune' else ''}"
            for name in ("eval", "finetune") if "top1" in results.get(name, {})]
    miou = [format_value(value) for metrics in results.values() for key, value in metrics.items() if key.lower() == "miou"]
    others = [name + {True: " ok", False: " failed"}.get(metrics.get("ok"), "")  # type: ignore[arg-type]
              for name, metrics in sorted(results.items()) if name not in _READ_HOOKS]
    return (str(verify.get("verdict", "")), f"{native:.1e}" if isinstance(native, float) else "", ", ".join(top1),
            ", ".join(miou), ", ".join(others))
