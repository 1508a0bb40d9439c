"""The words the command line offers as choices, kept apart from the modules that act on them.

This module imports nothing, so the CLI can build its options (and answer ``--help``) without loading torch; the
modules that own each meaning import their tuple from here.
"""

TARGETS = ("baked", "timm-abswin", "sam2")  # what a conversion can produce (families/base.py)
LAYOUTS = ("flat", "flat_cls", "nhwc", "nchw")  # layouts of position tensors (maths/grid.py)
EXECUTORS = ("local", "ray")  # where the zoo runs its outputs (zoo/executors.py)
# the families the registry holds, and the generic one (families/__init__.py; tests/test_cli_help.py checks they agree)
FAMILY_NAMES = ("hiera", "sam", "vitdet", "sam2", "generic")
