"""segment-anything: its ``Sam`` (image encoder, prompt encoder, mask decoder) built from a checkpoint's shapes.

``sam_model_registry`` knows three sizes at 1024 px only; here every size comes from the weights, so ViT-B/L/H,
other widths and depths, and outputs converted for another input size all build:

- image encoder: width, depth, patch and MLP sizes from the tensors; heads from the relative-position tables
  (``[2*S - 1, head_dim]``); the window and the global-attention blocks from the table lengths (windowed blocks hold
  the shortest); the input size from ``pos_embed [1, H/16, W/16, C]``;
- prompt encoder and mask decoder: widths and depths from their tensors.

What the shapes do not hold is segment-anything's builders' own choice in every release: 8 heads in the mask
decoder's transformer, LayerNorm eps 1e-6, GELU. Weights load with ``strict=True``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from ..errors import AbswinError
from ..families import relpos
from ..in_memory import IN_MEMORY
from ..io.checkpoint import Checkpoint
from ..io.torch_bridge import TorchTensor
from .strict import load_strict

ENCODER, PROMPT, DECODER = "image_encoder.", "prompt_encoder.", "mask_decoder."
DECODER_HEADS = 8  # every segment-anything release; head counts leave no trace in the shapes


@dataclass(frozen=True)
class EncoderShape:
    """The ``ImageEncoderViT`` arguments a checkpoint's shapes give."""

    img_size: int
    patch_size: int
    in_chans: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    out_chans: int
    qkv_bias: bool
    window_size: int
    global_attn_indexes: tuple[int, ...]

    @property
    def grid(self) -> int:
        """Tokens per side."""
        return self.img_size // self.patch_size


def encoder_shape(state: Mapping[str, torch.Tensor], img_size: int | None = None) -> EncoderShape:
    """The image encoder of ``state`` (names without ``image_encoder.``); ``img_size`` must be the size its
    ``pos_embed`` was made for, which is the default."""
    for key in ("pos_embed", "patch_embed.proj.weight", "neck.0.weight", "blocks.0.mlp.lin1.weight"):
        if key not in state:
            raise AbswinError(f"not a segment-anything image encoder: no {key}")
    embed_dim, in_chans, patch, _ = state["patch_embed.proj.weight"].shape
    _, grid_h, grid_w, _ = state["pos_embed"].shape
    if grid_h != grid_w:
        raise AbswinError(f"segment-anything takes square inputs; this pos_embed is a {grid_h}x{grid_w} grid")
    native = grid_h * patch
    if img_size is not None and img_size != native:
        raise AbswinError(
            f"the weights' position embedding is for {native} px ({grid_h}x{grid_w} tokens), not {img_size}; "
            f"run abswin-convert convert --img-size {img_size} first"
        )
    view = Checkpoint(IN_MEMORY, "torch", {key: TorchTensor(value) for key, value in state.items()})
    window = relpos.window_of(view)
    if window is None:
        raise AbswinError("this SAM image encoder has no relative-position tables: cannot tell its window size")
    head_dim = state["blocks.0.attn.rel_pos_h"].shape[1]
    return EncoderShape(
        img_size=native, patch_size=patch, in_chans=in_chans, embed_dim=embed_dim, depth=_count(state, r"blocks\.(\d+)\."),
        num_heads=embed_dim // head_dim, mlp_ratio=state["blocks.0.mlp.lin1.weight"].shape[0] / embed_dim,
        out_chans=state["neck.0.weight"].shape[0], qkv_bias="blocks.0.attn.qkv.bias" in state, window_size=window[0],
        global_attn_indexes=tuple(relpos.global_blocks(view)),
    )


def image_encoder(shape: EncoderShape) -> ImageEncoderViT:
    """segment-anything's ``ImageEncoderViT`` of that shape (random weights), as its builders make it."""
    return ImageEncoderViT(
        img_size=shape.img_size, patch_size=shape.patch_size, in_chans=shape.in_chans, embed_dim=shape.embed_dim,
        depth=shape.depth, num_heads=shape.num_heads, mlp_ratio=shape.mlp_ratio, out_chans=shape.out_chans,
        qkv_bias=shape.qkv_bias, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
        window_size=shape.window_size, global_attn_indexes=shape.global_attn_indexes,
    )


def build_image_encoder(state: Mapping[str, torch.Tensor], img_size: int | None = None) -> ImageEncoderViT:
    """An ``ImageEncoderViT`` holding ``state`` (names without ``image_encoder.``), loaded strictly, eval mode."""
    shape = encoder_shape(state, img_size)
    return load_strict(image_encoder(shape), state, f"segment-anything's ImageEncoderViT at {shape.img_size} px")


def build_sam(state: Mapping[str, torch.Tensor], img_size: int | None = None, *, decoder_heads: int = DECODER_HEADS) -> Sam:
    """A whole segment-anything ``Sam`` holding ``state`` (``image_encoder.*``, ``prompt_encoder.*``,
    ``mask_decoder.*``), loaded strictly, eval mode; ``img_size`` defaults to the one its ``pos_embed`` is for."""
    missing = [part for part in (ENCODER, PROMPT, DECODER) if not any(key.startswith(part) for key in state)]
    if missing:
        raise AbswinError(f"not a whole segment-anything model: no {', '.join(p.rstrip('.') for p in missing)} weights")
    shape = encoder_shape(_part(state, ENCODER), img_size)
    try:
        model = Sam(image_encoder(shape), *_prompt_and_decoder(state, shape, decoder_heads))
    except KeyError as exc:
        raise AbswinError(f"not a segment-anything model: no {exc.args[0]}") from exc
    return load_strict(model, state, f"segment-anything's Sam at {shape.img_size} px")


def _prompt_and_decoder(
    state: Mapping[str, torch.Tensor], shape: EncoderShape, decoder_heads: int
) -> tuple[PromptEncoder, MaskDecoder]:
    dim = state[DECODER + "iou_token.weight"].shape[1]
    if shape.out_chans != dim:
        raise AbswinError(f"the image encoder's neck gives {shape.out_chans} channels, the mask decoder takes {dim}")
    grid = shape.grid
    prompt = PromptEncoder(
        embed_dim=dim, image_embedding_size=(grid, grid), input_image_size=(shape.img_size, shape.img_size),
        mask_in_chans=state[PROMPT + "mask_downscaling.3.weight"].shape[0],
    )
    decoder_state = _part(state, DECODER)
    cross = decoder_state["transformer.layers.0.cross_attn_token_to_image.q_proj.weight"]
    transformer = TwoWayTransformer(
        depth=_count(decoder_state, r"transformer\.layers\.(\d+)\."), embedding_dim=dim,
        mlp_dim=decoder_state["transformer.layers.0.mlp.lin1.weight"].shape[0], num_heads=decoder_heads,
        attention_downsample_rate=dim // cross.shape[0],
    )
    decoder = MaskDecoder(
        transformer_dim=dim, transformer=transformer, num_multimask_outputs=decoder_state["mask_tokens.weight"].shape[0] - 1,
        iou_head_depth=_count(decoder_state, r"iou_prediction_head\.layers\.(\d+)\."),
        iou_head_hidden_dim=decoder_state["iou_prediction_head.layers.0.weight"].shape[0],
    )
    return prompt, decoder


def version() -> str:
    from importlib.metadata import version as installed

    return f"segment-anything {installed('segment-anything')}"


def _part(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    """How many numbered modules ``pattern`` (one group: the index) finds at the start of the names."""
    found = {int(m.group(1)) for key in state if (m := re.match(pattern, key))}
    return max(found) + 1 if found else 0
