"""The ``abswin-convert`` command: one module per command, each parses, calls the library, prints. No maths here.

Command modules import only click and ``..vocabulary`` at load time, so ``--help``, ``--version`` and option errors
start fast, without torch (tests/test_cli_startup.py checks it); the library is imported inside each command.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import signals

if Path(sys.argv[0]).name == "abswin-convert":  # the console script: a signal from now on gets its one line
    signals.install_early()

import click  # after the signal handlers, on purpose

from .. import __version__
from .convert import convert_command
from .demo import demo_command
from .evaluate import eval_command, finetune_command
from .inspect import inspect_command
from .push import push_command
from .support import CommandGroup
from .verify import verify_command
from .zoo import zoo_command

COMMANDS = (inspect_command, convert_command, verify_command, demo_command, eval_command, finetune_command, push_command,
            zoo_command)


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="abswin-convert")
def main() -> None:
    """Convert window-attention ViT checkpoints to absolute-win position embeddings for a new input size.

    Naive interpolation of a windowed ViT's position embedding (Hiera, SAM, SAM2, ViTDet) breaks the pattern
    it repeats in every window; absolute win keeps it (Bolya et al., ICLR 2024). Start with `inspect`, then
    `convert`; `abswin-convert COMMAND --help` shows examples. SOURCE may be a file, a folder or a Hub name.

    \b
    Words:
      window part:   the embedding's mean over its windows, the pattern every window repeats; tiled, never resized
      global part:   the rest (the embedding minus its tiled window part), a smooth image-wide field; resized
      baked:         both parts composed for the new size and stored as the source stored its embedding
      window energy: how much of the embedding the window part explains, normalised: 0 as in noise (naive
                     resizing is harmless), 1 a pure window pattern (naive resizing breaks it)

    \b
    Examples:
      abswin-convert inspect facebook/sam-vit-base --plot sam.png --img-size 1536
      abswin-convert convert facebook/sam-vit-base -o sam-1536/ --img-size 1536
      abswin-convert verify sam-1536/
      abswin-convert demo
    """


for _command in COMMANDS:
    main.add_command(_command)
