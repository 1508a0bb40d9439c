"""sam2: a ``SAM2Base`` for a ``.pt`` checkpoint's weights, from the sam2 package's own model configs.

A config is chosen by what the weights show: the trunk's width and blocks per stage (a block that changes the width
starts a stage) tell tiny, small, base+ and large apart, and the SAM 2.1 parameters (``no_obj_embed_spatial``)
tell 2.1 from 2.0. What the shapes do not hold (heads, window sizes per stage, the global-attention blocks, the
memory modules) comes from that config; the background size of the position embedding comes from the weights (a
conversion with ``--global-size`` changes it), and the input size is the caller's. Weights load with ``strict=True``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import AbswinError
from ..vocabulary import SAM2_WINDOW_KEY
from .strict import load_strict

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base

TRUNK = "image_encoder.trunk."
NATIVE_SIZE = 1024  # every sam2 config's image_size
CONFIG_FOLDERS = ("sam2", "sam2.1")  # the released models' configs (not the training ones)
SAM2_1_MARKER = "no_obj_embed_spatial"  # a parameter only SAM 2.1 models hold


@dataclass(frozen=True)
class TrunkShape:
    """What a checkpoint's shapes say about its Hiera trunk."""

    embed_dim: int
    stages: tuple[int, ...]
    background: tuple[int, int]  # pos_embed's grid
    sam2_1: bool

    def __str__(self) -> str:
        version = "SAM 2.1" if self.sam2_1 else "SAM 2"
        return f"{version}, embed_dim {self.embed_dim}, stages {'-'.join(map(str, self.stages))}"


def trunk_shape(state: Mapping[str, torch.Tensor]) -> TrunkShape:
    """The trunk of a sam2 model's state dict (``image_encoder.trunk.*``)."""
    for key in ("patch_embed.proj.weight", "pos_embed", SAM2_WINDOW_KEY):
        if TRUNK + key not in state:
            raise AbswinError(f"not a sam2 model: no {TRUNK}{key}")
    blocks = {int(m.group(1)) for key in state if (m := re.match(re.escape(TRUNK) + r"blocks\.(\d+)\.", key))}
    starts = [0] + sorted(i for i in blocks if f"{TRUNK}blocks.{i}.proj.weight" in state)  # width changes here
    stages = tuple(end - start for start, end in zip(starts, [*starts[1:], len(blocks)]))
    gh, gw = state[TRUNK + "pos_embed"].shape[-2:]
    return TrunkShape(state[TRUNK + "patch_embed.proj.weight"].shape[0], stages, (gh, gw), SAM2_1_MARKER in state)


def config_for(shape: TrunkShape) -> tuple[str, Any]:
    """The name and contents (OmegaConf) of the sam2 config whose model has this trunk."""
    from omegaconf import OmegaConf

    seen = []
    for path in _config_files():
        cfg = OmegaConf.load(path)
        trunk = {**_trunk_defaults(), **cfg.model.image_encoder.trunk}
        is_2_1 = bool(cfg.model.get(SAM2_1_MARKER, False))
        candidate = TrunkShape(int(trunk["embed_dim"]), tuple(trunk["stages"]), shape.background, is_2_1)
        if candidate == shape:
            return path.stem, cfg
        seen.append(f"{path.stem} ({candidate})")
    raise AbswinError(f"this sam2 model ({shape}) matches none of the sam2 package's configs: {'; '.join(seen)}")


def build_sam2(state: Mapping[str, torch.Tensor], img_size: int = NATIVE_SIZE) -> SAM2Base:
    """sam2's ``SAM2Base`` holding ``state`` (a ``.pt``'s ``model`` dict), built for ``img_size`` inputs from the
    matching config and loaded strictly; eval mode."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if img_size % 32:
        raise AbswinError(f"sam2 needs an input size that is a multiple of 32 (its windows tile h // 8 tokens), not {img_size}")
    shape = trunk_shape(state)
    name, cfg = config_for(shape)
    cfg.model.image_size = img_size
    cfg.model.image_encoder.trunk.window_pos_embed_bkg_spatial_size = list(shape.background)
    OmegaConf.resolve(cfg)
    model = instantiate(cfg.model, _recursive_=True)
    return load_strict(model, state, f"sam2's {name} at {img_size} px")


def build_trunk(state: Mapping[str, torch.Tensor], img_size: int) -> torch.nn.Module:
    """sam2's Hiera trunk alone (a ``--target sam2`` output of a Hiera: ``image_encoder.trunk.*`` only), its width,
    stages and heads read as for a Hiera, its background size from ``pos_embed``; loaded strictly, eval mode. The
    trunk runs at any multiple of 32 px: ``img_size`` is only checked."""
    from sam2.modeling.backbones.hieradet import Hiera

    from .hiera import args_from_shapes

    if img_size % 32:
        raise AbswinError(f"sam2 needs an input size that is a multiple of 32 (its windows tile h // 8 tokens), not {img_size}")
    own = {key[len(TRUNK):]: value for key, value in state.items()}
    args, _ = args_from_shapes({key: tuple(value.shape) for key, value in own.items()})
    trunk = Hiera(embed_dim=args["embed_dim"], num_heads=args["num_heads"], stages=args["stages"], q_pool=args["q_pool"],
                  window_pos_embed_bkg_spatial_size=tuple(own["pos_embed"].shape[-2:]), global_att_blocks=())
    return load_strict(trunk, own, f"sam2's Hiera trunk at {img_size} px")


def version() -> str:
    from importlib.metadata import version as installed

    return f"sam2 {installed('sam2')}"


def _config_files() -> list[Path]:
    import sam2

    root = Path(sam2.__file__).parent / "configs"
    return sorted(path for folder in CONFIG_FOLDERS for path in (root / folder).glob("*.yaml"))


def _trunk_defaults() -> dict[str, Any]:
    """The trunk's own defaults, for what a config leaves out (base+ names no stages)."""
    from sam2.modeling.backbones.hieradet import Hiera

    return {name: p.default for name, p in inspect.signature(Hiera).parameters.items() if p.default is not p.empty}
