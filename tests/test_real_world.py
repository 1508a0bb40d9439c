"""Checkpoints as people have them (tests/real_world_checkpoints.py): each is detected, converted, loaded strictly
into its runtime at the new size, and exact at its own size; what cannot be exact is refused in one line that
names the flag. One small ViT is trained here on Fashion-MNIST, so that a real, learned embedding is checked."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file
from transformers import VitDetModel

from abswin_convert import convert, inspect
from abswin_convert.errors import AbswinError
from abswin_convert.evaluation.data import FASHION_MNIST_DIR, read_idx
from abswin_convert.evaluation.hooks import run_hook
from abswin_convert.families.overrides import Overrides
from abswin_convert.hub.model_card import model_card
from tests import real_world_checkpoints as rw
from tests.hooks_support import REAL, synthetic_images
from tests.random_weights import randomize
from tests.test_model_card import record

TILE = Overrides(recipe="tile")
X32 = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
X64 = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def tiled(pos: torch.Tensor, side: int) -> torch.Tensor:
    """The ViTDet recipe by hand: the pretrained grid repeated over a ``side`` grid, cls row first."""
    grid = pos[0, 1:].reshape(8, 8, -1).repeat(side // 8, side // 8, 1).reshape(1, side * side, -1)
    return torch.cat([pos[:, :1], grid], dim=1)


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


@pytest.fixture(scope="module")
def models():
    return rw.cifar_vit(seed=0), rw.cifar_vit(seed=1)  # the weights and their EMA


# --- 1. a plain global-attention ViT is never silently changed --------------------------------------------------


def test_a_cifar_vit_is_a_plain_vit_with_no_window_energy(models, tmp_path, cli):
    path = rw.save_ddp(tmp_path / "vit_cifar10.pth", models[0])
    result = cli("inspect", path)
    assert result.exit_code == 0, result.output
    assert "grid           8x8 tokens + 1 prefix, window 8x8, patch stride 4, native input 32x32" in result.stdout
    assert "window energy  undefined: the 8x8 window covers the whole grid (global attention)" in result.stdout
    report = inspect(path).to_json()
    assert report["window_energy"] is None and report["chance_share"] is None
    assert report["details"]["recipe"].startswith("none by default (plain global-attention ViT)")


@pytest.mark.parametrize("size", [32, 64])
def test_a_plain_vit_is_refused_at_any_size_without_the_recipe_flag(models, tmp_path, cli, size):
    path = rw.save_ddp(tmp_path / "vit_cifar10.pth", models[0])
    result = cli("convert", path, "-o", tmp_path / "out.safetensors", "--img-size", size, "--global-size", "full")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.strip() == (
        "abswin-convert: error: pos_embed belongs to a plain global-attention ViT (timm, 8x8 grid): it has no window "
        "pattern to protect, and its runtime's own interpolation is right for it; pass --recipe tile to tile the "
        "pretrained grid into the windows of a ViTDet backbone (README: Which recipe for a plain ViT?)"
    )
    assert not (tmp_path / "out.safetensors").exists()


def test_a_window_of_the_vitdet_default_is_larger_than_a_cifar_grid_and_refused(models, tmp_path, cli):
    path = rw.save_ddp(tmp_path / "vit_cifar10.pth", models[0])
    result = cli("convert", path, "-o", tmp_path / "out.safetensors", "--img-size", 64, "--window", 14)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "abswin-convert: error: window 14x14 is larger than the 8x8 token grid of vitdet (timm); pass --window 8x8 or smaller"
    )


# --- 2. EMA copies and training wrappers ----------------------------------------------------------------------------


def test_timm_train_checkpoint_converts_both_copies_and_loads_with_timms_own_loader(models, tmp_path):
    model, ema = models
    source = rw.save_timm_train(tmp_path / "model_best.pth.tar", model, ema)
    result = convert(source, tmp_path / "model_best_64.pth", 64, overrides=TILE)
    assert any("converted the same way: state_dict_ema" in n for n in result.notes)
    saved = torch.load(tmp_path / "model_best_64.pth", weights_only=False)
    assert (saved["epoch"], saved["arch"], saved["metric"]) == (9, "vit_base_patch16_224", 61.3)
    assert saved["args"].model == "vit_base_patch16_224"
    assert saved["optimizer"]["state"]  # the optimizer state is kept as it was
    for use_ema, original in ((True, ema), (False, model)):
        big = rw.cifar_vit(64)
        timm.models.load_checkpoint(big, str(tmp_path / "model_best_64.pth"), use_ema=use_ema, strict=True)
        assert torch.equal(big.pos_embed.detach(), tiled(original.pos_embed.detach(), 16))
    small = rw.cifar_vit(32)  # and at its own size each copy is exactly the model it was
    convert(source, tmp_path / "model_best_32.pth", 32, overrides=TILE)
    timm.models.load_checkpoint(small, str(tmp_path / "model_best_32.pth"), use_ema=True, strict=True)
    assert torch.equal(logits(small, X32), logits(ema, X32))


def test_a_safetensors_output_holds_the_ema_copy_by_default_and_says_so(models, tmp_path, cli):
    model, ema = models
    source = rw.save_deit(tmp_path / "checkpoint.pth", model, ema)
    assert inspect(source).to_json()["format"] == "deit"  # not MAE's main_finetune save, which has no EMA
    result = cli("convert", source, "-o", tmp_path / "ema.safetensors", "--img-size", 64, "--recipe", "tile")
    assert result.exit_code == 0, result.output
    assert "wrote the state dict 'model_ema' of 2 (not 'model'; --no-ema picks the other" in result.stdout
    assert torch.equal(load_file(tmp_path / "ema.safetensors")["pos_embed"], tiled(ema.pos_embed.detach(), 16))
    plain = cli("convert", source, "-o", tmp_path / "plain.safetensors", "--img-size", 64, "--recipe", "tile", "--no-ema")
    assert plain.exit_code == 0, plain.output
    weights = load_file(tmp_path / "plain.safetensors")
    assert torch.equal(weights["pos_embed"], tiled(model.pos_embed.detach(), 16))
    big = rw.cifar_vit(64)
    big.load_state_dict(weights, strict=True)
    assert json.loads(cli("convert", source, "-o", tmp_path / "p.safetensors", "--img-size", 64, "--recipe", "tile",
                          "--no-ema", "--json").stdout)["metadata"]["abswin.state_dict"] == "model"


def test_ema_asked_for_where_there_is_none_is_refused(models, tmp_path):
    source = rw.save_ddp(tmp_path / "plain.pth", models[0])
    with pytest.raises(AbswinError, match="--ema asked for an EMA copy, but it holds none"):
        convert(source, tmp_path / "out.safetensors", 64, overrides=TILE, ema=True)
    assert not (tmp_path / "out.safetensors").exists()


# --- 3. prefixes: DDP, torch.compile, Lightning, OpenMMLab -------------------------------------------------------


@pytest.mark.parametrize(("writer", "prefix"), [(rw.save_ddp, "module."), (rw.save_compiled, "_orig_mod.")])
def test_ddp_and_compiled_state_dicts_keep_their_prefix_and_are_exact_at_32(models, tmp_path, writer, prefix):
    model = models[0]
    source = writer(tmp_path / "vit.pth", model)
    convert(source, tmp_path / "same.pth", 32, overrides=TILE)
    convert(source, tmp_path / "big.pth", 64, overrides=TILE)
    same, big = torch.load(tmp_path / "same.pth"), torch.load(tmp_path / "big.pth")
    assert set(same) == set(big) == set(torch.load(source))  # the user's own names, prefix included
    small = rw.cifar_vit(32)
    small.load_state_dict({k[len(prefix):]: v for k, v in same.items()}, strict=True)
    assert torch.equal(logits(small, X32), logits(model, X32))
    large = rw.cifar_vit(64)
    large.load_state_dict({k[len(prefix):]: v for k, v in big.items()}, strict=True)
    assert torch.isfinite(logits(large, X64)).all()


def test_a_truly_nested_state_dict_is_found_and_put_back_where_it_sat(models, tmp_path):
    """``{'model': {'module': {...}}}`` (a wrapped DDP module saved as a dict of dicts), with an EMA copy nested the
    same way: both found, both converted, everything put back in place; at its own size the EMA copy is exact."""
    model, ema = models
    source = tmp_path / "nested.pth"
    torch.save({"model": {"module": model.state_dict()}, "model_ema": {"module": ema.state_dict()}, "epoch": 5}, source)
    report = inspect(source).to_json()
    assert report["wrapper"] == "model.module" and report["tensors"] == len(model.state_dict())
    result = convert(source, tmp_path / "big.pth", 64, overrides=TILE)
    assert any("converted the same way: model_ema" in n for n in result.notes)
    saved = torch.load(tmp_path / "big.pth", weights_only=True)
    assert saved["epoch"] == 5 and set(saved) == {"model", "model_ema", "epoch"}
    for key, original in (("model", model), ("model_ema", ema)):
        big = rw.cifar_vit(64)
        big.load_state_dict(saved[key]["module"], strict=True)
        assert torch.equal(big.pos_embed.detach(), tiled(original.pos_embed.detach(), 16))
    convert(source, tmp_path / "same.safetensors", 32, overrides=TILE)  # a safetensors output: the EMA copy
    small = rw.cifar_vit(32)
    small.load_state_dict(load_file(tmp_path / "same.safetensors"), strict=True)
    assert torch.equal(logits(small, X32), logits(ema, X32))


def test_lightning_ckpt_keeps_its_wrapper_and_its_own_tensors(models, tmp_path):
    model = models[0]
    source = rw.save_lightning(tmp_path / "epoch=4-step=1250.ckpt", model)
    assert inspect(source).to_json()["details"]["recipe"].startswith("none by default")
    convert(source, tmp_path / "out.pth", 64, overrides=TILE)
    saved = torch.load(tmp_path / "out.pth", weights_only=True)
    assert saved["hyper_parameters"] == {"lr": 1e-3, "img_size": 32, "arch": "vit"} and saved["global_step"] == 1250
    state = saved["state_dict"]
    assert torch.equal(state.pop("criterion.weight"), torch.ones(10))  # not the model's: kept under its own name
    big = rw.cifar_vit(64)
    big.load_state_dict({k.removeprefix("model."): v for k, v in state.items()}, strict=True)
    assert torch.equal(big.pos_embed.detach(), tiled(model.pos_embed.detach(), 16))


def test_mmpretrain_vit_is_a_plain_vit_and_tiles_on_request(models, tmp_path, cli):
    model = models[0]
    source = rw.save_mmpretrain(tmp_path / "vit-tiny_cifar10.pth", model)
    report = inspect(source).to_json()
    assert (report["family"], report["format"], report["position_key"]) == ("vitdet", "mmpretrain", "pos_embed")
    refused = cli("convert", source, "-o", tmp_path / "x.pth", "--img-size", 32)
    assert refused.exit_code == 2 and "plain global-attention ViT (mmpretrain, 8x8 grid)" in refused.stderr
    convert(source, tmp_path / "same.pth", 32, overrides=TILE)
    convert(source, tmp_path / "big.pth", 64, overrides=TILE)
    same, big = torch.load(tmp_path / "same.pth")["state_dict"], torch.load(tmp_path / "big.pth")["state_dict"]
    original = rw.mmpretrain_state(model)
    assert all(torch.equal(same[k], v) for k, v in original.items()) and set(same) == set(original)
    assert torch.equal(big["backbone.pos_embed"], tiled(model.pos_embed.detach(), 16))
    assert torch.load(tmp_path / "big.pth")["meta"]["epoch"] == 100
    notes = convert(source, tmp_path / "n.pth", 64, overrides=TILE).notes
    assert "mmpretrain: set img_size=64 on the VisionTransformer backbone (model.backbone.img_size in the config)" in notes


def test_detectron2_model_final_is_windowed_and_unchanged_at_its_own_size(tmp_path):
    """Finetuned at 1024 (its global tables span 64 tokens) over a 14x14 grid that get_abs_pos interpolates."""
    from tests.test_vitdet import detectron2_state, get_abs_pos

    state = detectron2_state()
    source = rw.save_detectron2_final(tmp_path / "model_final.pth", state)
    report = inspect(source).to_json()
    assert (report["format"], report["window"], report["grid"]) == ("detectron2", "14x14", "14x14")
    result = convert(source, tmp_path / "same.pth", 1024)
    assert any("runs at 1024 px, interpolating the 14x14 grid: kept" in n for n in result.notes)
    saved = torch.load(tmp_path / "same.pth", weights_only=True)
    assert saved["iteration"] == 89999 and saved["trainer"] == {"iteration": 89999, "hooks": {}}
    out, pos = saved["model"].pop("backbone.net.pos_embed"), state["backbone.net.pos_embed"]
    assert torch.allclose(get_abs_pos(out, True, (64, 64)), get_abs_pos(pos, True, (64, 64)), atol=1e-6)
    assert all(torch.equal(saved["model"][k], v) for k, v in state.items() if k != "backbone.net.pos_embed")


# --- 4. Git LFS pointers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin", "model_final.pkl"])
def test_a_git_lfs_pointer_says_what_to_fetch(tmp_path, cli, name):
    path = rw.write_lfs_pointer(tmp_path / name)
    result = cli("convert", path, "-o", tmp_path / "out.safetensors", "--img-size", 64)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"abswin-convert: error: {path}: this is a Git LFS pointer, not the weights of 343,245,678 bytes; fetch the "
        f"real file (git lfs pull --include '{name}', or download it from the Hub)"
    )
    assert not (tmp_path / "out.safetensors").exists()


# --- 5. verify never says ok when it checked nothing ----------------------------------------------------------------


def test_verify_without_anything_to_check_is_not_verified(models, tmp_path):
    source = rw.save_ddp(tmp_path / "vit.pth", models[0])
    convert(source, tmp_path / "out.safetensors", 64, overrides=TILE)
    source.unlink()  # the runtime loads the output, but nothing says what its position tensors should be
    metrics = run_hook("verify", tmp_path / "out.safetensors", {"img_size": 64})
    assert (metrics["ok"], metrics["verified"], metrics["verdict"]) == (False, False, "not verified")
    assert metrics["checks"]["strict load"]["status"] == "ok"
    assert metrics["problems"] == ["position tensors: not verified: the source (vit.pth) is not here; pass --source PATH "
                                   "to recompute the conversion from it"]
    card = model_card(record({"family": "vitdet"}), {"verify": metrics})
    assert "**Not verified**: verify could not check this output." in card


# --- 6. a ViT trained here on Fashion-MNIST ---------------------------------------------------------------------------


def fashion_mnist(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` training images, or synthetic ones where the data set is not installed."""
    if REAL:
        images = read_idx(FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz")[:count]
        labels = read_idx(FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz")[:count]
    else:
        images, labels = synthetic_images(count, seed=0)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32) / 255.0).unsqueeze(1)
    return (x - 0.2860) / 0.3530, torch.from_numpy(labels.astype(np.int64))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 28 px ViT (patch 4, a 7x7 grid) trained for 200 steps, saved as timm's train.py saves, with its EMA."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    kwargs = {"img_size": 28, "patch_size": 4, "in_chans": 1, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 10}
    model = timm.create_model("vit_base_patch16_224", pretrained=False, **kwargs)
    ema = timm.utils.ModelEmaV3(model, decay=0.99)
    x, y = fashion_mnist(3200)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(200):
        batch = slice((step * 64) % 3136, (step * 64) % 3136 + 64)
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(model)
    torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("trained") / "last.pth.tar"
    torch.save({"epoch": 1, "arch": "vit", "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                "state_dict_ema": ema.module.state_dict()}, path)
    return path, model.eval(), kwargs, (x[3136:], y[3136:])


def test_a_vit_trained_on_fashion_mnist_is_unchanged_at_its_own_size(trained, tmp_path, cli):
    path, model, kwargs, (held_out, labels) = trained
    with torch.no_grad():
        accuracy = (model(held_out).argmax(-1) == labels).float().mean()
    assert accuracy > 0.5  # it learned something: its embedding is a trained one, not an initialisation
    refused = cli("convert", path, "-o", tmp_path / "x.pth", "--img-size", 28)
    assert refused.exit_code == 2 and "plain global-attention ViT (timm, 7x7 grid)" in refused.stderr
    assert cli("convert", path, "-o", tmp_path / "same.pth", "--img-size", 28, "--recipe", "tile").exit_code == 0
    rebuilt = timm.create_model("vit_base_patch16_224", pretrained=False, **kwargs).eval()
    timm.models.load_checkpoint(rebuilt, str(tmp_path / "same.pth"), use_ema=False, strict=True)
    with torch.no_grad():
        assert torch.equal(rebuilt(held_out), model(held_out))


# --- 7. shards in, shards out ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """A transformers VitDet saved in shards, as save_pretrained writes large models."""
    from tests.test_vitdet import vitdet_config

    root = tmp_path_factory.mktemp("sharded")
    model = randomize(VitDetModel(vitdet_config()), seed=3).eval()
    model.save_pretrained(root / "hf", max_shard_size="40KB")
    return root / "hf", model


def test_safetensors_shards_are_read_as_one_and_written_with_the_same_boundaries(sharded, tmp_path, cli):
    folder, model = sharded
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(index.values())) > 2
    assert inspect(folder).to_json()["format"] == "transformers"
    result = cli("convert", folder, "-o", tmp_path / "same", "--img-size", 224)
    assert result.exit_code == 0, result.output
    out_index = json.loads((tmp_path / "same" / "model.safetensors.index.json").read_text())["weight_map"]
    assert out_index == index  # the same tensors in the same shards
    same = VitDetModel.from_pretrained(tmp_path / "same").eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(same(x).last_hidden_state, model(x).last_hidden_state)
    assert cli("convert", folder, "-o", tmp_path / "big", "--img-size", 448).exit_code == 0
    big, info = VitDetModel.from_pretrained(tmp_path / "big", output_loading_info=True)
    assert all(not v for v in info.values()), info
    assert big.embeddings.position_embeddings.shape == (1, 1 + 28 * 28, 32)


def test_bin_shards_become_safetensors_shards(sharded, tmp_path):
    folder, model = sharded
    rw.save_bin_shards(tmp_path / "bin", model.state_dict(), per_shard=10)
    (tmp_path / "bin" / "config.json").write_text((folder / "config.json").read_text())
    convert(tmp_path / "bin", tmp_path / "out", 448)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    shards = -(-len(model.state_dict()) // 10)
    assert names == ["config.json", *(f"model-{k:05d}-of-{shards:05d}.safetensors" for k in range(1, shards + 1)),
                     "model.safetensors.index.json"]
    _, info = VitDetModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert all(not v for v in info.values()), info


def test_an_index_that_disagrees_with_its_shards_is_refused(sharded, tmp_path, cli):
    folder, _ = sharded
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    index = json.loads((copy / "model.safetensors.index.json").read_text())
    key = next(iter(index["weight_map"]))
    shards = sorted(set(index["weight_map"].values()))
    index["weight_map"][key] = shards[1] if index["weight_map"][key] == shards[0] else shards[0]
    (copy / "model.safetensors.index.json").write_text(json.dumps(index))
    result = cli("convert", copy, "-o", tmp_path / "out", "--img-size", 448)
    assert result.exit_code == 2 and f"the index and the shards disagree about {key!r}" in result.stderr
    (copy / index["weight_map"][key]).unlink()
    missing = cli("convert", copy, "-o", tmp_path / "out", "--img-size", 448)
    assert missing.exit_code == 2 and "is missing; download every file the index names" in missing.stderr
    assert not (tmp_path / "out").exists()


def test_a_second_state_dict_of_another_model_is_refused_not_left_behind(models, tmp_path):
    source = tmp_path / "gan.pth"
    torch.save({"model": models[0].state_dict(), "discriminator": {"fc.weight": torch.ones(2, 2)}}, source)
    with pytest.raises(AbswinError, match="'discriminator' holds a second state dict that is not a vitdet model"):
        convert(source, tmp_path / "out.pth", 64, overrides=TILE)
    assert not (tmp_path / "out.pth").exists()


def test_mmdet_vitdet_is_windowed_and_keeps_its_interpolation_at_its_own_size(tmp_path):
    """mmdet's ViTDet: OpenMMLab's names (``backbone.``, ``patch_embed.projection``) with windowed blocks."""
    from tests.test_vitdet import detectron2_state, get_abs_pos

    state = {k.replace("backbone.net.", "backbone.").replace("patch_embed.proj.", "patch_embed.projection."): v
             for k, v in detectron2_state().items()}
    source = tmp_path / "vitdet_mask-rcnn_vit-b-mae_lsj-100e.pth"
    torch.save({"meta": {"mmengine_version": "0.10.4", "iter": 184375}, "state_dict": state}, source)
    report = inspect(source).to_json()
    assert (report["format"], report["window"], report["details"]["global_blocks"]) == ("mmdet", "14x14", "[1]")
    result = convert(source, tmp_path / "same.pth", 1024)
    assert "mmdet: set pretrain_img_size=1024 on the ViT backbone, so get_abs_pos does not interpolate" in result.notes
    out = torch.load(tmp_path / "same.pth", weights_only=True)["state_dict"]
    pos = state["backbone.pos_embed"]
    assert torch.allclose(get_abs_pos(out["backbone.pos_embed"], True, (64, 64)), get_abs_pos(pos, True, (64, 64)), atol=1e-6)
    assert all(torch.equal(out[k], v) for k, v in state.items() if k != "backbone.pos_embed")


def test_a_sharded_hub_repo_is_fetched_whole_and_read_as_one_checkpoint(sharded, local_hub, tmp_path, cli):
    folder, model = sharded
    local_hub.upload_folder("test-org/vitdet-sharded", folder)
    result = cli("convert", "test-org/vitdet-sharded", "-o", tmp_path / "out", "--img-size", 448)
    assert result.exit_code == 0, result.output
    out_index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())["weight_map"]
    assert sorted(out_index) == sorted(model.state_dict())
    big, info = VitDetModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert all(not v for v in info.values()), info
    assert big.embeddings.position_embeddings.shape == (1, 1 + 28 * 28, 32)
