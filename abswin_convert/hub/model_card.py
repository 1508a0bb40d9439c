"""The ``README.md`` model card of a pushed conversion: front matter, what was done, provenance, hook results.

The card is built only from what the output records (its ``abswin.*`` provenance and its hook results), with no
dates or local paths, so the same output always gives the same card, byte for byte: pushing it again changes
nothing on the Hub.
"""

from __future__ import annotations

from pathlib import PurePath

from huggingface_hub import ModelCardData

from .. import residual
from ..families import ALL as ALL_FAMILIES
from ..families.base import Family
from ..io.outputs import WEIGHTS_FILE
from ..io.provenance import NO_GLOBAL_PART, Conversion, Provenance, WindowChangeRecord
from ..markdown import format_value, markdown_table
from ..maths.grid import format_size
from ..maths.resize import Size
from ..vocabulary import BAKED, GENERIC, TIMM_ABSWIN, TIMM_WINDOW_KEY

PAPER = "Bolya et al., *Window Attention is Bugged: How not to Interpolate Position Embeddings* (ICLR 2024, arXiv 2311.05613)"
_FALLBACK_LIBRARY = "pytorch"  # an output of a family this version does not know
# The weight files each runtime finds in a folder by itself (timm's local-dir: and transformers' from_pretrained).
_TIMM_FINDS = (".safetensors", ".pth", ".pth.tar", ".bin")
_TRANSFORMERS_FINDS = (WEIGHTS_FILE, "pytorch_model.bin", "model.safetensors.index.json")
ENERGY_SCALE = "0 = no window pattern (as noise), 1 = the embedding repeats exactly in every window"

# Provenance rows of the card: entry -> label; rows whose entry the output lacks are left out.
_PROVENANCE_ROWS = (
    ("source", "source"),
    ("source_revision", "source revision"),
    ("source_commit", "source commit"),
    ("source_file", "source file"),
    ("source_sha256", "source sha256"),
    ("source_license", "source license"),
    ("family", "family"),
    ("format", "source format"),
    ("target", "target"),
    ("position_key", "position key"),
    ("native_input", "native input"),
    ("img_size", "target input"),
    ("window", "window (tokens)"),
    ("global_size", "global size (tokens)"),
    ("resize", "global resize"),
    ("residual", "residual of the global fit"),
    ("window_energy", f"window energy (normalised: {ENERGY_SCALE})"),
    ("window_size", "new attention window (tokens)"),
    ("relpos_resize", "windowed relative-position tables resized"),
    ("window_part", "window part of the embedding"),
    ("window_change_effect", "relative change of the encoder output at the native size"),
    ("version", "abswin-convert version"),
)


def model_card(provenance: Provenance, hooks: dict[str, dict] | None = None, repo_id: str = "ORG/NAME",
               config: dict | None = None, weights_name: str = WEIGHTS_FILE) -> str:
    """The card's full text for an output with this provenance, hook results and config.json, pushed to ``repo_id``
    with its weights as ``weights_name``."""
    parts = [
        f"---\n{front_matter(provenance, config).to_yaml()}\n---",
        f"# {_source_name(provenance)}, absolute-win position embedding for {_size(provenance.img_size)}",
        _summary(provenance),
        "## Usage\n\n" + usage(provenance, repo_id, config, weights_name),
        "## Reproduce\n\n```bash\n" + reproduce_command(provenance) + "\n```",
        "## Provenance\n\n" + markdown_table(("", "value"), _provenance_rows(provenance)),
    ]
    if hooks:
        table = markdown_table(("hook", "metric", "value"), _hook_rows(hooks))
        parts.append("## Hook results\n\n" + _not_verified(hooks) + table)
    return "\n\n".join(parts) + "\n"


def front_matter(provenance: Provenance, config: dict | None = None) -> ModelCardData:
    """``base_model`` (Hub sources only), ``library_name``, ``license`` (when the source's card or config.json named
    one), tags."""
    done = provenance.conversion
    family = _family(done) if done else None
    tags = ["abswin", *((done.family, done.target) if done else ())]
    return ModelCardData(
        base_model=provenance.source if provenance.from_hub else None,
        library_name=library_name(provenance, config),
        pipeline_tag=family.runtime_task(done.target) if done and family else None,
        license=provenance.source_license,
        tags=sorted({tag for tag in tags if tag}),
    )


