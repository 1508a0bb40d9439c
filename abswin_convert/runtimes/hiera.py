"""The official ``hiera-transformer`` package: its hub-mixin ``config.json`` holds the constructor's arguments; a
bare ``.pth`` is built from its shapes. The shape reading is shared with timm's Hiera (the same names)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING

from ..errors import AbswinError
from .encoder import Encoder, NotBuildable, count_blocks, package_version, require

if TYPE_CHECKING:
    import torch

# (embed_dim, stages) -> num_heads of the published sizes (tiny, small, base, base+, large, huge): the head count
# is not in the weights (qkv is [3 * dim, dim] whatever the heads).
PUBLISHED_HEADS: dict[tuple[int, tuple[int, ...]], int] = {
    (96, (1, 2, 7, 2)): 1, (96, (1, 2, 11, 2)): 1, (96, (2, 3, 16, 3)): 1, (112, (2, 3, 16, 3)): 2,
    (144, (2, 6, 36, 4)): 2, (256, (2, 6, 36, 4)): 4,
}


def is_hiera_config(config: dict) -> bool:
    return "embed_dim" in config and "stages" in config


def create(config: dict, img_size: int) -> torch.nn.Module:
    """``hiera.Hiera`` for square ``img_size`` images, random weights."""
    hiera = import_hiera()

    if len(config.get("input_size", (224, 224))) != 2:
        raise AbswinError("this official Hiera config is for video; eval and finetune take image classifiers")
    try:
        return hiera.Hiera(**{**config, "input_size": (img_size, img_size)})
    except (RuntimeError, AssertionError, TypeError) as exc:
        raise AbswinError(f"official Hiera cannot be built at {img_size} px ({exc})") from exc


def args_from_shapes(shapes: Mapping[str, tuple[int, ...]]) -> tuple[dict, str]:
    """Hiera's width, stages and heads read off the weights (a block with ``proj`` starts a stage), and a note
    when the head count had to be assumed."""
    require(shapes, "patch_embed.proj.weight", "blocks.0.norm1.weight")
    dim = shapes["patch_embed.proj.weight"][0]
    depth = count_blocks(shapes, "blocks.")
    starts = [0] + [i for i in range(1, depth) if f"blocks.{i}.proj.weight" in shapes] + [depth]
    stages = tuple(b - a for a, b in zip(starts, starts[1:]))
    heads = PUBLISHED_HEADS.get((dim, stages))
    args = {"embed_dim": dim, "stages": stages, "num_heads": heads or 1, "q_pool": len(stages) - 1,
            "in_chans": shapes["patch_embed.proj.weight"][1]}
    return args, "" if heads else " (num_heads 1 assumed: the weights do not say)"


def encoder(config: dict | None, shapes: Mapping[str, tuple[int, ...]], img_size: int) -> Encoder:
    """The official Hiera at ``img_size`` from its mixin config, else from the weights' shapes; it encodes to its
    last stage's features."""
    note = ""
    if "pos_embed_spatial" in shapes or len((config or {}).get("input_size", (224, 224))) != 2:
        raise NotBuildable("video Hiera models are not built here (image models are)")
    if config is None:
        args, note = args_from_shapes(shapes)
        head = shapes.get("head.projection.weight")
        config = {**args, "num_classes": head[0] if head else 0}
    model = create(config, img_size).eval()
    what = f"{package_version('hiera-transformer')} Hiera(input_size=({img_size}, {img_size}), embed_dim={config['embed_dim']})"
    return Encoder(model, what + note, lambda x: model(x, return_intermediates=True)[1][-1])


def import_hiera() -> ModuleType:
    """The ``hiera`` package, without the FutureWarning timm raises at its import of ``timm.models.layers`` (the
    package's, not the user's, to fix)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Importing from timm.models.layers is deprecated", FutureWarning)
        import hiera
    return hiera
