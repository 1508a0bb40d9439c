"""The words the command line offers as choices, kept apart from the modules that act on them.

This module imports nothing, so the CLI can build its options (and answer ``--help``) without loading torch; the
modules that own each meaning import their tuple from here.
"""

TARGETS = ("baked", "timm-abswin", "sam2")  # what a conversion can produce (families/base.py)
LAYOUTS = ("flat", "flat_cls", "nhwc", "nchw")  # layouts of position tensors (maths/grid.py)
EXECUTORS = ("local", "ray")  # where the zoo runs its outputs (zoo/executors.py)
# the families the registry holds, and the generic one (families/__init__.py; tests/test_cli_help.py checks they agree)
FAMILY_NAMES = ("hiera", "sam", "vitdet", "sam2", "generic")
# --window-size: how the windowed blocks' relative-position tables are resized, and what becomes of the embedding's
# window-periodic part (families/window_change.py)
RELPOS_RESIZES = ("get-rel-pos", "align-corners")
WINDOW_PARTS = ("keep", "rewindow")
# The defaults: the choices that changed the original model's output least at its own size
# (scripts/measure_window_change.py; README "Changing the attention window" has the figures).
DEFAULT_RELPOS_RESIZE = "get-rel-pos"
DEFAULT_WINDOW_PART = "keep"
