"""Hiera in its three formats, converted and loaded into the real upstream runtimes (official, timm, transformers)."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import HieraForImageClassification

from abswin_convert import convert, inspect
from tests import hiera_models as hm

FORMATS = ["official", "timm", "transformers"]
SAVERS = {"official": hm.save_official, "timm": hm.save_timm, "transformers": hm.save_transformers}


def expected_abswin(flat: torch.Tensor, out: int) -> torch.Tensor:
    """Absolute win written out by hand: mean over the 7x7 tiles, tile it, antialiased bicubic of the rest."""
    c = flat.shape[-1]
    grid = flat.reshape(56, 56, c).double()
    window = grid.reshape(7, 8, 7, 8, c).mean(dim=(0, 2))
    rest = grid - window.repeat(7, 7, 1)
    up = F.interpolate(rest.permute(2, 0, 1)[None], size=(out, out), mode="bicubic", antialias=True)
    return (up[0].permute(1, 2, 0) + window.repeat(out // 8, out // 8, 1)).reshape(1, out * out, c)


def naive_resize(flat: torch.Tensor, out: int) -> torch.Tensor:
    c = flat.shape[-1]
    nchw = flat.reshape(1, 56, 56, c).permute(0, 3, 1, 2)
    up = F.interpolate(nchw, size=(out, out), mode="bicubic", antialias=True)
    return up.permute(0, 2, 3, 1).reshape(1, out * out, c)


def logits(model, size: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = model(x)
    return out.logits if hasattr(out, "logits") else out


@pytest.mark.parametrize("fmt", FORMATS)
def test_timm_abswin_loads_strict_and_reproduces_logits_at_224(tmp_path, cli, fmt):
    original, source = SAVERS[fmt](tmp_path)
    out = tmp_path / "abswin.safetensors"
    result = cli("convert", source, "-o", out, "--img-size", 448, "--to", "timm-abswin")
    assert result.exit_code == 0, result.output
    state = load_file(out)
    assert state["pos_embed"].shape == (1, hm.EMBED_DIM, 56, 56)
    assert state["pos_embed_win"].shape == (1, hm.EMBED_DIM, 8, 8)
    at_448 = hm.timm_model(abs_win_pos_embed=True, global_pos_size=(56, 56), img_size=448)
    at_448.load_state_dict(state, strict=True)
    at_224 = hm.timm_model(abs_win_pos_embed=True, global_pos_size=(56, 56), img_size=224)
    at_224.load_state_dict(state, strict=True)
    expected = logits(original, 224)
    got = logits(at_224, 224)
    if fmt == "official":  # the official head applies softmax in eval mode
        got = got.softmax(dim=-1)
    assert (got - expected).abs().max() <= 1e-5
    assert logits(at_448, 448).shape == (2, hm.NUM_CLASSES)


@pytest.mark.parametrize("fmt", FORMATS)
def test_baked_448_loads_strict_and_equals_absolute_win_not_naive(tmp_path, cli, fmt):
    original, source = SAVERS[fmt](tmp_path)
    out = tmp_path / "baked"
    result = cli("convert", source, "-o", out, "--img-size", 448)
    assert result.exit_code == 0, result.output
    if fmt == "transformers":
        model, info = HieraForImageClassification.from_pretrained(out, output_loading_info=True)
        assert all(not v for v in info.values()), info
        assert model.config.image_size == [448, 448]
        embedding = model.hiera.embeddings.position_embeddings.detach()
        source_embedding = original.hiera.embeddings.position_embeddings.detach()
    else:
        state = load_file(out / "model.safetensors")  # a folder gets the flat hub layout, for both formats
        model = hm.timm_model(img_size=448) if fmt == "timm" else hm.official_model(input_size=(448, 448))
        model.load_state_dict(state, strict=True)
        embedding = model.pos_embed.detach()
        source_embedding = original.pos_embed.detach()
    assert logits(model, 448).shape == (2, hm.NUM_CLASSES)
    expected = expected_abswin(source_embedding, 112)
    assert torch.allclose(embedding.double(), expected, atol=1e-6)
    assert (embedding - naive_resize(source_embedding, 112)).abs().max() > 1e-3


def test_official_video_converts_spatial_and_passes_temporal(tmp_path, cli):
    original, source = hm.save_official_video(tmp_path)
    out = tmp_path / "video.pth"
    result = cli("convert", source, "-o", out, "--img-size", 448, "--format", "pt")
    assert result.exit_code == 0, result.output
    saved = torch.load(out)
    assert set(saved) == {"model_state"}
    state = saved["model_state"]
    assert torch.equal(state["pos_embed_temporal"], original.pos_embed_temporal.detach())
    expected = expected_abswin(original.pos_embed_spatial.detach(), 112)
    assert torch.allclose(state["pos_embed_spatial"].double(), expected, atol=1e-6)
    big = hm.official_video_model(input_size=(16, 448, 448))
    big.load_state_dict(state, strict=True)


def test_output_records_provenance(tmp_path, cli):
    _, source = hm.save_timm(tmp_path)
    out = tmp_path / "o.safetensors"
    assert cli("convert", source, "-o", out, "--img-size", "448x640", "--global-size", "14x14").exit_code == 0
    with safe_open(out, "pt") as f:
        meta = f.metadata()
        assert f.get_slice("pos_embed").get_shape() == [1, 112 * 160, hm.EMBED_DIM]
    assert meta["format"] == "pt"
    assert meta["abswin.family"] == "hiera" and meta["abswin.format"] == "timm"
    assert meta["abswin.img_size"] == "448x640" and meta["abswin.native_input"] == "224x224"
    assert meta["abswin.window"] == "8x8" and meta["abswin.global_size"] == "14x14"
    assert 0 < float(meta["abswin.residual"]) < 1
    assert float(meta["abswin.window_energy"]) > 0.5
    import hashlib

    assert meta["abswin.source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


def test_untouched_tensors_are_copied_bit_for_bit(tmp_path, cli):
    _, source = hm.save_timm(tmp_path)
    out = tmp_path / "o.safetensors"
    assert cli("convert", source, "-o", out, "--img-size", 448).exit_code == 0
    before, after = load_file(source), load_file(out)
    assert set(before) == set(after)
    for key in before:
        if key != "pos_embed":
            assert torch.equal(before[key], after[key]), key


def test_format_pt_keeps_the_input_wrapper(tmp_path, cli):
    _, source = hm.save_official(tmp_path)
    out = tmp_path / "baked.pth"
    assert cli("convert", source, "-o", out, "--img-size", 448, "--format", "pt").exit_code == 0
    saved = torch.load(out, weights_only=True)
    assert list(saved) == ["model_state"]
    assert saved["model_state"]["pos_embed"].shape == (1, 112 * 112, hm.EMBED_DIM)
    provenance = json.loads((tmp_path / "baked.pth.abswin.json").read_text())
    assert provenance["abswin.target"] == "baked"


def test_global_size_refit_reports_residual_and_changes_shape(tmp_path, cli):
    _, source = hm.save_timm(tmp_path)
    out = tmp_path / "o.safetensors"
    result = cli("convert", source, "-o", out, "--img-size", 448, "--to", "timm-abswin", "--global-size", "14", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert 0 < float(report["metadata"]["abswin.residual"]) < 1
    state = load_file(out)
    assert state["pos_embed"].shape == (1, hm.EMBED_DIM, 14, 14)
    model = hm.timm_model(abs_win_pos_embed=True, global_pos_size=(14, 14), img_size=448)
    model.load_state_dict(state, strict=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_inspect_reports_family_grid_window_and_energy(tmp_path, cli, fmt):
    _, source = SAVERS[fmt](tmp_path)
    report = inspect(source).to_json()
    assert report["family"] == "hiera" and report["format"] == fmt
    assert report["grid"] == "56x56" and report["window"] == "8x8" and report["native_input"] == "224x224"
    assert report["window_energy_normalized"] > 0.5
    assert report["wrapper"] == ("model_state" if fmt == "official" else None)
    text = cli("inspect", source)
    assert text.exit_code == 0 and "window-periodic" in text.stdout
    as_json = json.loads(cli("inspect", source, "--json").stdout)
    assert as_json["position_key"] == report["position_key"]


def test_inspect_of_random_embedding_says_no_pattern(tmp_path):
    model = hm.timm_model()
    path = tmp_path / "random.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    assert abs(inspect(path).to_json()["window_energy_normalized"]) < 0.05


def test_library_api_converts_without_the_cli(tmp_path):
    _, source = hm.save_timm(tmp_path)
    result = convert(source, tmp_path / "lib.safetensors", img_size=448, target="timm-abswin")
    assert result.output.exists()
    assert result.metadata["abswin.target"] == "timm-abswin"
    assert any("abs_win_pos_embed=True" in note for note in result.notes)


def test_existing_output_needs_force_and_input_is_never_overwritten(tmp_path, cli):
    _, source = hm.save_timm(tmp_path)
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"keep me")
    refused = cli("convert", source, "-o", out, "--img-size", 448)
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert out.read_bytes() == b"keep me"
    assert cli("convert", source, "-o", out, "--img-size", 448, "--force").exit_code == 0
    original = source.read_bytes()
    onto_input = cli("convert", source, "-o", source, "--img-size", 448, "--force")
    assert onto_input.exit_code == 2 and "input" in onto_input.stderr
    assert source.read_bytes() == original


def test_transformers_pretraining_model_bakes_encoder_and_resizes_decoder(tmp_path, cli):
    from transformers import HieraConfig, HieraForPreTraining

    def config(size):
        return HieraConfig(
            embed_dim=hm.EMBED_DIM, num_heads=[1, 2, 4, 8], depths=list(hm.STAGES), image_size=[size, size],
            decoder_hidden_size=8, decoder_depth=1, decoder_num_heads=1,
        )

    torch.manual_seed(0)
    source = HieraForPreTraining(config(224))
    source.save_pretrained(tmp_path / "mae")
    out = tmp_path / "mae448"
    result = cli("convert", tmp_path / "mae", "-o", out, "--img-size", 448)
    assert result.exit_code == 0, result.output
    assert "decoder" in result.stdout
    _, info = HieraForPreTraining.from_pretrained(out, output_loading_info=True)
    assert all(not v for v in info.values()), info


def test_timm_abswin_source_bakes_back_into_plain_timm_hiera(tmp_path, cli):
    _, source = hm.save_timm(tmp_path)
    split = tmp_path / "split.safetensors"
    assert cli("convert", source, "-o", split, "--img-size", 448, "--to", "timm-abswin").exit_code == 0
    assert inspect(split).to_json()["format"] == "timm-abswin"
    baked_from_split = tmp_path / "b1.safetensors"
    baked_direct = tmp_path / "b2.safetensors"
    assert cli("convert", split, "-o", baked_from_split, "--img-size", 448).exit_code == 0
    assert cli("convert", source, "-o", baked_direct, "--img-size", 448).exit_code == 0
    a, b = load_file(baked_from_split), load_file(baked_direct)
    assert "pos_embed_win" not in a
    assert torch.allclose(a["pos_embed"], b["pos_embed"], atol=1e-6)
    hm.timm_model(img_size=448).load_state_dict(a, strict=True)


def test_timm_config_follows_the_conversion(tmp_path, cli):
    """A timm folder (config.json as save_for_hf writes it) gets a config that builds the converted model."""
    from abswin_convert.demo import example_path

    out = tmp_path / "abswin"
    assert cli("convert", example_path(), "-o", out, "--img-size", 448, "--to", "timm-abswin", "--global-size", 14).exit_code == 0
    config = hm.read_json(out / "config.json")
    assert config["model_args"]["abs_win_pos_embed"] is True
    assert config["model_args"]["global_pos_size"] == [14, 14]
    assert config["pretrained_cfg"]["input_size"] == [1, 448, 448]  # the example is a 1-channel (Fashion-MNIST) model
    import timm

    model = timm.create_model(config["architecture"], **{**config["model_args"], "num_classes": config["num_classes"]})
    model.load_state_dict(load_file(out / "model.safetensors"), strict=True)


@pytest.mark.parametrize(
    ("damage", "commands"),
    [
        ({"model_args": "x"}, ("convert", "eval")),
        ({"pretrained_cfg": {"input_size": 64}}, ("convert", "eval")),
        ({"architecture": 7}, ("eval",)),  # a conversion does not build the model
        ({"num_classes": "ten"}, ("eval",)),
    ],
)
def test_a_damaged_timm_config_is_one_line_exit_2(tmp_path, cli, damage, commands):
    import json
    import shutil

    from abswin_convert.demo import example_path

    source = tmp_path / "damaged"
    shutil.copytree(example_path(), source)
    (source / "config.json").write_text(json.dumps({**hm.read_json(example_path() / "config.json"), **damage}))
    args = {"convert": ("convert", source, "-o", tmp_path / "out", "--img-size", 128),
            "eval": ("eval", source, "--data", "fashion-mnist:/nowhere", "--img-size", 64)}  # the model is built first
    for command in commands:
        result = cli(*args[command])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("abswin-convert: error: config.json is damaged: timm's needs architecture")
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_output_suffix_picks_the_format_and_a_contradiction_is_refused(tmp_path, cli):
    _, source = hm.save_official(tmp_path)
    out = tmp_path / "baked.pth"
    assert cli("convert", source, "-o", out, "--img-size", 448).exit_code == 0
    assert list(torch.load(out, weights_only=True)) == ["model_state"]
    clash = cli("convert", source, "-o", tmp_path / "x.pt", "--img-size", 448, "--format", "safetensors")
    assert clash.exit_code == 2 and "--format" in clash.stderr
    assert not (tmp_path / "x.pt").exists()


def test_timm_abswin_whose_global_grid_equals_its_width_is_not_mistaken_for_sam(tmp_path, cli):
    """pos_embed [1, 16, 16, 16] reads as NHWC too; only the Hiera family may claim it."""
    _, source = hm.save_timm(tmp_path)
    out = tmp_path / "g16.safetensors"
    assert cli("convert", source, "-o", out, "--img-size", 448, "--to", "timm-abswin", "--global-size", 16).exit_code == 0
    assert inspect(out).to_json()["family"] == "hiera"
