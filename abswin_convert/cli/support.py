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


json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON report instead of text.")
family_option = click.option("--family", default=None, help="Skip detection and read the checkpoint as this family.")


def override_options(func: Callable) -> Callable:
    """``--key/--layout/--window/--patch-stride/--recipe``: read a checkpoint of a family we do not know, or correct one."""
    options = [
        click.option("--key", default=None, help="Position tensor to convert (a family we do not know)."),
        click.option("--layout", type=click.Choice(LAYOUTS), default=None, help="Layout of --key's tensor."),
        click.option("--window", default=None, help="Window in tokens, N or HxW (overrides the family's)."),
        click.option("--patch-stride", type=int, default=None, help="Pixels per token (overrides the family's)."),
        click.option("--recipe", type=click.Choice(["tile"]), default=None,
                     help="Plain global-attention ViT: tile its pretrained grid into ViTDet windows (not the identity)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func
