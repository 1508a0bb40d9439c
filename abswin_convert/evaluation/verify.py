"""``verify``: is a converted checkpoint what the conversion of its source should be, and does its runtime take it?

What flows through: the output and its provenance (safetensors ``__metadata__``, or a ``.pt``'s sidecar) -> its
family -> the upstream runtime builds the model at the target size from the weights (``runtimes/``) -> strict load
-> a finite forward pass -> the conversion recomputed from the source with the recorded options -> every position
tensor (and relative-position table) compared, the names compared -> for split outputs the native-size
equivalence -> what the conversion changed, in numbers.

Each check is ``ok``, ``failed`` (with what failed) or ``not verified`` (with why it could not run). The verdict is
``failed`` when any check failed, ``verified`` only when every check ran and passed, else ``not verified``: a
verification that checked nothing never says ok. A failed check is a result, not an exception (the zoo report
shows it); what the user got wrong (no such file, a source that is not the recorded one) raises AbswinError.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import families
from ..errors import AbswinError
from ..families.base import ConvertRequest, Detection, native_grid, output_grid, read_position, read_window
from ..families.overrides import TILE, Overrides
from ..families.window_change import WindowChange
from ..hub.locations import open_source
from ..io.checkpoint import Checkpoint, open_checkpoint
from ..io.outputs import config_beside, provenance_of, weights_in
from ..io.provenance import ONE_WINDOW, Provenance, public_name, sha256_of
from ..io.shards import index_in
from ..io.tensors import RawTensor
from ..io.torch_bridge import to_torch
from ..maths import absolute_win as aw
from ..maths.grid import as_size, format_size, layout_buffer
from ..maths.resize import Size
from ..runtimes import transformers as transformers_runtime
from ..runtimes.encoder import Encoder, LoadError, NotBuildable
from ..runtimes.registry import load_encoder
from ..vocabulary import BAKED, GENERIC, SAM2, SAM2_TRUNK, TIMM_ABSWIN

if TYPE_CHECKING:
    from ..plan import Plan

VERIFIED, FAILED, NOT_VERIFIED = "verified", "failed", "not verified"
EXIT_STATUS = {VERIFIED: 0, FAILED: 3, NOT_VERIFIED: 4}  # beside 2 (the user's error) and 1 (a bug)
NATIVE_TOLERANCE = 1e-5
OK = "ok"


class Report:
    """The checks as they are made, and what they measured."""

    def __init__(self, output: Path, img_size: Size) -> None:
        self.data: dict = {"output": str(output), "img_size": format_size(img_size), "checks": {}, "problems": []}

    def check(self, name: str, status: str, detail: str) -> None:
        self.data["checks"][name] = {"status": status, "detail": detail}
        if status != OK:
            self.data["problems"].append(f"{name}: {detail}" if status == FAILED else f"{name}: not verified: {detail}")

    def finish(self) -> dict:
        statuses = [c["status"] for c in self.data["checks"].values()]
        verdict = FAILED if FAILED in statuses else VERIFIED if statuses and set(statuses) == {OK} else NOT_VERIFIED
        self.data.update(verdict=verdict, ok=verdict == VERIFIED, verified=verdict != NOT_VERIFIED)
        return self.data


def verify(output: str | Path, *, source: str | Path | None = None, img_size: int | str | Size | None = None,
           measure: bool = True) -> dict:
    """Verify the converted ``output`` (a weight file or an output folder) at ``img_size`` (default: the size it
    was converted for) against ``source`` (default: the one its provenance names, when it can be found).
    ``measure=False`` skips what the conversion changed (three more models built and run): the checks only.

    Returns the report: ``verdict`` (verified, failed, not verified), ``checks`` (each with its status and detail),
    ``problems``, ``runtime``, ``changes`` (relative differences of the encoder's output), ``ok``."""
    path = Path(output)
    if not path.exists():
        raise AbswinError(f"{path}: no such file or folder")
    weights = (index_in(path) or weights_in(path)) if path.is_dir() else path  # a sharded folder: its index
    ckpt = open_checkpoint(weights, config_beside(weights))
    provenance = provenance_of(ckpt.path, ckpt.metadata)  # a .pt output's sidecar too
    if provenance is None or provenance.conversion is None:
        return _foreign(weights, ckpt, as_size(img_size))
    family, overrides, request = recorded_conversion(provenance)
    size = as_size(img_size) or request.img_size
    report = Report(weights, size)
    try:  # a SAM2 trunk made from a Hiera is another family's file
        view, det = families.recognise(ckpt, *((SAM2,) if request.target == SAM2_TRUNK else (family, overrides)))
    except families.NotRecognised as exc:  # recorded as converted, but its position tensor is gone or renamed
        report.check("names", FAILED, f"not the {family} checkpoint its provenance records: {exc}")
        return report.finish()
    report.data.update(family=det.family, spelling=det.spelling, target=request.target)
    located = _source(source, provenance, weights)
    src = None if isinstance(located, str) else _recorded_copy(located, provenance)
    config = ckpt.config or _size_free_config(src)
    state = {key: to_torch(view.tensor(key)) for key in view.keys()}
    encoder = _runtime_checks(report, det, config, state, size)
    if src is None:
        report.check("position tensors", NOT_VERIFIED, str(located))
        return report.finish()
    src_view, src_det = families.recognise(src, family, overrides)
    report.data["source"] = public_name(src.path)
    plan = families.plan(src_view, src_det, request)
    _compare_with_recomputed(report, ckpt, src_view, plan, request)
    if det.window_key is not None:
        _native_equivalence(report, view, det, src_view, src_det, provenance.conversion.residual)
    if measure:
        report.data["changes"] = _changes(encoder, det, config, view, state, src_view, src_det, request, size)
    report.data["residual"] = provenance.conversion.residual
    energy = provenance.conversion.window_energy
    report.data["window_energy"] = ONE_WINDOW if energy is None else energy
    return report.finish()


# --- the recorded conversion (the one place provenance is read back into options) ------------------------------


def recorded_conversion(provenance: Provenance) -> tuple[str, Overrides, ConvertRequest]:
    """The family, overrides and request a conversion recorded in its output's provenance."""
    conversion = provenance.conversion
    if conversion is None or provenance.img_size is None:
        raise AbswinError("its provenance records no conversion (family, sizes): it was not written by `convert`")
    generic = conversion.family == GENERIC
    recipe = TILE if (provenance.recipe or "").startswith("vitdet: pretrained grid tiled") else None
    overrides = Overrides(
        key=conversion.position_key if generic else None, layout=provenance.layout if generic else None,
        window=conversion.window if generic or recipe else None, recipe=None if generic else recipe,
    )
    request = ConvertRequest(provenance.img_size, conversion.target, conversion.global_size, _window_change(provenance))
    return conversion.family, overrides, request


def _window_change(provenance: Provenance) -> WindowChange | None:
    """The ``--window-size`` change a conversion recorded (``none (...)`` where an option did not apply)."""
    recorded = provenance.window_change
    if recorded is None:
        return None
    return WindowChange.parse(recorded.window_size, recorded.option("relpos_resize"), recorded.option("window_part"))


def _size_free_config(src: Checkpoint | None) -> dict | None:
    """A bare weight file is built as its source's config.json says when that config does not fix the input size
    (timm's and the official Hiera's take it from the caller; transformers' records it, for the source's size)."""
    if src is None or not src.config or transformers_runtime.is_transformers_config(src.config):
        return None
    return src.config


def _recorded_copy(ckpt: Checkpoint, provenance: Provenance) -> Checkpoint:
    """The state dict of a training checkpoint the output was made from (its EMA copy, when that was chosen)."""
    chosen = provenance.state_dict
    return ckpt.other_state(chosen) if chosen and chosen in ckpt.other_states else ckpt


def _source(source: str | Path | None, provenance: Provenance, weights: Path) -> Checkpoint | str:
    """The source checkpoint (checked against the recorded sha256), or why there is none to compare with."""
    recorded = provenance.source_sha256
    if source is None:
        found = _recorded_source(provenance, weights)
        if found is None:
            where = provenance.source or "its source"
            return f"the source ({where}) is not here; pass --source PATH to recompute the conversion from it"
        try:
            ckpt, _ = open_source(found)
        except AbswinError as exc:  # the recorded Hub file cannot be fetched now (offline, gone): not the user's error
            return f"the recorded source {found} cannot be opened ({exc}); pass --source PATH"
        source = found
    else:
        ckpt, _ = open_source(source)
    if recorded and sha256_of(ckpt.path) != recorded:
        raise AbswinError(
            f"{source} is not the file {weights.name} was converted from (its sha256 differs from the recorded "
            f"{recorded[:12]}...); pass the source it was made from"
        )
    return ckpt


def _recorded_source(provenance: Provenance, weights: Path) -> str | Path | None:
    """Where the recorded source can be found without asking: its Hub file pinned to the recorded commit, or a
    local file of the recorded name in the working folder or beside the output."""
    if provenance.from_hub:
        return f"hf://{provenance.source}@{provenance.source_commit}/{provenance.source_file or ''}".rstrip("/")
    name = provenance.source
    for folder in (Path.cwd(), weights.parent.resolve()):
        if name and (folder / name).exists():
            return folder / name
    return None


# --- the checks -------------------------------------------------------------------------------------------------


def _runtime_checks(report: Report, det: Detection, config: dict | None, state: dict[str, torch.Tensor],
                    size: Size) -> Encoder | None:
    """Strict load into the runtime built at ``size``, then a finite forward pass there."""
    try:
        encoder = load_encoder(det, config, state, size)
    except NotBuildable as exc:
        report.check("strict load", NOT_VERIFIED, str(exc))
        return None
    except LoadError as exc:
        report.check("strict load", FAILED, f"the weights do not load at {format_size(size)}: {exc}")
        return None
    report.data["runtime"] = encoder.runtime
    left = f"; not part of it: {encoder.outside} ({len(encoder.left_out)} tensors)" if encoder.left_out else ""
    report.check("strict load", OK, f"{encoder.runtime} at {format_size(size)}, strict=True{left}")
    try:
        features = encoder.run(size)
    except RuntimeError as exc:
        report.check("forward", FAILED, f"the runtime failed to run it at {format_size(size)}: {_first_line(exc)}")
        return encoder
    finite = bool(torch.isfinite(features).all())
    report.check("forward", OK if finite else FAILED,
                 f"output {list(features.shape)} finite" if finite else "the output holds NaN or Inf")
    return encoder


def _compare_with_recomputed(report: Report, out: Checkpoint, src_view: Checkpoint, plan: Plan,
                             request: ConvertRequest) -> None:
    """The output's names and position tensors against the conversion recomputed from the source."""
    expected = plan.applied(src_view, untouched=lambda key: None)
    names = set(out.keys())
    missing, unexpected = sorted(set(expected) - names), sorted(names - set(expected))
    if missing or unexpected:
        found = (f"{what} {_listed(keys)}" for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys)
        report.check("names", FAILED, f"the output's tensor names differ from the conversion of the source: {'; '.join(found)}")
    else:
        report.check("names", OK, f"{len(names)} tensors, named as the conversion of the source names them")
    recomputed = {name: value for name, value in expected.items() if value is not None}
    wrong = [f"{name} ({why})" for name, value in recomputed.items() if name in names
             and (why := _difference(out.tensor(name), value))]
    if wrong:
        report.check("position tensors", FAILED, f"differ from the conversion recomputed from the source: {_listed(wrong)}")
    else:
        report.check("position tensors", OK, f"{_count(len(recomputed), 'rewritten tensor')} ({_listed(sorted(recomputed))}): "
                     f"bit for bit the conversion recomputed from the source for {format_size(request.img_size)}")


def _difference(found: RawTensor, expected: RawTensor) -> str:
    """Why two tensors differ, or '' when they are bit for bit equal."""
    if found.shape != expected.shape:
        return f"shape {list(found.shape)}, recomputed {list(expected.shape)}"
    if found.dtype != expected.dtype:
        return f"dtype {found.dtype}, recomputed {expected.dtype}"
    if np.array_equal(found.raw.view(np.uint8), expected.raw.view(np.uint8)):
        return ""
    diff = np.abs(found.float64() - expected.float64())
    rows = int((diff.reshape(diff.shape[0] if diff.ndim > 1 else 1, -1) > 0).any(axis=-1).sum()) if diff.ndim > 2 else None
    where = f"; first at index {tuple(int(i) for i in np.unravel_index(int(diff.argmax()), diff.shape))}"
    return f"max abs difference {float(diff.max()):.3g}{where}" + (f" in {rows} rows" if rows else "")


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split("\n", 1)[0].split())[:300]


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _listed(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _native_equivalence(report: Report, view: Checkpoint, det: Detection, src_view: Checkpoint, src_det: Detection,
                        residual: float) -> None:
    """A split output's window + global parts, composed at the native size by the runtime's own resize, against the
    source's embedding there: exact unless a smaller global size was refitted (then only measured)."""
    error = native_difference(view, det, src_view, src_det)
    report.data["native_max_abs_error"] = error
    if residual != 0:  # a refit global part is not exact by design; the recomputation above checked it
        return
    status = OK if error <= NATIVE_TOLERANCE else FAILED
    report.check("native size", status, f"window + global composed at {format_size(src_det.grid)} tokens vs the source: "
                 f"max abs error {error:.2e} (tolerance {NATIVE_TOLERANCE:g})")


def native_error(source: Checkpoint, source_det: Detection, output: Path) -> float:
    """Max abs difference between the source embedding and the written window + global parts composed
    at the native size: 0 (to float precision) when the conversion is exact there."""
    out, out_det = families.recognise(open_checkpoint(output), source_det.family)
    return native_difference(out, out_det, source, source_det)


def native_difference(out: Checkpoint, out_det: Detection, source: Checkpoint, source_det: Detection) -> float:
    """Max abs difference between a split output's parts composed at the source's native grid and the source."""
    window = read_window(out, out_det)
    if window is None:
        raise AbswinError(f"{out.path} holds no split absolute-win embedding to check")
    composed = aw.compose(window, read_position(out, out_det).grid, source_det.grid, out_det.resize)
    return float(np.abs(composed - native_grid(source, source_det)).max())


# --- what the conversion changed, in numbers ------------------------------------------------------------------


def _changes(encoder: Encoder | None, det: Detection, config: dict | None, view: Checkpoint,
             state: dict[str, torch.Tensor], src_view: Checkpoint, src_det: Detection, request: ConvertRequest,
             size: Size) -> dict:
    """Relative differences of the encoder's output (``||a - b|| / ||b||`` on one fixed random image): at the target
    size, the output against the naive resize of the same source; at the native size, the output against the source."""
    if det.spelling != src_det.spelling and (src_det.spelling, det.spelling) != ("timm", TIMM_ABSWIN):  # other runtimes
        why = (f"not applicable: the output is a {det.family} ({det.spelling}) model, the source a {src_det.family} "
               f"({src_det.spelling}) one; their position tensors were compared instead")
        return {"at_target_vs_naive": why, "at_native_vs_source": why}
    source_state = {key: to_torch(src_view.tensor(key)) for key in src_view.keys()}
    changes: dict = {}
    if encoder is None:
        changes["at_target_vs_naive"] = "not computed: the output did not load"
    elif src_det.window_key is not None:
        changes["at_target_vs_naive"] = "not applicable: the source already runs absolute win (no naive resize to compare)"
    else:
        naive_config = config if request.target == BAKED else src_view.config
        naive = lambda: _naive_state(src_view, src_det, source_state, request, size)  # noqa: E731
        changes["at_target_vs_naive"] = _relative(
            lambda: encoder.run(size), lambda: load_encoder(src_det, naive_config, naive(), size).run(size)
        )
    native = src_det.native_input
    if det.window_key is not None:  # a split output runs at any size: the file itself, at the native size
        # (transformers' config.json fixes the size: the source's is the one for the native size)
        own = src_view.config if config and transformers_runtime.is_transformers_config(config) else config
        output_native = lambda: load_encoder(det, own, state, native).run(native)  # noqa: E731
        how = "the output itself"
    else:  # a baked output holds one size: the same conversion, recomputed for the native size
        native_plan = families.plan(src_view, src_det, replace(request, img_size=native))
        native_state = _applied(native_plan, src_view, source_state)
        output_native = lambda: load_encoder(src_det, src_view.config, native_state, native).run(native)  # noqa: E731
        how = "the same conversion for the native size"
    changes["at_native_vs_source"] = _relative(
        output_native, lambda: load_encoder(src_det, src_view.config, source_state, native).run(native)
    )
    changes["native_size"] = format_size(native)
    changes["native_output"] = how
    return changes


def _relative(output, reference) -> float | str:
    """``||output - reference|| / ||reference||``, or why it could not be computed."""
    try:
        a, b = output(), reference()
    except (LoadError, NotBuildable) as exc:
        return f"not computed: {exc}"
    except RuntimeError as exc:  # the runtime cannot run that model at that size (a config written for another)
        return f"not computed: the runtime failed at that size ({_first_line(exc)})"
    if a.shape != b.shape:
        return f"not computed: output shapes {list(a.shape)} and {list(b.shape)} differ"
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-30))


