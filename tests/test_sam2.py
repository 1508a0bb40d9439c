"""SAM2 in its three formats (``sam2`` .pt, transformers Sam2Model, timm sam2_hiera_*), converted and loaded into
the real upstream runtimes built tiny, with random weights and a planted background + window embedding."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sam2.modeling.backbones.hieradet import Hiera as Sam2Trunk
from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
from sam2.modeling.position_encoding import PositionEmbeddingSine
from timm.models._hub import save_for_hf
from transformers import Sam2Config, Sam2Model

from abswin_convert import convert, inspect
from abswin_convert.families import detect, hiera
from abswin_convert.io.checkpoint import open_checkpoint
from abswin_convert.maths.absolute_win import normalized_window_energy

EMBED_DIM = 16
STAGES = (1, 1, 2, 1)
GLOBAL_BLOCKS = (3,)
CHANNELS = [EMBED_DIM * 8, EMBED_DIM * 4, EMBED_DIM * 2, EMBED_DIM]
FORMATS = ["sam2", "transformers", "timm"]
PREFIX = "image_encoder.trunk."
NATIVE = 1024
TOLERANCE = 1e-5


def sam2_model(background=(7, 7)) -> torch.nn.ModuleDict:
    """What a ``sam2`` .pt holds under ``image_encoder``: the Hiera trunk and its FPN neck."""
    trunk = Sam2Trunk(embed_dim=EMBED_DIM, num_heads=1, stages=STAGES, global_att_blocks=GLOBAL_BLOCKS,
                      window_pos_embed_bkg_spatial_size=background)
    neck = FpnNeck(position_encoding=PositionEmbeddingSine(num_pos_feats=32), d_model=32,
                   backbone_channel_list=CHANNELS, fpn_top_down_levels=[2, 3], fpn_interp_model="nearest")
    return torch.nn.ModuleDict({"image_encoder": ImageEncoder(trunk, neck, scalp=1)}).eval()


def hf_config(background=(7, 7)) -> Sam2Config:
    backbone = {
        "model_type": "sam2_hiera_det_model", "hidden_size": EMBED_DIM, "num_attention_heads": 1,
        "blocks_per_stage": list(STAGES), "embed_dim_per_stage": CHANNELS[::-1], "num_attention_heads_per_stage": [1, 2, 4, 8],
        "global_attention_blocks": list(GLOBAL_BLOCKS), "window_positional_embedding_background_size": list(background),
    }
    vision = {"backbone_config": backbone, "backbone_channel_list": CHANNELS, "fpn_hidden_size": 32}
    return Sam2Config(vision_config=vision, prompt_encoder_config={"hidden_size": 32}, mask_decoder_config={"hidden_size": 32})


def timm_model(background=(7, 7)) -> torch.nn.Module:
    return timm.create_model("sam2_hiera_tiny", pretrained=False, embed_dim=EMBED_DIM, stages=STAGES,
                             global_att_blocks=GLOBAL_BLOCKS, global_pos_size=background).eval()


def build(fmt: str, background=(7, 7)) -> torch.nn.Module:
    torch.manual_seed(0)
    return {"sam2": sam2_model, "transformers": lambda b: Sam2Model(hf_config(b)).eval(), "timm": timm_model}[fmt](background)


def trunk_of(model: torch.nn.Module, fmt: str) -> torch.nn.Module:
    trunks = {
        "sam2": lambda m: m["image_encoder"].trunk,
        "transformers": lambda m: m.vision_encoder.backbone,
        "timm": lambda m: m,
    }
    return trunks[fmt](model)


def save_native(fmt: str, folder) -> tuple[torch.nn.Module, object]:
    """A model with a planted background + window embedding, saved the way its project ships it."""
    model = build(fmt)
    trunk = trunk_of(model, fmt)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        trunk.pos_embed.copy_(0.02 * torch.randn(trunk.pos_embed.shape, generator=gen))
        trunk.pos_embed_window.copy_(0.02 * torch.randn(trunk.pos_embed_window.shape, generator=gen))
    if fmt == "sam2":
        path = folder / "sam2.1_hiera_tiny.pt"
        torch.save({"model": model.state_dict()}, path)
    elif fmt == "transformers":
        path = folder / "sam2_hf"
        model.save_pretrained(path)
    else:
        path = folder / "sam2_hiera_timm.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return model, path


def load_converted(fmt: str, out, background=(7, 7)) -> torch.nn.Module:
    """The converted file in a fresh upstream model, loaded with ``strict=True`` (from_pretrained: nothing missing)."""
    if fmt == "transformers":
        model, info = Sam2Model.from_pretrained(out, output_loading_info=True)
        assert not any(info.values()), info
        return model.eval()
    model = build(fmt, background)
    state = torch.load(out, weights_only=True)["model"] if fmt == "sam2" else load_file(out)
    model.load_state_dict(state, strict=True)
    return model


@torch.no_grad()
def trunk_features(model: torch.nn.Module, fmt: str, x: torch.Tensor) -> list[torch.Tensor]:
    """Per-stage trunk features ``[B, H, W, C]`` from each runtime's own API."""
    trunk = trunk_of(model, fmt)
    if fmt == "transformers":
        return list(trunk(x).intermediate_hidden_states)
    features = trunk.forward_intermediates(x, intermediates_only=True) if fmt == "timm" else trunk(x)
    return [f.permute(0, 2, 3, 1) for f in features]


