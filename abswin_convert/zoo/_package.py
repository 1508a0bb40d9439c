"""Everything the zoo takes from the rest of abswin_convert, in one place.

The zoo's other modules import these names from here only, so that moving a module elsewhere in the package means
changing one import line here.
"""

from __future__ import annotations

from .. import __version__
from ..checkpoint import WEIGHT_SUFFIXES
from ..convert import convert
from ..errors import AbswinError
from ..families import FAMILIES
from ..families.base import TARGETS
from ..families.generic import Overrides
from ..grid import LAYOUTS, format_size, parse_size
from ..hooks import run_hook
from ..hub import is_repo_id, open_source, parse_hub_source
from ..model_card import format_value, markdown_table
from ..outputs import read_output, write_hooks
from ..provenance import sha256_of
from ..push import push
from ..resize import Size
from ..writer import atomic_file, write_json

BUILTIN_HOOKS = ("verify", "eval", "finetune")  # the names hooks.run_hook knows without importing anything
GPU_HOOKS = ("eval", "finetune")  # built-in hooks that want a GPU when the Ray cluster has one

__all__ = [
    "BUILTIN_HOOKS", "FAMILIES", "GPU_HOOKS", "LAYOUTS", "TARGETS", "WEIGHT_SUFFIXES", "AbswinError", "Overrides",
    "Size", "__version__", "atomic_file", "convert", "format_size", "format_value", "is_repo_id", "markdown_table",
    "open_source", "parse_hub_source", "parse_size", "push", "read_output", "run_hook", "sha256_of", "write_hooks",
    "write_json",
]
