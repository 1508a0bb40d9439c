"""The one exception type for problems a user can cause (bad files, bad options), and how errors read."""

from __future__ import annotations

import re


class AbswinError(Exception):
    """A user-facing error: the message says what was found and what to do.

    The CLI prints it as one line on stderr and exits with status 2.
    """


def first_line(error: BaseException, sentence: bool = False) -> str:
    """The first line of an exception's message (libraries run on for lines); with ``sentence``, only its first
    sentence, at most 160 characters (torch's messages)."""
    lines = str(error).strip().splitlines()
    if not lines:
        return type(error).__name__
    return lines[0].split(". ")[0][:160] if sentence else lines[0]


def missing_torch(error: BaseException) -> str | None:
    """What to say when ``error`` is torch missing from a conversion-only install (torch is the [torch] extra)."""
    if isinstance(error, ModuleNotFoundError) and error.name == "torch":
        return "this needs torch, which a conversion-only install leaves out: pip install 'abswin-convert[torch]'"
    return None


_FLAG = re.compile(r"--([a-z]+(?:-[a-z]+)*)(?: (tile|full)\b)?")


def in_python_words(message: str) -> str:
    """An error message written for the command line, for a caller of the Python API: ``--recipe tile`` becomes
    ``recipe="tile"``, ``--patch-stride`` becomes ``patch_stride`` (the keyword arguments are the flags' names)."""

    def keyword(match: re.Match) -> str:
        name = match.group(1).replace("-", "_")
        return f'{name}="{match.group(2)}"' if match.group(2) else name

    return _FLAG.sub(keyword, message)
