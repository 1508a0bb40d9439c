"""``abswin-convert verify``: parse, call the library's verify, print the checks; the exit status is the verdict."""

from __future__ import annotations

import sys

import click

from .support import SIZE_METAVAR, emit, json_option, user_errors

# The verdicts' exit statuses, beside 2 (the user's error) and 1 (a bug); evaluation.verify.EXIT_STATUS holds the
# same numbers (this module stays importable without torch, for a fast --help).
STATUS_HELP = ("Exit status: 0 verified, 3 failed (a check failed), 4 not verified (a check could not run), "
               "2 a user error, 1 a bug.")


@click.command("verify", short_help="Check a converted output in its upstream runtime against its source.",
               epilog=STATUS_HELP)
@click.argument("output")
@click.option("--source", default=None, metavar="SRC",
              help="The checkpoint it was converted from (default: the one its provenance names, when it is here).")
@click.option("--img-size", default=None, metavar=SIZE_METAVAR,
              help="Input size to load and run it at (default: the size it was converted for).")
@click.option("--no-measure", is_flag=True,
              help="Checks only: skip measuring what the conversion changed (three more models built and run).")
@json_option
@user_errors
def verify_command(output: str, source: str | None, img_size: str | None, no_measure: bool, as_json: bool) -> None:
    """Verify OUTPUT, a file or folder `convert` wrote: its upstream runtime (segment-anything, sam2, timm,
    transformers, hiera) builds the model at the target size from the weights (or config.json) and loads it with
    strict=True, runs it, and the conversion is recomputed from the source to compare every position tensor; then
    what the conversion changed, as relative differences of the encoder's output.

    \b
    Examples:
      abswin-convert verify sam_vit_b_1536.pth --source sam_vit_b_01ec64.pth
      abswin-convert verify hiera-448/ --json
    """
    from ..evaluation.verify import EXIT_STATUS, verify

    report = verify(output, source=source, img_size=img_size, measure=not no_measure)
    emit(report, as_json, _lines(report))
    sys.exit(EXIT_STATUS[report["verdict"]])


def _lines(r: dict) -> list[str]:
    against = f", against {r['source']}" if r.get("source") else ""
    lines = [f"{r['output']}: {r.get('family', '?')} ({r.get('spelling', '?')}) at {r['img_size']}{against}"]
    if r.get("note"):
        lines.append(r["note"])
    lines += [f"  {name:<17} {check['status']:<13} {check['detail']}" for name, check in r["checks"].items()]
    changes = r.get("changes") or {}
    for key, label in (("at_target_vs_naive", f"at {r['img_size']}, absolute win vs naive resize"),
                       ("at_native_vs_source", f"at the native {changes.get('native_size', 'size')}, output vs source")):
        if key in changes:
            value = changes[key]
            shown = f"{value:.3g} (relative, encoder output)" if isinstance(value, float) else value
            lines.append(f"  changed           {label}: {shown}")
    lines.append(r["verdict"].upper() if r["verdict"] != "not verified" else "NOT VERIFIED")
    return lines
