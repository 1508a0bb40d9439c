"""What every CLI command shares: one-line errors with exit status 2, JSON or text output, common options."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from ..errors import AbswinError, missing_torch
from ..vocabulary import FAMILY_NAMES, LAYOUTS
from . import signals


def printable(text: str) -> str:
    """``text`` with the control bytes a file's contents may carry (escape sequences, C1 codes, NUL, DEL) shown
    escaped instead of reaching the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def one_line(message: str) -> str:
    """``message`` as one printable line: whitespace runs become one space."""
    return printable(" ".join(message.split()))


def fail(message: str, code: int) -> NoReturn:
    """Print the one error line and exit with ``code``."""
    click.echo(f"abswin-convert: error: {one_line(message)}", err=True)
    sys.exit(code)


def user_errors(func: Callable) -> Callable:
    """Turn AbswinError, and what the system says about files and memory, into one line on stderr and exit status 2;
    anything else is a bug (exit 1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(os.environ.get("ABSWIN_DEBUG"))  # then the traceback, with the error's cause
        try:
            return func(*args, **kwargs)
        except AbswinError as exc:
            if debug:
                raise
            fail(str(exc), 2)
        except OSError as exc:  # a full disk, a file size limit, a name too long: the environment's, not a bug
            if debug:
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            fail(f"{exc.strerror or exc}{where}", 2)
        except MemoryError:
            if debug:
                raise
            fail("out of memory; free some, or lower ABSWIN_MAX_MEMORY so that large sizes are refused up front", 2)
        except Exception as exc:  # a bug: keep it to one line unless asked for the traceback
            if debug:
                raise
            install = missing_torch(exc)
            if install:  # the user's install, not a bug
                fail(install, 2)
            fail(f"internal error: {exc.__class__.__name__}: {exc} (set ABSWIN_DEBUG=1 for the traceback)", 1)

    return wrapper


class CommandGroup(click.Group):
    """The ``abswin-convert`` group: click's own usage errors become one line with exit status 2, and signals one
    line with 128 + the signal's number (``signals.py``); ``--help`` and ``--version`` are click's."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> NoReturn:
        try:
            with signals.raising():
                status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except signals.Interrupted as exc:
            fail(f"interrupted by {exc}", exc.exit_status)
        except click.exceptions.NoArgsIsHelpError as exc:  # a bare `abswin-convert CMD`: its help, as click gives it
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            context = getattr(exc, "ctx", None)  # usage errors know the command they are about
            command = context.command_path if context else "abswin-convert"
            fail(f"{exc.format_message()} (see {command} --help)", 2)
        except click.Abort:
            fail("aborted", 130)
        sys.exit(status if isinstance(status, int) else 0)


def emit(data: dict, as_json: bool, lines: list[str]) -> None:
    """Print ``data`` as JSON, or the human ``lines``."""
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        for line in lines:
            click.echo(printable(line))


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
                     help="Plain global-attention ViT: tile its pretrained grid into ViTDet windows (the ViTDet "
                          "recipe: a different model from the one its runtime's interpolation gives, for a finetune)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func
