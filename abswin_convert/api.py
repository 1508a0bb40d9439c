"""The library entry points: ``inspect`` a checkpoint, ``convert`` it. No printing here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import families, residual
from .errors import AbswinError
from .evaluation import window_effect
from .families import window_change
from .families.base import ConvertRequest, Detection, native_grid
from .families.overrides import Overrides
from .families.window_change import WindowChange
from .hub.locations import ResolvedHubFile, open_source
from .io.checkpoint import EMA_KEYS, Checkpoint
from .io.dtypes import TORCH_NAMES
from .io.outputs import output_format
from .io.provenance import Provenance, SourceDigest, output_metadata
from .maths import absolute_win as aw
from .maths.grid import format_size
from .maths.resize import Size
from .output import OutputLayout, PlannedStates, inputs_of, write_output
from .plan import Plan


@dataclass
class ConversionResult:
    """What ``convert`` wrote and what the user must know."""

    output: Path
    config: Path | None
    detection: Detection
    metadata: dict[str, str]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. a --global-size that loses much of the global part
    model_config: dict | None = None  # config.json for the new size; written only into a folder (``config``)

    @property
    def residual(self) -> float:
        """The relative residual of the global part's refit (0: exact; see ``abswin_convert.residual``)."""
        done = self.provenance.conversion
        assert done is not None  # every conversion records what it did
        return done.residual

    @property
    def provenance(self) -> Provenance:
        """The record written beside (or in) the weights, typed."""
        record = Provenance.from_metadata(self.metadata)
        assert record is not None  # every conversion writes one
        return record

    def to_json(self) -> dict:
        return {
            "output": str(self.output),
            "config": str(self.config) if self.config else None,
            "family": self.detection.family,
            "format": self.detection.spelling,
            "metadata": self.metadata,
            "notes": self.notes,
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class InspectReport:
    """Everything ``abswin-convert inspect`` reports about a checkpoint."""

    source: str
    file: str
    hub: dict | None  # the Hub file it came from (repo, revision, commit, file), None for a local path
    family: str
    format: str
    container: str  # safetensors | torch | pickle
    wrapper: str | None
    tensors: int
    position_key: str
    position_shape: list[int]
    position_dtype: str
    layout: str
    grid: str
    prefix_tokens: int
    window: str
    patch_stride: int
    native_input: str
    window_energy: float | None  # None where undefined: the window covers the whole grid (fewer than two tiles)
    window_energy_normalized: float | None
    chance_share: float | None
    targets: list[str]
    resize: str
    details: dict[str, str | int]

    def to_json(self) -> dict:
        return asdict(self)


def load(
    source: str | Path, family: str | None = None, overrides: Overrides | None = None
) -> tuple[Checkpoint, Detection, ResolvedHubFile | None]:
    """Open a source (a local path or a Hub name) and detect its family (``overrides``: what the user said about
    key, layout, window, stride); the Hub file it came from, or None for a local source."""
    ckpt, hub_file = open_source(source)
    return *families.recognise(ckpt, family, overrides), hub_file


def inspect(source: str | Path, family: str | None = None, overrides: Overrides | None = None) -> InspectReport:
    """What ``abswin-convert inspect`` reports about ``source``."""
    ckpt, det, hub_file = load(source, family, overrides)
    grid = native_grid(ckpt, det)  # split (absolute-win) checkpoints are composed at the native size
    tiled = det.tiles >= 2
    return InspectReport(
        source=str(source),
        file=str(ckpt.path),
        hub=hub_file.to_json() if hub_file else None,
        family=det.family,
        format=det.spelling,
        container=ckpt.container,
        wrapper=".".join(ckpt.wrapper_path) or None,
        tensors=len(ckpt.keys()),
        position_key=det.pos_key,
        position_shape=list(ckpt.shape(det.pos_key)),
        position_dtype=TORCH_NAMES[ckpt.dtype(det.pos_key)],
        layout=det.layout,
        grid=format_size(det.grid),
        prefix_tokens=det.prefix_tokens,
        window=format_size(det.window),
        patch_stride=det.patch_stride,
        native_input=format_size(det.native_input),
        window_energy=round(aw.window_energy(grid, det.window), 4) if tiled else None,
        window_energy_normalized=round(aw.normalized_window_energy(grid, det.window), 4) if tiled else None,
        chance_share=round(aw.chance_share(det.grid, det.window), 4) if tiled else None,
        targets=list(det.targets),
        resize=det.resize.name,
        details=det.details(ckpt),
    )


def convert(
    source: str | Path,
    output: str | Path,
    img_size: int | str | Size | None = None,
    *,
    target: str = "baked",
    global_size: int | str | Size | None = None,
    fmt: str | None = None,
    force: bool = False,
    family: str | None = None,
    overrides: Overrides | None = None,
    provenance: dict[str, str] | None = None,
    ema: bool | None = None,
    progress: bool = True,
    window_size: int | str | tuple[int, ...] | None = None,
    relpos_resize: str | None = None,
    window_part: str | None = None,
) -> ConversionResult:
    """Convert ``source`` for ``img_size`` and write it to ``output`` (a weight file, or a folder);
    ``provenance`` adds ``abswin.*`` entries to the output's metadata (the zoo records its options there).
    ``fmt`` (safetensors or pt) defaults to what the output's suffix says; a folder gets safetensors.
    Every state dict of a training checkpoint (EMA copies too) is converted; a torch output keeps them all, a
    safetensors output holds one: the EMA copy when there is one, as timm loads it (``ema=False``: the plain one).
    ``progress``: a bar on stderr while a large file is written (only on a terminal). The output is written as one
    unit: every file is checked first, staged, and moved into place together.
    ``window_size`` (with ``relpos_resize`` and ``window_part``) changes the attention window of a SAM, ViTDet or
    SAM2 (``families/window_change.py``): the one conversion that changes what the model computes at its own size;
    ``img_size`` then defaults to the size the model runs at, and the measured change is recorded."""
    if not str(output).strip():
        raise AbswinError("the output name is empty; give a weight file or a folder with -o")
    output_format(Path(output), fmt)  # a wrong --format is refused before the source is opened
    change = WindowChange.parse(window_size, relpos_resize, window_part)
    asked = families.asked_request(img_size, target, global_size, change)  # a wrong size: refused before the source opens
    ckpt, det, hub_file = load(source, family, overrides)
    request = families.full_request(asked, ckpt, det, target, global_size, change)
    layout = OutputLayout.of(Path(output), fmt, ckpt)
    layout.check(inputs_of(ckpt), force)  # refused now, not after the plan's work
    # The source's sha256 (a Hub file's is checked against the Hub's LFS metadata) is hashed in a thread started now,
    # so that it runs beside the plan and the copy; a file hashed before comes from the hash cache.
    digest = SourceDigest(ckpt.path, hub_file.sha256 if hub_file else None)
    plan = families.plan(ckpt, det, request)
    other_states = _planned_other_states(ckpt, det, request, overrides)
    extra = {**(hub_file.provenance() if hub_file else {}), **(provenance or {})}
    notes = list(plan.notes)
    if not layout.is_torch:
        ckpt, plan, chosen_note = _chosen_state(ckpt, plan, other_states, ema)
        notes += chosen_note
    elif other_states:
        notes.append(f"converted the same way: {', '.join(other_states)} (kept beside {ckpt.wrapper})")
    if change is not None:  # measured on the state dict the output's provenance describes
        notes.append(window_change.record_effect(plan, window_effect.measure(ckpt, det, request)))
    also = sorted(ckpt.stored_name(plan.output_key(key)) for key in plan.replace if key != det.pos_key)
    if also:  # resized beside the embedding (relative-position tables, ...): the model card lists them
        plan.stats["also_rewritten"] = ", ".join(also)
    metadata = output_metadata(source, ckpt.path, {**_config_license(ckpt.config), **plan.stats}, extra,
                               hash_now=False)  # the writers add the sha256
    config = write_output(layout, ckpt, plan, other_states, metadata, digest, force, progress)
    result = ConversionResult(layout.main_file, config, det, metadata, notes, model_config=plan.config)
    done = result.provenance.conversion
    assert done is not None  # a conversion records what it did
    warned = residual.warning(done)
    if warned:
        result.warnings.append(warned)
    return result


def _config_license(config: dict | None) -> dict[str, str]:
    """The license a source's config.json names (top level, or timm's ``pretrained_cfg``), as provenance."""
    config = config or {}
    named = config.get("license") or (config.get("pretrained_cfg") or {}).get("license")
    return {"source_license": named} if isinstance(named, str) and named else {}


def _planned_other_states(
    ckpt: Checkpoint, det: Detection, request: ConvertRequest, overrides: Overrides | None
) -> PlannedStates:
    """Each other state dict of a training checkpoint (EMA copies), recognised and planned on its own."""
    planned = {}
    for name in ckpt.other_states:
        try:
            copy, copy_det = families.recognise(ckpt.other_state(name), det.family, overrides)
        except families.NotRecognised as exc:
            raise AbswinError(
                f"{ckpt.path.name}: {name!r} holds a second state dict that is not a {det.family} model, so it cannot be "
                "converted with the rest; convert a file holding only the model you want"
            ) from exc
        planned[name] = copy, families.plan(copy, copy_det, request)
    return planned


def _chosen_state(
    ckpt: Checkpoint, plan: Plan, copies: PlannedStates, ema: bool | None
) -> tuple[Checkpoint, Plan, list[str]]:
    """The one state dict a safetensors output holds: the EMA copy timm would load, unless ``ema`` is False."""
    ema_copies = [name for name in EMA_KEYS if name in copies]
    if ema is True and not ema_copies:
        held = ckpt.wrapper or "one state dict"
        raise AbswinError(f"{ckpt.path.name}: --ema asked for an EMA copy, but it holds none (only {held})")
    if not copies:
        return ckpt, plan, []
    if ema is False or not ema_copies:
        chosen, (copy, copy_plan) = ckpt.wrapper, (ckpt, plan)
    else:
        chosen, (copy, copy_plan) = ema_copies[0], copies[ema_copies[0]]
    copy_plan.stats["state_dict"] = str(chosen)
    others = [name for name in (ckpt.wrapper, *copies) if name != chosen]
    flag = "--ema" if chosen == ckpt.wrapper else "--no-ema"
    return copy, copy_plan, [f"wrote the state dict {chosen!r} of {len(copies) + 1} (not {', '.join(map(repr, others))}; {flag} "
                             "picks the other; a .pt output keeps them all)"]