@torch.no_grad()
def composed(model: torch.nn.Module, fmt: str, side: int) -> torch.Tensor:
    """The embedding the runtime itself adds at a ``side x side`` token grid, ``[side, side, C]``."""
    trunk = trunk_of(model, fmt)
    if fmt == "timm":
        return trunk._pos_embed(torch.zeros(1, side, side, EMBED_DIM))[0]
    return trunk._get_pos_embed((side, side))[0]


def image(size: int) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size))


def out_path(fmt: str, folder, name: str = "out"):
    return folder / {"sam2": f"{name}.pt", "transformers": name, "timm": f"{name}.safetensors"}[fmt]


def out_format(fmt: str) -> str:
    """Each project's own container: sam2 ships ``{'model': ...}`` .pt files."""
    return "pt" if fmt == "sam2" else "safetensors"


@pytest.mark.parametrize("fmt", FORMATS)
def test_inspect_reports_background_window_and_energy_of_the_composed_native_embedding(tmp_path, cli, fmt):
    model, source = save_native(fmt, tmp_path)
    ckpt = open_checkpoint(source)
    assert hiera.detect(ckpt) is None  # SAM2's trunk is HieraDet, not a Hiera the hiera family could bake
    assert detect(ckpt).family == "sam2"
    report = inspect(source).to_json()
    assert (report["family"], report["format"]) == ("sam2", fmt)
    assert report["position_shape"] == [1, EMBED_DIM, 7, 7]
    assert report["details"]["global_grid"] == "7x7"
    assert (report["grid"], report["window"], report["native_input"]) == ("256x256", "8x8", "1024x1024")
    assert report["resize"] == "bicubic"
    assert report["targets"] == ["baked", "sam2"]
    expected = normalized_window_energy(composed(model, fmt, NATIVE // 4).detach().double().numpy(), (8, 8))
    assert report["window_energy_normalized"] == pytest.approx(expected, abs=1e-4)
    assert report["window_energy_normalized"] > 0.2  # a random 8x8 window tiled 32x32 times dominates
    result = cli("inspect", source)
    assert result.exit_code == 0 and f"sam2 ({fmt} format)" in result.output


@pytest.mark.parametrize("fmt", FORMATS)
def test_full_global_size_changes_nothing_and_the_native_output_is_identical(tmp_path, cli, fmt):
    model, source = save_native(fmt, tmp_path)
    out = out_path(fmt, tmp_path)
    result = cli("convert", source, "-o", out, "--img-size", NATIVE, "--format", out_format(fmt))
    assert result.exit_code == 0, result.output
    assert "multiples of 32" in result.output
    converted = load_converted(fmt, out)
    x = image(NATIVE)
    for before, after in zip(trunk_features(model, fmt, x), trunk_features(converted, fmt, x)):
        assert torch.equal(before, after)


@pytest.mark.parametrize("fmt", FORMATS)
def test_global_size_refit_loads_strict_with_the_new_background_and_reports_the_true_residual(tmp_path, fmt):
    model, source = save_native(fmt, tmp_path)
    result = convert(source, out_path(fmt, tmp_path), 512, global_size="14x14", fmt=out_format(fmt))
    converted = load_converted(fmt, result.output.parent if fmt == "transformers" else result.output, background=(14, 14))
    trunk, source_trunk = trunk_of(converted, fmt), trunk_of(model, fmt)
    assert trunk.pos_embed.shape == (1, EMBED_DIM, 14, 14)
    assert torch.equal(trunk.pos_embed_window, source_trunk.pos_embed_window)  # the learned window is kept
    # Independently: how far the refitted background is from the source's, both resized by SAM2 to 256x256.
    native_background = F.interpolate(source_trunk.pos_embed.detach(), size=(256, 256), mode="bicubic")[0].permute(1, 2, 0)
    got = float((composed(converted, fmt, 256) - composed(model, fmt, 256)).norm() / native_background.norm())
    assert got == pytest.approx(float(result.metadata["abswin.residual"]), rel=1e-3)
    assert 0 < got < 0.2
    assert len(trunk_features(converted, fmt, image(512))) == 4
    if fmt == "transformers":
        config = json.loads((result.output.parent / "config.json").read_text())
        assert config["vision_config"]["backbone_config"]["image_size"] == [512, 512]
        assert config["vision_config"]["backbone_feature_sizes"] == [[128, 128], [64, 64], [32, 32]]
        with torch.no_grad():
            assert converted.get_image_embeddings(image(512))[-1].shape[-2:] == (32, 32)


def test_timm_hub_folder_gets_its_config_updated_and_builds_the_model_that_loads_it(tmp_path):
    model = build("timm")
    source = tmp_path / "timm_hub"
    save_for_hf(model, source, model_args={"embed_dim": EMBED_DIM, "stages": STAGES, "global_att_blocks": GLOBAL_BLOCKS},
                safe_serialization=True)
    result = convert(source, tmp_path / "out", 512, global_size="14x14")
    config = json.loads(result.config.read_text())
    assert config["model_args"]["global_pos_size"] == [14, 14]
    assert config["pretrained_cfg"]["input_size"] == [3, 512, 512]
    rebuilt = timm.create_model(config["architecture"], pretrained=False, **config["model_args"]).eval()
    rebuilt.load_state_dict(load_file(result.output), strict=True)
    assert rebuilt(image(512)).shape == (1, CHANNELS[0])


def test_refit_to_the_same_background_size_is_exact(tmp_path):
    _, source = save_native("sam2", tmp_path)
    result = convert(source, tmp_path / "same.pt", NATIVE, global_size="7x7", fmt="pt")
    assert float(result.metadata["abswin.residual"]) == 0
    before, after = open_checkpoint(source), open_checkpoint(result.output)
    assert all(before.tensor(k).raw.tobytes() == after.tensor(k).raw.tobytes() for k in before.keys())


@pytest.mark.parametrize("fmt", ["transformers", "timm"])
def test_to_sam2_writes_a_sam2_trunk_that_computes_what_the_source_runtime_computed(tmp_path, cli, fmt):
    model, source = save_native(fmt, tmp_path)
    out = tmp_path / "trunk.pt"
    result = cli("convert", source, "-o", out, "--img-size", NATIVE, "--to", "sam2", "--format", "pt")
    assert result.exit_code == 0, result.output
    assert "window_pos_embed_bkg_spatial_size=(7, 7)" in result.output
    state = torch.load(out, weights_only=True)
    assert list(state) == ["model"] and all(k.startswith(PREFIX) for k in state["model"])
    trunk = Sam2Trunk(embed_dim=EMBED_DIM, num_heads=1, stages=STAGES, global_att_blocks=GLOBAL_BLOCKS,
                      window_pos_embed_bkg_spatial_size=(7, 7)).eval()
    trunk.load_state_dict({k[len(PREFIX):]: v for k, v in state["model"].items()}, strict=True)
    x = image(256)
    expected = trunk_features(model, fmt, x)
    with torch.no_grad():
        got = [f.permute(0, 2, 3, 1) for f in trunk(x)]
    assert max(float((a - b).abs().max()) for a, b in zip(expected, got)) <= TOLERANCE


def test_to_sam2_from_a_sam2_checkpoint_keeps_the_whole_model(tmp_path, cli):
    model, source = save_native("sam2", tmp_path)
    out = tmp_path / "sam2.pt"
    result = cli("convert", source, "-o", out, "--img-size", 512, "--to", "sam2", "--format", "pt")
    assert result.exit_code == 0, result.output
    state = torch.load(out, weights_only=True)["model"]
    assert set(state) == set(model.state_dict())  # the neck too, under its own names
    load_converted("sam2", out)


def test_safetensors_output_of_a_sam2_checkpoint_keeps_its_keys(tmp_path):
    model, source = save_native("sam2", tmp_path)
    result = convert(source, tmp_path / "out.safetensors", NATIVE, global_size="14x14")
    assert set(load_file(result.output)) == set(model.state_dict())
    assert result.metadata["abswin.family"] == "sam2" and result.metadata["abswin.global_size"] == "14x14"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--img-size", 1000], "is not a multiple of 32x32"),
        (["--img-size", 1024, "--to", "timm-abswin"], "target 'timm-abswin' is not available for sam2"),
    ],
)
def test_bad_requests_fail_in_one_line_and_write_nothing(tmp_path, cli, args, message):
    _, source = save_native("sam2", tmp_path)
    out = tmp_path / "out.pt"
    result = cli("convert", source, "-o", out, *args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