def library_name(provenance: Provenance, config: dict | None = None) -> str:
    """The Hub library that loads the output: the target's runtime, else the source format's, else the family's; a
    baked output with a transformers config.json (it names a ``model_type``) is transformers'."""
    done = provenance.conversion
    family = _family(done) if done else None
    if done and done.target == BAKED and (config or {}).get("model_type"):
        return "transformers"
    return family.runtime_library(done.spelling, done.target) if done and family else _FALLBACK_LIBRARY


def _family(done: Conversion) -> Family | None:
    return ALL_FAMILIES.get(done.family)


def usage(p: Provenance, repo_id: str, config: dict | None = None, weights_name: str = WEIGHTS_FILE) -> str:
    """The lines that load the pushed weights (uploaded as ``weights_name``), for the library that runs them."""
    code = loading_code(p, repo_id, on_hub=True, config=config, weights_name=weights_name)
    if code is None:
        size = "?" if p.img_size is None else p.img_size[0] if p.img_size[0] == p.img_size[1] else p.img_size
        family = p.conversion.family if p.conversion else "model"
        code = (f"from huggingface_hub import hf_hub_download\n\npath = hf_hub_download(\"{repo_id}\", \"{weights_name}\")\n"
                f"# build the {family} model for img_size={size}, then load path with strict=True")
    return f"```python\n{code}\n```"


def loading_code(p: Provenance, where: str, on_hub: bool, config: dict | None = None,
                 weights_name: str = WEIGHTS_FILE) -> str | None:
    """Python that builds the model from an output folder (``where``: a local folder or a Hub repo, its weights
    named ``weights_name``) as it is, for timm (``hf-hub:``/``local-dir:``, or the weight file named when timm would
    not find it) and transformers (the config's own class); None where no such line would work."""
    library = library_name(p, config)
    if library == "timm":
        if weights_name.endswith(".index.json"):  # timm's local-dir reads one file, not shards
            return None
        if not on_hub and not weights_name.endswith(_TIMM_FINDS):
            return timm_file_code(p, config, f"{where}/{weights_name}")
        prefix = "hf-hub:" if on_hub else "local-dir:"
        size = format_size(p.img_size) if p.img_size else None
        return f"import timm\n\nmodel = timm.create_model(\"{prefix}{where}\", pretrained=True)  # built for {size}"
    if library == "transformers" and weights_name in _TRANSFORMERS_FINDS:
        names = (config or {}).get("architectures") or ["AutoModel"]
        return f"from transformers import {names[0]}\n\nmodel = {names[0]}.from_pretrained(\"{where}\")"
    return None


def timm_file_code(p: Provenance, config: dict | None, path: str) -> str | None:
    """timm code that builds the model of a timm ``config.json`` (for the new size) and loads one weight file."""
    if library_name(p, config) != "timm" or not config or not isinstance(config.get("architecture"), str):
        return None
    args = "".join(f", {name}={value!r}" for name, value in sorted((config.get("model_args") or {}).items()))
    return (f"import timm\n\nmodel = timm.create_model(\"{config['architecture']}\", pretrained=True, "
            f"pretrained_cfg_overlay=dict(file=\"{path}\"){args})")


def reproduce_command(p: Provenance) -> str:
    """The ``abswin-convert convert`` command that made these weights from the recorded source."""
    source = p.source or "SOURCE"
    if p.from_hub:
        source = f"{source}@{p.source_commit}"
        if p.source_file:
            source = f"hf://{p.source}@{p.source_commit}/{p.source_file}"
    done = p.conversion
    args = [f"abswin-convert convert {source} -o out/ --img-size {_size(p.img_size)}",
            f"--target {done.target if done else 'baked'}"]
    if done and done.family == GENERIC:  # a family we do not know: the user described the tensor
        args.append(f"--family generic --key {done.position_key} --layout {p.layout or 'LAYOUT'} "
                    f"--window {format_size(done.window)}")
    if done and done.global_size is not None:  # the recorded size: the full grid gives itself back exactly
        args.append(f"--global-size {format_size(done.global_size)}")
    changed = p.window_change  # --window-size (families/window_change.py)
    if changed is not None:
        args.append(f"--window-size {changed.window_size}")
        args += [f"--{flag.replace('_', '-')} {changed.option(flag)}" for flag in ("relpos_resize", "window_part")
                 if changed.option(flag) is not None]
    return " ".join(args)