def _naive_state(src_view: Checkpoint, det: Detection, source_state: dict[str, torch.Tensor], request: ConvertRequest,
                 size: Size) -> dict[str, torch.Tensor]:
    """The source as loaders make it today at ``size``: the whole embedding resized (window pattern included), the
    rest as the conversion makes it (relative-position tables resized as the runtimes' ``get_rel_pos`` does)."""
    plan = families.plan(src_view, det, replace(request, img_size=size, target=BAKED))  # in the source's own form
    state = _applied(plan, src_view, source_state)
    pos = read_position(src_view, det)
    tensor, grid = layout_buffer(det.layout, output_grid(det, size), pos.prefix)
    grid[...] = aw.naive(pos.grid, grid.shape[:2], det.resize)
    state[plan.output_key(det.pos_key)] = to_torch(RawTensor.encode(tensor, src_view.dtype(det.pos_key)))
    return state


def _applied(plan: Plan, src_view: Checkpoint, source_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The converted state dict in memory under the model's own names (wrapper prefixes left out)."""
    state = {plan.output_key(key): to_torch(plan.replace[key]) if key in plan.replace else source_state[key]
             for key in src_view.keys() if key not in plan.drop}
    state.update({key: to_torch(value) for key, value in plan.add.items()})
    return state


# --- a file this tool did not write -----------------------------------------------------------------------------


def _foreign(weights: Path, ckpt: Checkpoint, img_size: Size | None) -> dict:
    """No provenance: only what the shapes allow, a strict load at the size asked (the native size by default)."""
    view, det = families.recognise(ckpt)
    size = img_size or det.native_input
    report = Report(weights, size)
    report.data.update(family=det.family, spelling=det.spelling,
                       note=f"{weights.name} was not written by abswin-convert convert (no conversion record in abswin.* "
                            f"metadata or a sidecar): only a strict load at {format_size(size)} is checked")
    state = {key: to_torch(view.tensor(key)) for key in view.keys()}
    _runtime_checks(report, det, ckpt.config, state, size)
    report.check("position tensors", NOT_VERIFIED, "no provenance says what they should be")
    return report.finish()


@torch.no_grad()
def max_logit_difference(a: torch.nn.Module, b: torch.nn.Module, img_size: int, seed: int = 0, channels: int = 3) -> float:
    """Max abs difference of two models' outputs on the same random batch."""
    x = torch.randn(2, channels, img_size, img_size, generator=torch.Generator().manual_seed(seed))
    return float((a(x) - b(x)).abs().max())


def run_verify(checkpoint: str | Path, img_size: int | str | None = None, source: str | Path | None = None,
               measure: bool = True) -> dict:
    """The ``verify`` hook: ``verify`` with the hook's option names."""
    return verify(checkpoint, source=source, img_size=img_size, measure=measure)
