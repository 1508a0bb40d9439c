"""Tiny upstream Hiera models with random weights and a planted window-periodic embedding, saved natively."""

from __future__ import annotations

import json
from pathlib import Path

import hiera
import timm
import torch
from safetensors.torch import save_file
from transformers import HieraConfig, HieraForImageClassification

from abswin_convert.synthetic import structured_grid

EMBED_DIM = 16
STAGES = (1, 1, 2, 1)
NUM_CLASSES = 5
TIMM_ARGS = {"embed_dim": EMBED_DIM, "num_heads": 1, "stages": STAGES, "num_classes": NUM_CLASSES}


def planted(channels: int = EMBED_DIM, seed: int = 0) -> torch.Tensor:
    """Flat ``[1, 3136, C]`` embedding: window pattern + smooth global + noise."""
    return torch.from_numpy(structured_grid((56, 56), channels, (8, 8), seed=seed)).reshape(1, 56 * 56, channels)


def official_model(input_size=(224, 224)) -> hiera.Hiera:
    torch.manual_seed(0)
    return hiera.Hiera(input_size=input_size, embed_dim=EMBED_DIM, num_heads=1, stages=STAGES, num_classes=NUM_CLASSES).eval()


def official_video_model(input_size=(16, 224, 224)) -> hiera.Hiera:
    torch.manual_seed(0)
    return hiera.Hiera(
        input_size=input_size, embed_dim=EMBED_DIM, num_heads=1, stages=STAGES, num_classes=NUM_CLASSES,
        q_pool=2, mask_unit_size=(1, 8, 8), patch_kernel=(3, 7, 7), patch_stride=(2, 4, 4), patch_padding=(1, 3, 3),
        sep_pos_embed=True,
    ).eval()


def timm_model(**size_args) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("hiera_tiny_224", pretrained=False, **TIMM_ARGS, **size_args).eval()


def hf_config(image_size=(224, 224)) -> HieraConfig:
    return HieraConfig(
        embed_dim=EMBED_DIM, num_heads=[1, 2, 4, 8], depths=list(STAGES), image_size=list(image_size), num_labels=NUM_CLASSES
    )


def hf_model(image_size=(224, 224)) -> HieraForImageClassification:
    torch.manual_seed(0)
    return HieraForImageClassification(hf_config(image_size)).eval()


def _save_official(model: hiera.Hiera, position: torch.nn.Parameter, path: Path) -> tuple[hiera.Hiera, Path]:
    with torch.no_grad():
        position.copy_(planted())
    torch.save({"model_state": model.state_dict()}, path)
    return model, path


def save_official(folder: Path) -> tuple[hiera.Hiera, Path]:
    model = official_model()
    return _save_official(model, model.pos_embed, folder / "hiera_official.pth")


def save_official_video(folder: Path) -> tuple[hiera.Hiera, Path]:
    model = official_video_model()
    return _save_official(model, model.pos_embed_spatial, folder / "hiera_video.pth")


def save_timm(folder: Path) -> tuple[torch.nn.Module, Path]:
    model = timm_model()
    with torch.no_grad():
        model.pos_embed.copy_(planted())
    path = folder / "hiera_timm.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return model, path


def save_transformers(folder: Path) -> tuple[HieraForImageClassification, Path]:
    model = hf_model()
    with torch.no_grad():
        model.hiera.embeddings.position_embeddings.copy_(planted())
    out = folder / "hiera_hf"
    model.save_pretrained(out)
    return model, out


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
