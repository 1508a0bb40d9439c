"""ViTDet and the plain ViTs it starts from (detectron2 .pkl / .pth, transformers VitDet, MAE, timm vit_*):
the paper's recipe (pretrained grid tiled into every window), checked against the real runtimes where they
install and against detectron2's documented get_abs_pos where they do not."""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import VitDetConfig, VitDetModel

from abswin_convert import convert, inspect
from abswin_convert.errors import AbswinError
from abswin_convert.families.overrides import Overrides
from tests.hiera_models import save_official
from tests.random_weights import randomize

DIM, HEADS = 32, 2
TILE = Overrides(recipe="tile")  # a plain ViT gets the ViTDet recipe only when asked for


def vit(img_size: int | tuple[int, int] = 224, **kwargs) -> torch.nn.Module:
    """timm's ViT-B/16 shape with tiny dims (MAE's models_vit is this class)."""
    return timm.create_model("vit_base_patch16_224", pretrained=False, img_size=img_size, embed_dim=DIM, depth=2,
                             num_heads=HEADS, num_classes=10, **kwargs).eval()


def vitdet_config(img_size: int = 224, pretrain: int = 224) -> VitDetConfig:
    return VitDetConfig(hidden_size=DIM, num_hidden_layers=2, num_attention_heads=HEADS, window_block_indices=[0], window_size=14,
                        use_relative_position_embeddings=True, image_size=img_size, pretrain_image_size=pretrain)


