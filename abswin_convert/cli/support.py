"""What every CLI command shares: one-line errors with exit status 2, JSON or text output, common options."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from ..errors import AbswinError
from ..vocabulary import LAYOUTS


def _fail(message: str, code: int) -> None:
    click.echo(f"abswin-convert: error: {' '.join(message.split())}", err=True)
    sys.exit(code)


def user_errors(func: Callable) -> Callable:
    """Turn AbswinError into one line on stderr and exit status 2; anything else is a bug (exit 1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AbswinError as exc:
            if os.environ.get("ABSWIN_DEBUG"):  # the traceback, with the error's cause
                raise
            _fail(str(exc), 2)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as exc:  # a bug: keep it to one line unless asked for the traceback
            if os.environ.get("ABSWIN_DEBUG"):
                raise
            _fail(f"internal error: {exc.__class__.__name__}: {exc} (set ABSWIN_DEBUG=1 for the traceback)", 1)

    return wrapper


def emit(data: dict, as_json: bool, lines: list[str]) -> None:
    """Print ``data`` as JSON, or the human ``lines``."""
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        for line in lines:
            click.echo(line)


class OptionWithOldNames(click.Option):
    """An option whose old spellings (``old``) still work for one release but no longer show in ``--help``."""

    def __init__(self, *args: Any, old: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.old_names = old

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        shown, self.opts = self.opts, [o for o in self.opts if o not in self.old_names]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown


def renamed_option(*names: str, old: tuple[str, ...], param: str, **kwargs: Any) -> Callable:
    """``click.option(*names)`` into ``param`` that also accepts the hidden ``old`` spellings."""
    return click.option(*names, *old, param, cls=OptionWithOldNames, old=old, **kwargs)


# The family names, for --help without importing torch; tests/test_cli_help.py checks them against the registry.
FAMILY_NAMES = ("hiera", "sam", "vitdet", "sam2", "generic")
SIZE_METAVAR = "N|HxW"
json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON report instead of text.")
quiet_option = click.option("-q", "--quiet", is_flag=True,
                            help="No progress bars (they go to stderr, and only to a terminal).")


def quiet_downloads(quiet: bool) -> None:
    """huggingface_hub draws its own download bars on stderr; --quiet turns them off too."""
    if quiet:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
family_option = click.option(
    "--family", type=click.Choice(FAMILY_NAMES), default=None,
    help="Read the checkpoint as this family instead of detecting it (generic: any other, with --key/--layout/--window).",
)


def override_options(func: Callable) -> Callable:
    """``--key/--layout/--window/--patch-stride/--recipe``: read a checkpoint of a family we do not know, or correct one."""
    options = [
        click.option("--key", default=None, metavar="NAME", help="Position tensor to convert (a family we do not know)."),
        click.option("--layout", type=click.Choice(LAYOUTS), default=None,
                     help="Layout of --key's tensor: flat [1, H*W, C], flat_cls [1, P+H*W, C], nhwc or nchw."),
        click.option("--window", default=None, metavar=SIZE_METAVAR, help="Window in tokens (overrides the family's)."),
        click.option("--patch-stride", type=int, default=None, metavar="PIXELS",
                     help="Pixels per token (overrides the family's)."),
        click.option("--recipe", type=click.Choice(["tile"]), default=None,
                     help="Plain global-attention ViT: tile its pretrained grid into ViTDet windows (not the identity)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func
