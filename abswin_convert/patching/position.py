"""The position embedding of a patched model: where its parameters live, and the embedding they give at a size.

Unsplit, the runtime's own parameter stays where it is, under its own name (the state dict does not change); split,
it becomes two parameters on the same module, ``pos_embed`` (the global part, ``[1, C, gh, gw]``) and
``pos_embed_win`` (the window part, ``[1, C, wh, ww]``), as timm's absolute-win Hiera names them, plus
``pos_embed_prefix`` (``[1, P, C]``) for the cls/register rows of a ViT.

``at(size)`` is the embedding for a token grid: the parameter itself at the native grid (unsplit), else absolute
win from the current parameters in float64, rounded once to the parameters' dtype. Outside autograd (eval, frozen
parameters) and outside ``torch.compile`` it is cached per size, keyed on the parameters' storage and version
counters, so an optimizer step or ``load_state_dict`` (both write in place) or ``.to()`` recomputes it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch

from ..families.base import Detection
from ..maths.resize import Size
from ..vocabulary import TIMM_WINDOW_KEY
from . import compose

GLOBAL_NAME = "pos_embed"  # timm's absolute-win Hiera
WINDOW_NAME = TIMM_WINDOW_KEY
PREFIX_NAME = "pos_embed_prefix"
SPLIT_NAMES = (GLOBAL_NAME, WINDOW_NAME, PREFIX_NAME)
_CACHED_SIZES = 8  # multi-scale eval visits a few sizes; more than this and the oldest is recomputed


class Position:
    """The embedding of one patched module (``owner``, whose runtime name for it is ``name``)."""

    def __init__(self, owner: torch.nn.Module, name: str, det: Detection, split: bool) -> None:
        """``det``: the family's detection of the runtime's parameter (layout, grid, window, resize, prefix rows)."""
        self.owner, self.name, self.det, self.split = owner, name, det, split
        self._cache: OrderedDict[tuple, tuple[tuple, torch.Tensor, torch.Tensor | None]] = OrderedDict()
        if split:
            self._split_parameter()

    # --- the parameters ---------------------------------------------------------------------------------------

    @property
    def tiles_pretrained_grid(self) -> bool:
        """The ViTDet recipe (a plain ViT's grid tiled into windows) rather than the split into window + global."""
        return self.det.family == "vitdet"

    def parameters(self) -> list[torch.Tensor]:
        names = SPLIT_NAMES if self.split else (self.name,)
        found = (self.owner._parameters.get(name) for name in names)
        return [param for param in found if param is not None]

    def native(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The runtime's parameter as ``[H, W, C]`` + prefix rows ``[P, C]`` (views, with gradients)."""
        param = self.owner._parameters[self.name]
        assert param is not None
        h, w = self.det.grid
        if self.det.layout == "nhwc":
            return param[0], None
        prefix = self.det.prefix_tokens if self.det.layout == "flat_cls" else 0
        return param[0, prefix:].reshape(h, w, -1), (param[0, :prefix] if prefix else None)

    def _split_parameter(self) -> None:
        """Replace the runtime's parameter by its window and global parts (and prefix rows)."""
        grid, prefix = self.native()
        with torch.no_grad():
            window, global_ = self._parts(grid.double())
        like = self.owner._parameters[self.name]
        assert like is not None
        del self.owner._parameters[self.name]
        for name, value in ((GLOBAL_NAME, global_), (WINDOW_NAME, window)):
            self.owner._parameters[name] = _parameter(value.permute(2, 0, 1).unsqueeze(0), like)
        if prefix is not None:
            self.owner._parameters[PREFIX_NAME] = _parameter(prefix.detach().unsqueeze(0), like)

    def _parts(self, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Window and global parts of a float64 grid: the split, or the ViTDet recipe (global part zero at the
        native grid, so a finetune can learn one)."""
        if self.tiles_pretrained_grid:
            return compose.recipe_window(grid, self.det.window, self.det.resize), torch.zeros_like(grid)
        return compose.split(grid, self.det.window)

    def runtime_value(self, size: Size | None = None) -> torch.Tensor:
        """The embedding at ``size`` (the native grid by default) in the runtime's own layout, as its parameter
        would hold it: what a model built for that size loads."""
        with torch.no_grad():
            grid, prefix = self.at(size or self.det.grid)
        if self.det.layout == "nhwc":
            return grid
        rows = grid.reshape(1, -1, grid.shape[-1])
        return rows if prefix is None else torch.cat([prefix.detach(), rows], dim=1)

    def unsplit(self) -> None:
        """Back to the runtime's one parameter, composed at the native grid from the current parts."""
        like = self.owner._parameters[GLOBAL_NAME]
        assert like is not None
        value = self.runtime_value()
        for name in SPLIT_NAMES:
            self.owner._parameters.pop(name, None)
        self.owner._parameters[self.name] = _parameter(value, like)
        self.split = False

    # --- the embedding at a size ------------------------------------------------------------------------------

    def at(self, size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The embedding for a ``size`` token grid: ``[1, H, W, C]`` and the prefix rows ``[1, P, C]`` (or None)."""
        size = (int(size[0]), int(size[1]))
        params = self.parameters()
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
            return self._compute(size)  # autograd needs the graph; compiled code fuses the work into its graph
        key = (size, params[0].dtype, params[0].device)
        stamp = tuple((p.data_ptr(), p._version) for p in params)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == stamp:
            self._cache.move_to_end(key)
            return hit[1], hit[2]
        grid, prefix = self._compute(size)
        self._cache[key] = (stamp, grid, prefix)
        if len(self._cache) > _CACHED_SIZES:
            self._cache.popitem(last=False)
        return grid, prefix

    def _compute(self, size: Size) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.split:
            window, global_ = (self.owner._parameters[n] for n in (WINDOW_NAME, GLOBAL_NAME))
            assert window is not None and global_ is not None
            grid = compose.compose(_hwc(window).double(), _hwc(global_).double(), size, self.det.resize)
            return grid.to(global_.dtype).unsqueeze(0), self.owner._parameters.get(PREFIX_NAME)
        native, prefix_rows = self.native()
        prefix = None if prefix_rows is None else prefix_rows.unsqueeze(0)
        if size == tuple(self.det.grid):
            return native.unsqueeze(0), prefix  # the runtime's own embedding, exactly
        parts = self._parts(native.double())
        return compose.compose(*parts, size, self.det.resize).to(native.dtype).unsqueeze(0), prefix


def _hwc(part: torch.Tensor) -> torch.Tensor:
    """``[1, C, H, W]`` -> ``[H, W, C]``."""
    return part[0].permute(1, 2, 0)


def _parameter(value: torch.Tensor, like: torch.Tensor) -> torch.nn.Parameter:
    """A new parameter holding ``value`` in ``like``'s dtype and device, trainable as ``like`` was."""
    return torch.nn.Parameter(value.detach().to(like.dtype).contiguous(), requires_grad=like.requires_grad)