def get_abs_pos(abs_pos: torch.Tensor, has_cls_token: bool, hw: tuple[int, int], tiling: bool = False) -> torch.Tensor:
    """detectron2's get_abs_pos as documented (SAM 3 adds ``tiling``): drop the cls row; if the square grid's side
    differs from ``hw``, resize it (bicubic, align_corners=False), or with ``tiling`` repeat ceil(h/s) x ceil(w/s)
    copies and crop to ``[:h, :w]``. Returns ``[1, h, w, C]``."""
    h, w = hw
    if has_cls_token:
        abs_pos = abs_pos[:, 1:]
    size = int(math.sqrt(abs_pos.shape[1]))
    assert size * size == abs_pos.shape[1]
    grid = abs_pos.reshape(1, size, size, -1)
    if size == h and size == w:
        return grid
    if tiling:
        return grid.tile(1, -(-h // size), -(-w // size), 1)[:, :h, :w]
    nchw = F.interpolate(grid.permute(0, 3, 1, 2), size=(h, w), mode="bicubic", align_corners=False)
    return nchw.permute(0, 2, 3, 1)


def detectron2_state(global_grid: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """A detectron2 ViTDet state dict: detectron2's ViT is timm's ViT layout under ``backbone.net.`` plus relative
    tables (14 in windowed block 0, the 1024 px grid in global block 1), no cls token parameter; plus heads."""
    encoder = randomize(vit(), seed).state_dict()
    state = {f"backbone.net.{k}": v for k, v in encoder.items() if k.startswith(("pos_embed", "patch_embed", "blocks"))}
    gen = torch.Generator().manual_seed(seed + 1)
    for block, side in ((0, 14), (1, global_grid)):
        for axis in "hw":
            state[f"backbone.net.blocks.{block}.attn.rel_pos_{axis}"] = torch.randn(2 * side - 1, DIM // HEADS, generator=gen)
    state["backbone.simfp_4.0.weight"] = torch.randn(16, DIM, 1, 1, generator=gen)
    state["roi_heads.box_predictor.cls_score.weight"] = torch.randn(81, 16, generator=gen)
    return state


def save_detectron2_pkl(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """The model zoo's ``model_final_*.pkl``: a plain pickle of numpy arrays."""
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "FAIR", "matching_heuristics": True}, f)
    return path


def save_mae(path: Path, model: torch.nn.Module) -> Path:
    """A MAE training save: the weights under 'model' beside optimizer state, epoch and the argparse args."""
    optimizer = torch.optim.AdamW(model.parameters())
    args = argparse.Namespace(model="vit_base_patch16", input_size=224, blr=1e-3, output_dir="./output_dir")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 99, "scaler": {"scale": 65536.0},
                "args": args}, path)
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Every format saved natively once: name -> (path, original model or state)."""
    root = tmp_path_factory.mktemp("vitdet")
    state = detectron2_state()
    timm_vit = randomize(vit(), seed=2)
    mae_vit = randomize(vit(global_pool="avg"), seed=3)  # MAE's finetuned ViT pools, with fc_norm
    hf = randomize(VitDetModel(vitdet_config()), seed=4)
    hf.save_pretrained(root / "vitdet-hf")
    save_file(timm_vit.state_dict(), str(root / "vit.safetensors"))
    return {
        "detectron2-pkl": (save_detectron2_pkl(root / "model_final_61ccd1.pkl", state), state),
        "detectron2-pth": (
            _torch_save(root / "model_0089999.pth", {"model": state, "iteration": 89999, "scheduler": {"last_epoch": 3}}),
            state,
        ),
        "mae": (save_mae(root / "checkpoint-99.pth", mae_vit), mae_vit),
        "timm": (root / "vit.safetensors", timm_vit),
        "transformers": (root / "vitdet-hf", hf),
    }


def _torch_save(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


@pytest.mark.parametrize(("name", "fmt", "key", "container"), [
    ("detectron2-pkl", "detectron2", "backbone.net.pos_embed", "pickle"),
    ("detectron2-pth", "detectron2", "backbone.net.pos_embed", "torch"),
    ("mae", "mae", "pos_embed", "torch"),
    ("timm", "timm", "pos_embed", "safetensors"),
    ("transformers", "transformers", "embeddings.position_embeddings", "safetensors"),
])
def test_inspect_recognises_each_format(sources, cli, name, fmt, key, container):
    result = cli("inspect", sources[name][0], "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["family"], report["format"], report["container"]) == ("vitdet", fmt, container)
    assert (report["position_key"], report["position_shape"]) == (key, [1, 197, DIM])
    assert (report["layout"], report["grid"], report["prefix_tokens"], report["window"]) == ("flat_cls", "14x14", 1, "14x14")
    assert (report["patch_stride"], report["native_input"]) == (16, "224x224")
    if name.startswith("detectron2") or name == "transformers":
        assert report["details"]["global_blocks"] == "[1]"


@pytest.mark.parametrize("name", ["detectron2-pkl", "detectron2-pth"])
def test_detectron2_gets_a_1024_grid_that_get_abs_pos_takes_as_is(sources, cli, tmp_path, name):
    path, state = sources[name]
    result = cli("convert", path, "-o", tmp_path / "out.safetensors", "--img-size", 1024, "--recipe", "tile", "--json")
    assert result.exit_code == 0, result.output
    out = load_file(tmp_path / "out.safetensors")
    source_pos = state["backbone.net.pos_embed"]
    assert out["backbone.net.pos_embed"].shape == (1, 1 + 64 * 64, DIM)
    assert torch.equal(out["backbone.net.pos_embed"][0, 0], source_pos[0, 0])  # the cls row, kept first
    as_is = get_abs_pos(out["backbone.net.pos_embed"], True, (64, 64))
    assert torch.equal(as_is, get_abs_pos(source_pos, True, (64, 64), tiling=True))
    assert (as_is - get_abs_pos(source_pos, True, (64, 64))).norm() > 0.3 * as_is.norm()  # not the interpolation
    for key, value in state.items():  # everything else passes through; 127-row tables already fit 1024
        if key != "backbone.net.pos_embed":
            assert torch.equal(out[key], value), key
    notes = " ".join(json.loads(result.stdout)["notes"])
    assert "pretrain_img_size=1024" in notes and "img_size=1024" not in notes.replace("pretrain_img_size=1024", "")


def test_detectron2_at_another_size_resizes_the_global_tables(sources, tmp_path):
    path, state = sources["detectron2-pkl"]
    result = convert(path, tmp_path / "out.pth", 768, fmt="pt")
    saved = torch.load(tmp_path / "out.pth", weights_only=True)
    assert saved["__author__"] == "FAIR"  # the wrapper's other entries stay
    out = saved["model"]
    assert out["backbone.net.pos_embed"].shape == (1, 1 + 48 * 48, DIM)
    assert out["backbone.net.blocks.1.attn.rel_pos_h"].shape[0] == 95
    assert torch.equal(out["backbone.net.blocks.0.attn.rel_pos_h"], state["backbone.net.blocks.0.attn.rel_pos_h"])
    # get_rel_pos's resize, computed in float64 and rounded once (torch's float32 kernel is off by up to 1e-5)
    table = state["backbone.net.blocks.1.attn.rel_pos_w"].double()
    rows = F.interpolate(table.T[None], size=95, mode="linear", align_corners=False)[0].T.float()
    assert torch.equal(out["backbone.net.blocks.1.attn.rel_pos_w"], rows)
    assert any("pretrain_img_size=768 and img_size=768" in n for n in result.notes)


def test_detectron2_global_size_of_the_pretrained_grid_keeps_what_get_abs_pos_computed(sources, tmp_path):
    """A finetuned ViTDet ran with get_abs_pos's interpolation: a global part of the full 14x14 grid (and no window
    part) bakes exactly that, so pretrain_img_size=1024 with this file is the original model."""
    path, state = sources["detectron2-pkl"]
    result = convert(path, tmp_path / "out.safetensors", 1024, global_size="14x14")
    out = load_file(tmp_path / "out.safetensors")["backbone.net.pos_embed"]
    source_pos = state["backbone.net.pos_embed"]
    assert torch.allclose(get_abs_pos(out, True, (64, 64)), get_abs_pos(source_pos, True, (64, 64)), atol=1e-6)
    assert not any("finetuned ViTDet" in n for n in result.notes)
    default = convert(path, tmp_path / "t.safetensors", 1024)  # its 127-row global tables: it runs at 1024
    assert any("runs at 1024 px, interpolating the 14x14 grid: kept (pass --recipe tile" in n for n in default.notes)
    assert torch.equal(load_file(tmp_path / "t.safetensors")["backbone.net.pos_embed"], out)


def test_transformers_vitdet_at_1024_is_unchanged_with_the_full_global_part(sources, cli, tmp_path):
    """transformers' VitDet at image_size 1024 interpolates its 224 embedding on every pass; the converted model
    (pretrain_image_size 1024, --global-size 14x14) computes the same without interpolating."""
    folder = tmp_path / "src"
    original = randomize(VitDetModel(vitdet_config(img_size=1024)), seed=7)
    original.save_pretrained(folder)
    assert cli("convert", folder, "-o", tmp_path / "out", "--img-size", 1024, "--global-size", "14x14").exit_code == 0
    model, info = VitDetModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert all(not v for v in info.values()), info
    assert model.config.pretrain_image_size == 1024
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = original(x).last_hidden_state
        got = model.eval()(x).last_hidden_state
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize("name", ["timm", "mae"])
def test_plain_vits_load_strict_at_1024_with_the_tiled_grid(sources, cli, tmp_path, name):
    path, original = sources[name]
    result = cli("convert", path, "-o", tmp_path / "out.safetensors", "--img-size", 1024, "--recipe", "tile")
    assert result.exit_code == 0, result.output
    pooling = {"global_pool": "avg"} if name == "mae" else {}
    model = vit(1024, **pooling)
    model.load_state_dict(load_file(tmp_path / "out.safetensors"), strict=True)
    expected = get_abs_pos(original.pos_embed.detach(), True, (64, 64), tiling=True)
    assert torch.equal(model.pos_embed[:, 1:].detach().reshape(1, 64, 64, DIM), expected)
    assert torch.equal(model.pos_embed[0, 0], original.pos_embed[0, 0])
    assert "img_size=1024" in result.stdout


@pytest.mark.parametrize("name", ["timm", "mae", "transformers"])
def test_native_size_changes_nothing(sources, cli, tmp_path, name):
    path, original = sources[name]
    recipe = () if name == "transformers" else ("--recipe", "tile")
    assert cli("convert", path, "-o", tmp_path / "out", "--img-size", 224, *recipe).exit_code == 0
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if name == "transformers":
            model, info = VitDetModel.from_pretrained(tmp_path / "out", output_loading_info=True)
            assert all(not v for v in info.values()), info
            got, expected = model.eval()(x).last_hidden_state, original(x).last_hidden_state
        else:
            model = vit(224, **({"global_pool": "avg"} if name == "mae" else {}))
            model.load_state_dict(load_file(tmp_path / "out" / "model.safetensors"), strict=True)
            got, expected = model(x), original(x)
    assert torch.equal(got, expected)


def test_transformers_vitdet_gets_config_and_tables_for_1024(sources, cli, tmp_path):
    path, original = sources["transformers"]
    result = cli("convert", path, "-o", tmp_path / "out", "--img-size", 1024)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["pretrain_image_size"], config["image_size"]) == (1024, 1024)
    model, info = VitDetModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert all(not v for v in info.values()), info
    pos = model.embeddings.position_embeddings.detach()
    assert pos.shape == (1, 1 + 64 * 64, DIM)
    source_pos = original.embeddings.position_embeddings.detach()
    as_is = model.embeddings.get_absolute_positions(pos, True, 64, 64)  # transformers' own: no interpolation
    assert torch.equal(as_is, get_abs_pos(source_pos, True, (64, 64), tiling=True))
    assert model.encoder.layer[1].attention.rel_pos_h.shape[0] == 127  # global block: 27 -> 127
    assert model.encoder.layer[0].attention.rel_pos_h.shape[0] == 27  # windowed block: unchanged
    assert "pretrain_image_size=1024" in result.stdout


def test_transformers_vitdet_tables_match_its_own_get_rel_pos(sources, cli, tmp_path):
    """At 512 the converted global tables compute what transformers computes from the 224 tables on the fly."""
    path, original = sources["transformers"]
    assert cli("convert", path, "-o", tmp_path / "out", "--img-size", 512).exit_code == 0
    converted = VitDetModel.from_pretrained(tmp_path / "out").eval()
    runtime = VitDetModel.from_pretrained(tmp_path / "out").eval()
    attention = runtime.encoder.layer[1].attention
    attention.rel_pos_h = torch.nn.Parameter(original.encoder.layer[1].attention.rel_pos_h.detach().clone())
    attention.rel_pos_w = torch.nn.Parameter(original.encoder.layer[1].attention.rel_pos_w.detach().clone())
    assert attention.rel_pos_h.shape[0] == 27 and converted.encoder.layer[1].attention.rel_pos_h.shape[0] == 63
    x = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = runtime(x).last_hidden_state
        got = converted(x).last_hidden_state
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_global_size_keeps_the_pretrained_grid_at_224_and_stretches_its_smooth_part(sources, tmp_path):
    path, original = sources["timm"]
    grid = original.pos_embed.detach()[0, 1:].reshape(14, 14, DIM)
    convert(path, tmp_path / "same.safetensors", 224, global_size="7x7", overrides=TILE)
    assert torch.allclose(load_file(tmp_path / "same.safetensors")["pos_embed"], original.pos_embed.detach(), atol=1e-6)
    result = convert(path, tmp_path / "big.safetensors", 448, global_size="7x7", overrides=TILE)
    # the least-squares 7x7 grid, solved independently through the 2-D operator of one-hot images
    basis = torch.eye(49).reshape(49, 1, 7, 7)
    operator = F.interpolate(basis, size=(14, 14), mode="bicubic", align_corners=False).reshape(49, 196).T
    small = torch.linalg.lstsq(operator.double(), grid.reshape(196, DIM).double()).solution.float().reshape(1, 7, 7, DIM)
    smooth = F.interpolate(small.permute(0, 3, 1, 2), size=(14, 14), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
    stretched = F.interpolate(small.permute(0, 3, 1, 2), size=(28, 28), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
    expected = stretched + (grid - smooth).repeat(2, 2, 1)
    got = load_file(tmp_path / "big.safetensors")["pos_embed"][0, 1:].reshape(28, 28, DIM)
    assert (got - expected).abs().max() <= 1e-4
    assert result.metadata["abswin.global_size"] == "7x7" and float(result.metadata["abswin.residual"]) < 1e-5


def test_a_window_other_than_the_pretrained_grid_resizes_it(sources, cli, tmp_path):
    path, original = sources["timm"]
    report = json.loads(cli("inspect", path, "--window", 7, "--json").stdout)
    assert report["window"] == "7x7"
    assert cli("convert", path, "-o", tmp_path / "out.safetensors", "--img-size", 448, "--window", 7).exit_code == 0
    grid = original.pos_embed.detach()[0, 1:].reshape(1, 14, 14, DIM).permute(0, 3, 1, 2)
    window = F.interpolate(grid, size=(7, 7), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
    got = load_file(tmp_path / "out.safetensors")["pos_embed"][0, 1:].reshape(28, 28, DIM)
    assert torch.allclose(got, window.repeat(4, 4, 1), atol=1e-6)


def test_a_window_larger_than_the_grid_is_refused(sources, cli, tmp_path):
    """A 16x16 window on a 14x14 grid cannot be the identity at the model's own size."""
    result = cli("convert", sources["timm"][0], "-o", tmp_path / "out.safetensors", "--img-size", 512, "--window", 16)
    assert result.exit_code == 2, result.output
    assert "window 16x16 is larger than the 14x14 token grid of vitdet (timm); pass --window 14x14 or smaller" in result.stderr
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("name", ["timm", "mae"])
def test_a_plain_vit_is_refused_by_default_naming_the_recipe_flag(sources, cli, tmp_path, name):
    """timm vit_* and MAE attend globally: nothing to protect, and tiling would change them, so it is asked for."""
    report = json.loads(cli("inspect", sources[name][0], "--json").stdout)
    assert report["window"] == report["grid"] == "14x14" and report["window_energy"] is None
    result = cli("convert", sources[name][0], "-o", tmp_path / "out.safetensors", "--img-size", 224)
    assert result.exit_code == 2, result.output
    assert "plain global-attention ViT" in result.stderr and "pass --recipe tile" in result.stderr
    assert "Which recipe for a plain ViT?" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.safetensors").exists()


