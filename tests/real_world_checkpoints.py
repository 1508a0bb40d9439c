"""Checkpoints written the way training code writes them: timm's train.py, DeiT/MAE ``main_finetune``, detectron2's
``model_final.pth``, PyTorch Lightning, DDP, ``torch.compile``, OpenMMLab, a Git LFS pointer. The writers follow
each project's documented save format (the dict keys and key prefixes), filled with real timm models' weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import timm
import torch

from tests.random_weights import randomize

CIFAR = {"img_size": 32, "patch_size": 4, "embed_dim": 128, "depth": 2, "num_heads": 2, "num_classes": 10}


def cifar_vit(img_size: int = 32, seed: int | None = None, **kwargs) -> torch.nn.Module:
    """The shape of CIFAR-10 ViTs shared on GitHub: 32 px at patch 4 (an 8x8 grid), ``pos_embed [1, 65, 128]``."""
    model = timm.create_model("vit_base_patch16_224", pretrained=False, **{**CIFAR, "img_size": img_size, **kwargs}).eval()
    return randomize(model, seed) if seed is not None else model


def _optimizer_state(model: torch.nn.Module) -> dict:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 3, 32, 32)).sum().backward()
    optimizer.step()
    optimizer.zero_grad()
    return optimizer.state_dict()


def save_timm_train(path: Path, model: torch.nn.Module, ema: torch.nn.Module) -> Path:
    """timm's train.py (``CheckpointSaver._save``): weights under ``state_dict``, the EMA under
    ``state_dict_ema``, beside the optimizer, epoch, arch, args and the eval metric."""
    args = argparse.Namespace(model="vit_base_patch16_224", img_size=32, lr=1e-3, model_ema=True)
    torch.save({"epoch": 9, "arch": "vit_base_patch16_224", "state_dict": model.state_dict(),
                "optimizer": _optimizer_state(model), "version": 2, "args": args,
                "state_dict_ema": ema.state_dict(), "metric": 61.3}, path)
    return path


def save_deit(path: Path, model: torch.nn.Module, ema: torch.nn.Module) -> Path:
    """DeiT's ``main.py`` (and MAE's ``main_finetune``): ``model`` and ``model_ema`` beside the optimizer,
    scheduler, epoch, scaler and the argparse args."""
    args = argparse.Namespace(model="deit_tiny_patch16_224", input_size=32, model_ema=True)
    torch.save({"model": model.state_dict(), "optimizer": _optimizer_state(model), "lr_scheduler": {"last_epoch": 9},
                "epoch": 9, "model_ema": ema.state_dict(), "scaler": {"scale": 65536.0}, "args": args}, path)
    return path


def save_ddp(path: Path, model: torch.nn.Module) -> Path:
    """``torch.save(model.state_dict())`` of a ``DistributedDataParallel`` model: every key under ``module.``."""
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    return path


def save_compiled(path: Path, model: torch.nn.Module) -> Path:
    """The state dict of ``torch.compile(model)``: every key under ``_orig_mod.``."""
    torch.save(torch.compile(model).state_dict(), path)
    return path


def save_lightning(path: Path, model: torch.nn.Module) -> Path:
    """A Lightning ``.ckpt``: the LightningModule's state dict (its ``model`` attribute as prefix, plus a loss
    weight of its own) beside the hyper-parameters, loops and optimizer states."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["criterion.weight"] = torch.ones(10)
    torch.save({"epoch": 4, "global_step": 1250, "pytorch-lightning_version": "2.4.0", "state_dict": state,
                "loops": {"fit_loop": {"epoch_progress": {"total": {"completed": 4}}}}, "callbacks": {},
                "optimizer_states": [_optimizer_state(model)], "lr_schedulers": [],
                "hyper_parameters": {"lr": 1e-3, "img_size": 32, "arch": "vit"}}, path)
    return path


def save_detectron2_final(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """detectron2's ``model_final.pth`` (``DetectionCheckpointer.save``): ``{model, trainer, iteration}``."""
    torch.save({"model": state, "trainer": {"iteration": 89999, "hooks": {}}, "iteration": 89999}, path)
    return path


def mmpretrain_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """mmpretrain's ``VisionTransformer`` names for a timm ViT's weights: ``backbone.`` with
    ``patch_embed.projection``, ``layers.N.ln1/attn/ffn``, and the classifier under ``head.layers.head``."""
    renames = (("patch_embed.proj.", "patch_embed.projection."), ("blocks.", "layers."), (".norm1.", ".ln1."),
               (".norm2.", ".ln2."), (".mlp.fc1.", ".ffn.layers.0.0."), (".mlp.fc2.", ".ffn.layers.1."))
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("head."):
            state[f"head.layers.{key}"] = value
            continue
        for old, new in renames:
            key = key.replace(old, new)
        state[f"backbone.{'ln1.' + key[5:] if key.startswith('norm.') else key}"] = value
    return state


def save_mmpretrain(path: Path, model: torch.nn.Module) -> Path:
    """An mmpretrain checkpoint (``mmengine.runner.save_checkpoint``): ``{meta, state_dict}``."""
    meta = {"mmengine_version": "0.10.4", "epoch": 100, "iter": 125000, "dataset_meta": {"classes": [str(i) for i in range(10)]}}
    torch.save({"meta": meta, "state_dict": mmpretrain_state(model)}, path)
    return path


def write_lfs_pointer(path: Path, size: int = 343_245_678) -> Path:
    """What a clone without ``git lfs`` holds where the weights should be."""
    path.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{'ab' * 32}\nsize {size}\n")
    return path


def save_bin_shards(folder: Path, state: dict[str, torch.Tensor], per_shard: int) -> Path:
    """transformers' ``.bin`` shards: ``pytorch_model-0000k-of-0000n.bin`` (torch.save of part of the state dict)
    beside ``pytorch_model.bin.index.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(state)
    parts = [keys[i:i + per_shard] for i in range(0, len(keys), per_shard)]
    weight_map = {}
    for k, part in enumerate(parts, 1):
        name = f"pytorch_model-{k:05d}-of-{len(parts):05d}.bin"
        torch.save({key: state[key].contiguous() for key in part}, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return folder
