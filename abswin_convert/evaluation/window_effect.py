"""What a window change (``--window-size``) does to a SAM or ViTDet image encoder at its own size, measured.

The encoder is run twice on one fixed random image at the size the model runs at: with the source's weights and
window, and with the weights the window change alone writes (``families.plan`` at that size) and the new window.
The number recorded is ``||new - old|| / ||old||`` of the encoder's output (after SAM's neck; ViTDet's last block).

The forward is this module's own, written from the structure every runtime of these families shares (patch
embedding, absolute embedding, pre-norm blocks attending in padded windows or globally with decomposed relative
positions, GELU MLPs, SAM's convolutional neck), so that it runs on any of their checkpoint spellings with torch
alone; ``tests/test_window_change.py`` checks it against segment-anything, transformers and timm.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .. import families
from ..families.base import ConvertRequest, Detection
from ..io.checkpoint import Checkpoint
from ..maths.resize import Size

if TYPE_CHECKING:  # a conversion imports this module without torch; torch is imported when measuring
    import torch

EPS = 1e-6  # every one of these runtimes' LayerNorms
SEED = 0


@dataclass(frozen=True)
class Names:
    """Where one checkpoint spelling keeps each weight, below the encoder's own prefix."""

    patch: str
    blocks: str
    norm1: str
    qkv: str
    proj: str
    rel_pos: str  # + "h" / "w"
    norm2: str
    fc1: str
    fc2: str
    neck: tuple[str, str, str, str] | None = None  # conv 1x1, LayerNorm2d, conv 3x3, LayerNorm2d


_SAM_NECK = ("neck.0", "neck.1", "neck.2", "neck.3")
NAMES = {
    ("sam", "segment-anything"): Names("patch_embed.proj", "blocks", "norm1", "attn.qkv", "attn.proj", "attn.rel_pos_",
                                       "norm2", "mlp.lin1", "mlp.lin2", _SAM_NECK),
    ("sam", "timm"): Names("patch_embed.proj", "blocks", "norm1", "attn.qkv", "attn.proj", "attn.rel_pos_", "norm2",
                           "mlp.fc1", "mlp.fc2", _SAM_NECK),
    ("sam", "transformers"): Names("patch_embed.projection", "layers", "layer_norm1", "attn.qkv", "attn.proj",
                                   "attn.rel_pos_", "layer_norm2", "mlp.lin1", "mlp.lin2",
                                   ("neck.conv1", "neck.layer_norm1", "neck.conv2", "neck.layer_norm2")),
    ("vitdet", "detectron2"): Names("patch_embed.proj", "blocks", "norm1", "attn.qkv", "attn.proj", "attn.rel_pos_",
                                    "norm2", "mlp.fc1", "mlp.fc2"),
    ("vitdet", "transformers"): Names("embeddings.projection", "encoder.layer", "norm1", "attention.qkv",
                                      "attention.proj", "attention.rel_pos_", "norm2", "mlp.fc1", "mlp.fc2"),
}
# the key of the position tensor below the encoder's prefix
_POSITION_TAILS = ("embeddings.position_embeddings", "pos_embed")


def measure(ckpt: Checkpoint, det: Detection, request: ConvertRequest) -> float | str:
    """The relative change of the encoder's output that ``request``'s window change makes at the size the model runs
    at; a sentence saying why when it cannot be measured (never an error: the conversion stands without it)."""
    change = request.window_change
    if change is None:
        return "not measured: no window change"
    if change.per_stage:
        return "not measured: this package has no SAM2 trunk forward (README, Changing the attention window: a measured figure)"
    names = NAMES.get((det.family, det.spelling))
    if names is None:
        return f"not measured: no encoder forward for {det.family} ({det.spelling}) checkpoints"
    try:
        import torch
    except ImportError:
        return "not measured: needs torch"
    size = families.run_input(ckpt, det)
    at_size = replace(request, img_size=size, global_size=None, target="baked")
    edits = families.plan(ckpt, det, at_size).replace  # the window change alone, at the size the model runs at
    encoder = _Encoder.find(ckpt, det, names)
    if isinstance(encoder, str):
        return encoder
    image = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        before = encoder.forward(image, _reader(ckpt, {}), det.window)
        after = encoder.forward(image, _reader(ckpt, edits), change.size)
    return float((after - before).norm() / before.norm())