def test_the_recipe_flag_is_refused_where_windows_are_the_checkpoints_own(tmp_path):
    _, path = save_official(tmp_path)
    with pytest.raises(AbswinError, match=r"--recipe tile is for ViTs; hiera \(official\) has windows of its own, drop --recipe"):
        convert(path, tmp_path / "out.safetensors", 448, overrides=TILE)
    assert not (tmp_path / "out.safetensors").exists()


def test_a_finetuned_transformers_vitdet_keeps_its_interpolation_by_default(cli, tmp_path):
    """image_size 1024 over a 224 grid: the model runs at 1024 through interpolation, so converting it for 1024 is
    the identity on what it computes unless the tiling recipe is asked for by name."""
    folder = tmp_path / "src"
    original = randomize(VitDetModel(vitdet_config(img_size=1024)), seed=8)
    original.save_pretrained(folder)
    result = cli("convert", folder, "-o", tmp_path / "out", "--img-size", 1024)
    assert result.exit_code == 0, result.output
    assert "interpolating the 14x14 grid: kept (pass --recipe tile" in result.stdout
    model = VitDetModel.from_pretrained(tmp_path / "out").eval()
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = original(x).last_hidden_state, model(x).last_hidden_state
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
    tiled = cli("convert", folder, "-o", tmp_path / "tiled", "--img-size", 1024, "--recipe", "tile")
    assert tiled.exit_code == 0, tiled.output
    pos = load_file(tmp_path / "tiled" / "model.safetensors")["embeddings.position_embeddings"]
    source_pos = original.embeddings.position_embeddings.detach()
    assert torch.equal(get_abs_pos(pos, True, (64, 64)), get_abs_pos(source_pos, True, (64, 64), tiling=True))


