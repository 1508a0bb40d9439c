"""``convert --window-size``: a pretrained SAM, ViTDet or SAM2 with another attention window (segment-anything PR 594),
loaded strictly into the real upstream models built with that window, with the measured change recorded."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import VitDetModel

from abswin_convert import convert, convert_state_dict
from abswin_convert.errors import AbswinError
from abswin_convert.hub.model_card import model_card, reproduce_command
from abswin_convert.io.provenance import Provenance
from tests import test_sam, test_sam2
from tests.hiera_models import save_official
from tests.random_weights import randomize
from tests.test_cli_startup import WITHOUT_TORCH, loaded_after
from tests.test_vitdet import detectron2_state, save_detectron2_pkl, vitdet_config

SAM_FORMATS = test_sam.FORMATS
TABLE = {"segment-anything": "image_encoder.blocks.0.attn.rel_pos_h", "transformers": "vision_encoder.layers.0.attn.rel_pos_h",
         "timm": "blocks.0.attn.rel_pos_h"}  # block 0 attends in windows, block 1 globally


def linear(table: torch.Tensor, rows: int, align_corners: bool) -> torch.Tensor:
    """torch's own linear resize of a ``[L, D]`` table, the reference for both conventions."""
    return F.interpolate(table.T[None].double(), size=rows, mode="linear", align_corners=align_corners)[0].T.float()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("fmt", SAM_FORMATS)