def _reader(ckpt: Checkpoint, edits: dict) -> Callable:
    """``key -> float32 torch tensor``: the edited tensor where the plan has one, else the source's."""
    from ..io.torch_bridge import to_torch

    def read(key: str) -> torch.Tensor:
        return to_torch(edits[key] if key in edits else ckpt.tensor(key)).float()

    return read


@dataclass(frozen=True)
class _Encoder:
    """One encoder's geometry, read off its checkpoint."""

    root: str
    names: Names
    depth: int
    heads: int
    global_blocks: tuple[int, ...]
    position: str
    prefix_tokens: int
    patch_stride: int

    @classmethod
    def find(cls, ckpt: Checkpoint, det: Detection, names: Names) -> _Encoder | str:
        tail = next((t for t in _POSITION_TAILS if det.pos_key.endswith(t)), None)
        if tail is None:
            return f"not measured: {det.pos_key} is not where this forward expects the embedding"
        root = det.pos_key[: -len(tail)]
        block = re.compile(re.escape(f"{root}{names.blocks}.") + r"(\d+)\." + re.escape(f"{names.norm1}.weight"))
        depth = 1 + max((int(m.group(1)) for k in ckpt.keys() if (m := block.fullmatch(k))), default=-1)
        table = f"{root}{names.blocks}.0.{names.rel_pos}h"
        missing = [k for k in (f"{root}{names.patch}.weight", table) if k not in ckpt]
        extra = [k for k in ckpt.keys() if k.startswith(root) and re.search(r"\.residual\.|norm_pre\.", k)]
        if depth == 0 or missing or extra:
            why = f"no {missing[0]}" if missing else (f"{extra[0]} is not part of this forward" if extra else "no blocks")
            return f"not measured: {why}"
        width = ckpt.shape(f"{root}{names.patch}.weight")[0]
        return cls(root, names, depth, width // ckpt.shape(table)[1], det.global_blocks, det.pos_key,
                   det.prefix_tokens, det.patch_stride)

    def forward(self, image: torch.Tensor, read: Callable, window: Size) -> torch.Tensor:
        import torch.nn.functional as F

        n = self.names
        r = self.root
        x = F.conv2d(image, read(f"{r}{n.patch}.weight"), read(f"{r}{n.patch}.bias"), stride=self.patch_stride)
        x = x.permute(0, 2, 3, 1)
        x = x + self._position(read, (x.shape[1], x.shape[2]))
        for i in range(self.depth):
            x = self._block(x, read, f"{r}{n.blocks}.{i}.", 0 if i in self.global_blocks else window[0])
        if n.neck is None:
            return x
        x = x.permute(0, 3, 1, 2)
        conv1, norm1, conv2, norm2 = (f"{r}{name}." for name in n.neck)
        x = _layer_norm_2d(F.conv2d(x, read(conv1 + "weight")), read, norm1)
        return _layer_norm_2d(F.conv2d(x, read(conv2 + "weight"), padding=1), read, norm2)

    def _position(self, read: Callable, grid: tuple[int, int]) -> torch.Tensor:
        """The embedding added to the ``grid`` of tokens: SAM's as it is, ViTDet's cls row dropped and its square
        grid resized bicubic when its side differs (detectron2's ``get_abs_pos``)."""
        import torch.nn.functional as F

        pos = read(self.position)
        if pos.ndim == 4:
            return pos
        side = int((pos.shape[1] - self.prefix_tokens) ** 0.5)
        pos = pos[:, self.prefix_tokens:].reshape(1, side, side, -1)
        if (side, side) == tuple(grid):
            return pos
        resized = F.interpolate(pos.permute(0, 3, 1, 2), size=tuple(grid), mode="bicubic", align_corners=False)
        return resized.permute(0, 2, 3, 1)

    def _block(self, x: torch.Tensor, read: Callable, at: str, window: int) -> torch.Tensor:
        import torch.nn.functional as F

        n = self.names
        shortcut = x
        x = F.layer_norm(x, x.shape[-1:], read(f"{at}{n.norm1}.weight"), read(f"{at}{n.norm1}.bias"), EPS)
        height, width = x.shape[1:3]
        if window:
            pad_h, pad_w = -height % window, -width % window
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
            b, hp, wp, c = x.shape
            x = x.view(b, hp // window, window, wp // window, window, c).permute(0, 1, 3, 2, 4, 5)
            x = self._attention(x.reshape(-1, window, window, c), read, at)
            x = x.view(b, hp // window, wp // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
            x = x.reshape(b, hp, wp, c)[:, :height, :width]
        else:
            x = self._attention(x, read, at)
        x = shortcut + x
        y = F.layer_norm(x, x.shape[-1:], read(f"{at}{n.norm2}.weight"), read(f"{at}{n.norm2}.bias"), EPS)
        y = F.linear(F.gelu(F.linear(y, read(f"{at}{n.fc1}.weight"), read(f"{at}{n.fc1}.bias"))),
                     read(f"{at}{n.fc2}.weight"), read(f"{at}{n.fc2}.bias"))
        return x + y

    def _attention(self, x: torch.Tensor, read: Callable, at: str) -> torch.Tensor:
        """Multi-head attention over each ``[h, w]`` map of ``x`` with decomposed relative positions (MViTv2)."""
        import torch
        import torch.nn.functional as F

        n = self.names
        b, h, w, _ = x.shape
        qkv = F.linear(x, read(f"{at}{n.qkv}.weight"), read(f"{at}{n.qkv}.bias"))
        qkv = qkv.reshape(b, h * w, 3, self.heads, -1).permute(2, 0, 3, 1, 4).reshape(3, b * self.heads, h * w, -1)
        q, k, v = qkv.unbind(0)
        head_dim = q.shape[-1]
        attn = (q * head_dim**-0.5) @ k.transpose(-2, -1)
        rel_h = _relative(h, read(f"{at}{n.rel_pos}h"))
        rel_w = _relative(w, read(f"{at}{n.rel_pos}w"))
        r_q = q.reshape(-1, h, w, head_dim)
        bias_h = torch.einsum("bhwc,hkc->bhwk", r_q, rel_h)
        bias_w = torch.einsum("bhwc,wkc->bhwk", r_q, rel_w)
        attn = (attn.view(-1, h, w, h, w) + bias_h[:, :, :, :, None] + bias_w[:, :, :, None, :]).view(-1, h * w, h * w)
        out = (attn.softmax(dim=-1) @ v).view(b, self.heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return F.linear(out, read(f"{at}{n.proj}.weight"), read(f"{at}{n.proj}.bias"))


def _relative(size: int, table: torch.Tensor) -> torch.Tensor:
    """``[size, size, D]``: the table's row for each query-key offset, the table resized linearly to ``2 * size - 1``
    rows first when it has another length (as ``get_rel_pos`` does at run time)."""
    import torch
    import torch.nn.functional as F

    rows = 2 * size - 1
    if table.shape[0] != rows:
        table = F.interpolate(table.T[None], size=rows, mode="linear")[0].T
    offsets = torch.arange(size)[:, None] - torch.arange(size)[None, :] + (size - 1)
    return table[offsets]


def _layer_norm_2d(x: torch.Tensor, read: Callable, at: str) -> torch.Tensor:
    """LayerNorm over the channels of an NCHW map (SAM's ``LayerNorm2d``)."""
    mean = x.mean(1, keepdim=True)
    var = (x - mean).pow(2).mean(1, keepdim=True)
    x = (x - mean) / (var + EPS).sqrt()
    return read(at + "weight")[:, None, None] * x + read(at + "bias")[:, None, None]