def _size(size: Size | None) -> str:
    return "?" if size is None else format_size(size)


def _source_name(provenance: Provenance) -> str:
    """A Hub id as it is; of a local path only the file name (a card is public, the user's folders are not)."""
    source = provenance.source or "unknown source"
    return source if provenance.from_hub else PurePath(source).name


def _summary(p: Provenance) -> str:
    pinned = f" (commit `{p.source_commit[:12]}`)" if p.source_commit else ""
    done = p.conversion
    window = format_size(done.window) if done else "?"
    global_size = "?" if done is None else NO_GLOBAL_PART if done.global_size is None else format_size(done.global_size)
    return (
        f"The weights of `{_source_name(p)}`{pinned} with the position embedding rewritten by abswin-convert "
        f"{p.version} for {_size(p.img_size)} input. The learned embedding was split into a window "
        f"part ({window} tokens, tiled once per attention window, never resized) and a global part "
        f"({global_size} tokens, resized with {done.resize if done else '?'}), the \"absolute win\" form of "
        f"{PAPER}; {_target_sentence(p)} "
        + (_window_sentence(p.window_change, window) + " " if p.window_change else "")
        + _other_tensors_sentence(p)
    )


def _window_sentence(window: WindowChangeRecord, old_window: str) -> str:
    """A window change (``--window-size``) changes what the model computes at its own size: the card says so."""
    return (
        f"The attention window was changed to {window.window_size} (from {old_window}; "
        f"relative-position tables: {window.relpos_resize}, window part: {window.window_part}), "
        "which changes what the model computes at its own size: the relative difference of the image encoder's output "
        f"against the original at the native size is {window.effect or 'not recorded'}."
    )


def _other_tensors_sentence(p: Provenance) -> str:
    """What else was rewritten for the new size or window (relative-position tables, a decoder's embedding), if anything."""
    resized = p.also_rewritten
    if not resized:
        return "Every other tensor is copied unchanged."
    listed = ", ".join(f"`{name}`" for name in resized)
    return f"Also rewritten ({len(resized)}): {listed}; every other tensor is copied unchanged."


def _target_sentence(p: Provenance) -> str:
    done = p.conversion
    target = done.target if done else "baked"
    if target == "baked":
        return (
            f"the two parts are composed at the new size and stored under the source's own key "
            f"(`{done.position_key if done else 'pos_embed'}`), so the model built for {_size(p.img_size)} input loads "
            "these weights with `strict=True`."
        )
    if target == TIMM_ABSWIN:
        gh, gw = done.global_size if done and done.global_size else ("?", "?")
        return (
            f"the two parts are stored apart as `pos_embed` and `{TIMM_WINDOW_KEY}` for timm's Hiera built with "
            f"`abs_win_pos_embed=True, global_pos_size=({gh}, {gw})`."
        )
    return f"the parts are stored in the `{target}` layout."


def _provenance_rows(provenance: Provenance) -> list[tuple[str, ...]]:
    values = dict(provenance.entries(), source=_source_name(provenance))
    done = provenance.conversion
    if done is not None:  # numbers shown as a reader takes them; an undefined energy keeps its words
        values["residual"] = residual.in_words(done.residual)
        if done.window_energy is not None:
            values["window_energy"] = f"{done.window_energy:.3f}"
    return [(label, f"`{values[key]}`") for key, label in _PROVENANCE_ROWS if values.get(key)]


def _not_verified(hooks: dict[str, dict]) -> str:
    """A hook that could check nothing says so first: its results are no evidence either way."""
    unchecked = [h for h in sorted(hooks) if isinstance(hooks[h], dict) and hooks[h].get("verified") is False]
    return f"**Not verified**: {', '.join(unchecked)} could not check this output.\n\n" if unchecked else ""


def _hook_rows(hooks: dict[str, dict]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for hook in sorted(hooks):
        metrics = hooks[hook] if isinstance(hooks[hook], dict) else {"result": hooks[hook]}
        rows.extend((hook, metric, format_value(value)) for metric, value in sorted(_flatten(metrics).items()))
    return rows


def _flatten(metrics: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