def test_sam_window_16_loads_strict_in_each_runtime_and_records_the_measured_change(saved, cli, tmp_path, fmt):
    original, path = saved(fmt)
    result = cli("convert", path, "-o", tmp_path / "out", "--window-size", 16, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    model = test_sam.load_converted(fmt, tmp_path / "out", 1024, window=16)  # strict, window_size=16
    source, written = original.state_dict(), load_file(tmp_path / "out" / "model.safetensors")
    pos_key = test_sam.POS_KEY[fmt]
    assert torch.equal(written[pos_key], source[pos_key])  # keep (the default): the embedding as it was, bit for bit
    assert written[TABLE[fmt]].shape[0] == 31
    assert torch.allclose(written[TABLE[fmt]], linear(source[TABLE[fmt]], 31, align_corners=False), atol=1e-6)
    global_table = TABLE[fmt].replace(".0.", ".1.")
    assert torch.equal(written[global_table], source[global_table])  # 64x64 grid: the global tables are as they were
    # the recorded number is what the upstream runtime computes: original (window 14) against converted (window 16)
    upstream = relative(test_sam.encode(fmt, model, 1024), test_sam.encode(fmt, original, 1024))
    meta = report["metadata"]
    assert upstream > 0.01  # a real change: this is no identity
    assert float(meta["abswin.window_change_effect"]) == pytest.approx(upstream, rel=1e-3)
    assert (meta["abswin.window_size"], meta["abswin.window"]) == ("16x16", "14x14")
    assert (meta["abswin.relpos_resize"], meta["abswin.window_part"]) == ("get-rel-pos", "keep")
    assert meta["abswin.changes_output"].startswith("yes")
    assert any("changes what the model computes at its own size" in n for n in report["notes"])
    assert any(n.startswith("relative difference of the image encoder's output against the original at the native "
                            "size: ") for n in report["notes"])
    if fmt == "transformers":
        config = json.loads((tmp_path / "out" / "config.json").read_text())
        assert config["vision_config"]["window_size"] == 16 and model.config.vision_config.window_size == 16


def test_align_corners_and_rewindow_follow_pr_594_and_the_split(saved, tmp_path):
    original, path = saved("segment-anything")
    result = convert(path, tmp_path / "out.safetensors", window_size=16, relpos_resize="align-corners", window_part="rewindow")
    written, source = load_file(tmp_path / "out.safetensors"), original.state_dict()
    key = TABLE["segment-anything"]
    assert torch.allclose(written[key], linear(source[key], 31, align_corners=True), atol=1e-6)
    assert torch.equal(written[key][0], source[key][0]) and torch.equal(written[key][-1], source[key][-1])
    grid = source["image_encoder.pos_embed"][0]
    window14 = test_sam.window_part(grid)  # [196, C], split with the old window
    rest = grid - test_sam.tiled(window14, (64, 64))
    window16 = F.interpolate(window14.reshape(14, 14, -1).permute(2, 0, 1)[None], size=(16, 16), mode="bicubic",
                             align_corners=False)[0].permute(1, 2, 0)
    expected = rest + window16.repeat(4, 4, 1).float()
    assert (written["image_encoder.pos_embed"][0] - expected).abs().max() <= 1e-6
    model = test_sam.sa_model(1024, window=16).eval()
    model.load_state_dict(written, strict=True)
    upstream = relative(test_sam.encode("segment-anything", model, 1024), test_sam.encode("segment-anything", original, 1024))
    assert float(result.metadata["abswin.window_change_effect"]) == pytest.approx(upstream, rel=1e-3)
    assert result.metadata["abswin.relpos_resize"] == "align-corners" and result.metadata["abswin.window_part"] == "rewindow"


def test_window_and_size_together_build_at_both(saved, tmp_path):
    """768 px with 16x16 windows: the global tables follow the 48x48 grid, the embedding is baked for 768 with its
    window part kept 14-periodic (keep) or made 16-periodic (rewindow)."""
    original, path = saved("timm")
    grid = original.pos_embed.detach()[0]
    window14 = test_sam.window_part(grid)
    rest = F.interpolate((grid - test_sam.tiled(window14, (64, 64))).permute(2, 0, 1)[None], size=(48, 48),
                         mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
    window16 = F.interpolate(window14.reshape(14, 14, -1).permute(2, 0, 1)[None], size=(16, 16), mode="bicubic",
                             align_corners=False)[0].permute(1, 2, 0).float()
    expected = {"keep": test_sam.reference(grid, (48, 48)), "rewindow": rest + window16.repeat(3, 3, 1)}
    for part in ("keep", "rewindow"):
        convert(path, tmp_path / f"{part}.safetensors", 768, window_size=16, window_part=part)
        model = test_sam.timm_model(768, window=16)
        model.load_state_dict(load_file(tmp_path / f"{part}.safetensors"), strict=True)
        assert model.blocks[1].attn.rel_pos_h.shape[0] == 95 and model.blocks[0].attn.rel_pos_h.shape[0] == 31
        assert (model.pos_embed.detach()[0] - expected[part]).abs().max() <= 1e-5
        assert test_sam.encode("timm", model, 768).shape[-2:] == (48, 48)


def test_the_in_memory_api_gives_the_same_tensors(saved, tmp_path):
    original, path = saved("segment-anything")
    convert(path, tmp_path / "out.safetensors", window_size=16, window_part="rewindow")
    state = convert_state_dict(original.state_dict(), window_size=16, window_part="rewindow")
    written = load_file(tmp_path / "out.safetensors")
    assert all(torch.equal(state[k], written[k]) for k in written)
    assert state.notes[-1].startswith("relative difference of the image encoder's output")


def test_transformers_vitdet_window_16_loads_from_its_config(tmp_path, cli):
    """A finetuned VitDet running at 1024 over its 224 grid: --window-size alone keeps the embedding and the size."""
    folder = tmp_path / "src"
    original = randomize(VitDetModel(vitdet_config(img_size=1024)), seed=8)
    original.save_pretrained(folder)
    result = cli("convert", folder, "-o", tmp_path / "out", "--window-size", 16, "--json")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["window_size"], config["image_size"], config["pretrain_image_size"]) == (16, 1024, 224)
    model, info = VitDetModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info.values()), info
    assert model.config.window_size == 16
    written = load_file(tmp_path / "out" / "model.safetensors")
    source = original.state_dict()
    assert torch.equal(written["embeddings.position_embeddings"], source["embeddings.position_embeddings"])
    assert written["encoder.layer.0.attention.rel_pos_h"].shape[0] == 31
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        upstream = relative(model.eval()(x).last_hidden_state, original(x).last_hidden_state)
    measured = float(json.loads(result.stdout)["metadata"]["abswin.window_change_effect"])
    assert upstream > 0.01 and measured == pytest.approx(upstream, rel=1e-3)


