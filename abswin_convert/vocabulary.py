"""The words the command line offers as choices, and the names several modules must spell alike, in one place.

This module imports nothing, so the CLI can build its options (and answer ``--help``) without loading torch; the
modules that own each meaning import their names from here.
"""

# What a conversion can produce (families/base.py): the source's own keys, timm Hiera's split parts, a SAM2 trunk.
BAKED = "baked"
TIMM_ABSWIN = "timm-abswin"
SAM2_TRUNK = "sam2"
TARGETS = (BAKED, TIMM_ABSWIN, SAM2_TRUNK)

# Runtimes with native absolute win keep the window part as a tensor of its own, under these names.
TIMM_WINDOW_KEY = "pos_embed_win"  # timm's Hiera with abs_win_pos_embed=True
SAM2_WINDOW_KEY = "pos_embed_window"  # SAM2's HieraDet trunk (sam2, transformers, timm)

LAYOUTS = ("flat", "flat_cls", "nhwc", "nchw")  # layouts of position tensors (maths/grid.py)
EXECUTORS = ("local", "ray")  # where the zoo runs its outputs (zoo/executors.py)

# The families the registry holds (families/__init__.py), each module taking its name from here; the generic one
# reads a tensor the user describes and is never auto-detected.
HIERA, SAM, VITDET, SAM2, GENERIC = "hiera", "sam", "vitdet", "sam2", "generic"
FAMILY_NAMES = (HIERA, SAM, VITDET, SAM2, GENERIC)
# --window-size: how the windowed blocks' relative-position tables are resized, and what becomes of the embedding's
# window-periodic part (families/window_change.py)
RELPOS_RESIZES = ("get-rel-pos", "align-corners")
WINDOW_PARTS = ("keep", "rewindow")
# The defaults: the choices that changed the original model's output least at its own size
# (scripts/sam_window.py effect; README "Changing the attention window" has the figures).
DEFAULT_RELPOS_RESIZE = "get-rel-pos"
DEFAULT_WINDOW_PART = "keep"