def test_mae_pretrain_decoder_embedding_is_resized_too(tmp_path):
    encoder = randomize(vit(), seed=5).state_dict()
    gen = torch.Generator().manual_seed(6)
    state = {
        **encoder,
        "mask_token": torch.randn(1, 1, 16, generator=gen),
        "decoder_pos_embed": torch.randn(1, 197, 16, generator=gen),
    }
    path = _torch_save(tmp_path / "mae_visualize_vit_tiny.pth", {"model": state})
    result = convert(path, tmp_path / "out.safetensors", 448, overrides=TILE)
    out = load_file(tmp_path / "out.safetensors")
    decoder = state["decoder_pos_embed"]
    grid = decoder[0, 1:].reshape(1, 14, 14, 16).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(28, 28), mode="bicubic", align_corners=False)
    assert torch.allclose(out["decoder_pos_embed"][0, 1:], expected[0].permute(1, 2, 0).reshape(-1, 16), atol=1e-6)
    assert torch.equal(out["decoder_pos_embed"][0, 0], decoder[0, 0])
    assert result.detection.spelling == "mae" and any("decoder_pos_embed" in n for n in result.notes)


def test_a_pkl_holding_an_object_is_refused_and_nothing_runs(tmp_path, cli):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    state = {k: v.numpy() for k, v in detectron2_state().items()}
    with open(tmp_path / "model_final.pkl", "wb") as f:
        pickle.dump({"model": state, "__author__": Payload()}, f)
    result = cli("convert", tmp_path / "model_final.pkl", "-o", tmp_path / "out.safetensors", "--img-size", 1024)
    assert result.exit_code == 2
    assert "refused to unpickle" in result.stderr and "system" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize(("name", "size", "message"), [
    ("timm", "1000", "not a multiple of 16x16"),
    ("detectron2-pkl", "768x1024", "square models only"),
    ("transformers", "512x1024", "square models only"),
])
def test_bad_sizes_fail_with_one_line_and_write_nothing(sources, cli, tmp_path, name, size, message):
    recipe = ("--recipe", "tile") if name == "timm" else ()
    result = cli("convert", sources[name][0], "-o", tmp_path / "out", "--img-size", size, *recipe)
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_timm_takes_a_non_square_size(sources, tmp_path):
    path, original = sources["timm"]
    convert(path, tmp_path / "out.safetensors", "448x672", overrides=TILE)
    model = vit((448, 672))
    model.load_state_dict(load_file(tmp_path / "out.safetensors"), strict=True)
    expected = get_abs_pos(original.pos_embed.detach(), True, (28, 42), tiling=True)
    assert torch.equal(model.pos_embed[:, 1:].detach().reshape(1, 28, 42, DIM), expected)


def test_the_split_target_is_not_offered(sources, tmp_path):
    with pytest.raises(AbswinError, match="target 'sam2' is not available for vitdet"):
        convert(sources["timm"][0], tmp_path / "out.safetensors", 1024, target="sam2")
    assert not (tmp_path / "out.safetensors").exists()
    assert inspect(sources["timm"][0]).to_json()["targets"] == ["baked"]