def test_detectron2_pkl_gets_its_windowed_tables_and_a_note(tmp_path, cli):
    state = detectron2_state()
    path = save_detectron2_pkl(tmp_path / "model_final.pkl", state)
    result = cli("convert", path, "-o", tmp_path / "out.safetensors", "--window-size", 16)
    assert result.exit_code == 0, result.output
    written = load_file(tmp_path / "out.safetensors")
    assert torch.equal(written["backbone.net.pos_embed"], state["backbone.net.pos_embed"])
    assert written["backbone.net.blocks.0.attn.rel_pos_h"].shape[0] == 31
    assert torch.equal(written["backbone.net.blocks.1.attn.rel_pos_h"], state["backbone.net.blocks.1.attn.rel_pos_h"])
    assert "detectron2: set window_size=16 on the ViT backbone (model.backbone.net.window_size)" in result.stdout


@pytest.mark.parametrize("fmt", test_sam2.FORMATS)
def test_sam2_window_spec_changes_no_weight_and_builds(tmp_path, cli, fmt):
    original, path = test_sam2.save_native(fmt, tmp_path)
    out = test_sam2.out_path(fmt, tmp_path)
    result = cli("convert", path, "-o", out, "--window-size", "8,4,16,8", "--format", test_sam2.out_format(fmt), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    notes = " ".join(report["notes"])
    assert report["metadata"]["abswin.window_size"] == "8,4,16,8"
    assert report["metadata"]["abswin.window_change_effect"].startswith("not measured: this package has no SAM2 trunk")
    spec = (8, 4, 16, 8)
    if fmt == "transformers":
        config = json.loads((out / "config.json").read_text())
        assert config["vision_config"]["backbone_config"]["window_size_per_stage"] == list(spec)
        model = test_sam2.load_converted(fmt, out)  # from_pretrained of the written config: nothing missing
        assert model.config.vision_config.backbone_config.window_size_per_stage == list(spec)
        trunk = model.vision_encoder.backbone
    elif fmt == "sam2":
        assert "hydra_overrides_extra=['++model.image_encoder.trunk.window_spec=[8, 4, 16, 8]']" in notes
        trunk = test_sam2.Sam2Trunk(embed_dim=test_sam2.EMBED_DIM, num_heads=1, stages=test_sam2.STAGES,
                                    global_att_blocks=test_sam2.GLOBAL_BLOCKS, window_spec=spec,
                                    window_pos_embed_bkg_spatial_size=(7, 7))
        state = torch.load(out, weights_only=True)["model"]
        trunk.load_state_dict({k[len(test_sam2.PREFIX):]: v for k, v in state.items() if k.startswith(test_sam2.PREFIX)},
                              strict=True)
    else:
        assert "window_spec=(8, 4, 16, 8)" in notes
        trunk = timm.create_model("sam2_hiera_tiny", pretrained=False, embed_dim=test_sam2.EMBED_DIM, stages=test_sam2.STAGES,
                                  global_att_blocks=test_sam2.GLOBAL_BLOCKS, window_spec=spec, global_pos_size=(7, 7))
        trunk.load_state_dict(load_file(out), strict=True)
    written = {k: v for k, v in trunk.state_dict().items()}
    source = test_sam2.trunk_of(original, fmt).state_dict()
    assert all(torch.equal(written[k], source[k]) for k in source)  # no weight changes
    with torch.no_grad():  # the trunk runs with the new windows
        features = trunk.eval()(test_sam2.image(256))
    assert features is not None


@pytest.mark.parametrize(("args", "message"), [
    (("--window-size", "16x12"), "takes one window side (its window_size is one int); pass --window-size 16"),
    (("--window-size", 80), "--window-size 80x80 is larger than the 64x64 token grid the model runs at; pass --window-size 64"),
    (("--window-size", 40, "--img-size", 512), "is larger than the 32x32 token grid the model runs at"),
    (("--window-size", 14), "is sam (segment-anything)'s own window: nothing to change; drop --window-size"),
    (("--window-size", "8,4,16,8"), "is a per-stage SAM2 window_spec; sam (segment-anything) takes one window: N"),
    (("--window-part", "rewindow", "--img-size", 1024), "--relpos-resize and --window-part go with --window-size"),
    (("--window-size", "a"), "is not a window"),
    ((), "pass --img-size N (a new input size), --window-size N, or both"),
])
def test_sam_refusals_are_one_line_and_write_nothing(saved, cli, tmp_path, args, message):
    _, path = saved("segment-anything")
    result = cli("convert", path, "-o", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("spec", "message"), [
    ("8,4,16", "this SAM2 trunk has 4 stages, so its window_spec is 4 windows"),
    ("16", "this SAM2 trunk has 4 stages"),
    ("4,4,16,8", "stage 1's window is the 8x8 pos_embed_window, a weight; keep it at 8"),
    ("8,4,15,8", "stage 3's window 15 is odd, and the next stage pools its queries 2x2 inside it"),
    ("8,4,16,64", "stage 4's window 64 is larger than its 32x32 grid at 1024x1024 px"),
])
def test_sam2_specs_the_stages_cannot_take_are_refused(tmp_path, cli, spec, message):
    _, path = test_sam2.save_native("sam2", tmp_path)
    result = cli("convert", path, "-o", tmp_path / "out.pt", "--window-size", spec)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.pt").exists()


def test_families_without_a_changeable_window_are_refused(tmp_path):
    _, hiera_path = save_official(tmp_path)
    with pytest.raises(AbswinError, match=r"--window-size changes the attention window of sam, vitdet, sam2 checkpoints; "
                                          r"hiera \(official\) is not one of them"):
        convert(hiera_path, tmp_path / "out.safetensors", window_size=16)
    assert not (tmp_path / "out.safetensors").exists()


def test_without_torch_the_conversion_works_and_says_it_did_not_measure(saved, tmp_path):
    _, path = saved("timm")
    args = ("convert", str(path), "-o", str(tmp_path / "out.safetensors"), "--window-size", "16")
    assert loaded_after(WITHOUT_TORCH, *args)["code"] == 0
    with safe_open(tmp_path / "out.safetensors", "np") as f:
        meta = Provenance.from_metadata(f.metadata()).entries()
    assert meta["window_change_effect"] == "not measured: needs torch"
    assert meta["window_size"] == "16x16"


def test_model_card_says_the_output_changed_and_reproduces_the_window_options(saved, tmp_path):
    _, path = saved("timm")
    result = convert(path, tmp_path / "out.safetensors", window_size=16, relpos_resize="align-corners")
    provenance = result.provenance
    card = model_card(provenance)
    assert "changes what the model computes at its own size" in card
    effect = provenance.window_change.effect
    assert f"| relative change of the encoder output at the native size | `{effect}` |" in card
    assert reproduce_command(provenance).endswith("--window-size 16x16 --relpos-resize align-corners --window-part keep")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """test_sam's planted SAM models: ``saved(fmt)`` -> (model at 1024, its native file)."""
    return test_sam.saved_models(tmp_path_factory)


def test_a_zoo_entry_takes_the_window_options(saved, cli, tmp_path):
    _, path = saved("timm")
    manifest = tmp_path / "zoo.toml"
    manifest.write_text(f'[defaults]\nout = "{tmp_path / "out"}"\n[[model]]\nname = "sam"\nsource = "{path}"\n'
                        'img_size = [1024]\nwindow_size = 16\nwindow_part = "rewindow"\n')
    result = cli("zoo", manifest)
    assert result.exit_code == 0, result.output
    with safe_open(tmp_path / "out" / "sam-baked-1024x1024" / "model.safetensors", "np") as f:
        meta = Provenance.from_metadata(f.metadata()).entries()
    assert (meta["window_size"], meta["window_part"], meta["relpos_resize"]) == ("16x16", "rewindow", "get-rel-pos")
    assert json.loads(meta["zoo_options"])["window_size"] == "16x16"
    manifest.write_text(manifest.read_text().replace('"rewindow"', '"moved"'))
    bad = cli("zoo", manifest)
    assert bad.exit_code == 2 and "[[model]] #1" in bad.stderr and "unknown --window-part 'moved'" in bad.stderr
