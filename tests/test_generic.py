"""Checkpoints of a family we do not know, read through --key/--layout/--window/--patch-stride, and the registry's
errors for unknown and ambiguous checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import ViTConfig, ViTModel

from abswin_convert import convert, inspect
from abswin_convert.errors import AbswinError
from abswin_convert.families.generic import Overrides

DIM = 32
KEY = "embeddings.position_embeddings"
OVERRIDES = ("--key", KEY, "--layout", "flat_cls", "--window", "7")


def vit_config(img_size: int = 224) -> ViTConfig:
    return ViTConfig(
        hidden_size=DIM, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=img_size, patch_size=16
    )


@pytest.fixture(scope="module")
def plain_vit(tmp_path_factory):
    """transformers' plain ViT (no family of ours knows it): ``embeddings.position_embeddings [1, 197, C]``."""
    torch.manual_seed(0)
    model = ViTModel(vit_config()).eval()
    with torch.no_grad():
        model.embeddings.position_embeddings.normal_(0, 0.5)
    folder = tmp_path_factory.mktemp("vit")
    model.save_pretrained(folder)
    return folder, model


def expected_abswin(grid: torch.Tensor, window: int, out: tuple[int, int]) -> torch.Tensor:
    """Independently, for a grid of whole windows: the mean over its tiles, tiled; the rest, plain bicubic."""
    h, w, c = grid.shape
    win = grid.reshape(h // window, window, w // window, window, c).mean(dim=(0, 2))
    rest = (grid - win.repeat(h // window, w // window, 1)).permute(2, 0, 1)[None]
    up = F.interpolate(rest, size=out, mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
    return up + win.repeat(out[0] // window, out[1] // window, 1)


def load_strict(folder, img_size: int) -> ViTModel:
    """The user's side: a config for the new size beside the converted weights, then transformers' own strict
    check (it renames its v4 file keys on load): nothing missing, unexpected or mismatched."""
    vit_config(img_size).save_pretrained(folder)
    model, info = ViTModel.from_pretrained(folder, output_loading_info=True)
    assert all(not v for v in info.values()), info
    return model.eval()


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_an_unknown_checkpoint_names_its_candidates_and_the_flags(plain_vit, cli, tmp_path):
    # the ViT's patch embedding under a name no family knows (under its own name it is recognised: test_new_user.py)
    state = {k.replace("patch_embeddings", "stem"): v for k, v in load_file(plain_vit[0] / "model.safetensors").items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    message = one_line_error(cli("inspect", tmp_path / "model.safetensors"))
    assert "no position embedding recognised as any of" in message and "sam" in message and "vitdet" in message
    assert f"{KEY} [1, 197, {DIM}]" in message
    assert "--family" in message and "--key/--layout/--window" in message


def test_inspect_reads_the_named_tensor(plain_vit, cli):
    result = cli("inspect", plain_vit[0], *OVERRIDES, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["family"], report["format"], report["position_key"]) == ("generic", "override", KEY)
    assert (report["grid"], report["prefix_tokens"], report["window"]) == ("14x14", 1, "7x7")
    assert (report["patch_stride"], report["native_input"]) == (16, "224x224")  # stride read from the patch conv


def test_convert_loads_strict_into_the_vit_built_for_448(plain_vit, cli, tmp_path):
    folder, original = plain_vit
    result = cli("convert", folder, "-o", tmp_path / "out", "--img-size", 448, *OVERRIDES)
    assert result.exit_code == 0, result.output
    model = load_strict(tmp_path / "out", 448)
    source = original.embeddings.position_embeddings.detach()
    expected = expected_abswin(source[0, 1:].reshape(14, 14, DIM), 7, (28, 28))
    got = model.embeddings.position_embeddings.detach()
    assert torch.allclose(got[0, 1:].reshape(28, 28, DIM), expected, atol=1e-5)
    assert torch.equal(got[0, 0], source[0, 0])
    with torch.no_grad():
        assert model(torch.randn(1, 3, 448, 448)).last_hidden_state.shape == (1, 1 + 28 * 28, DIM)


def test_native_size_is_exact_through_the_library(plain_vit, tmp_path):
    folder, original = plain_vit
    overrides = Overrides.parse(key=KEY, layout="flat_cls", window="7")
    result = convert(folder, tmp_path / "out", 224, overrides=overrides)
    assert result.config is None  # we do not know what records the size in a config we do not know
    model = load_strict(tmp_path / "out", 224)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(x).last_hidden_state - original(x).last_hidden_state).abs().max() <= 1e-5


@pytest.mark.parametrize(("args", "message"), [
    (("--key", KEY, "--window", "7"), "missing --layout"),
    (("--key", "pos", "--layout", "flat_cls", "--window", "7"),
     f"'pos' is not in model.safetensors; tensors that look like position embeddings: {KEY}"),
    (("--key", KEY, "--layout", "nhwc", "--window", "7"), "a nhwc position tensor has shape [1, H, W, C], found [1, 197, 32]"),
    (("--key", KEY, "--layout", "flat", "--window", "7"), "197 position tokens do not form a square grid"),
    (("--key", KEY, "--layout", "flat_cls", "--window", "7x"), "cannot read size '7x'"),
])
def test_bad_overrides_fail_with_one_line(plain_vit, cli, args, message):
    assert message in one_line_error(cli("inspect", plain_vit[0], *args))


@pytest.mark.parametrize(("size", "message"), [
    ("480", "--img-size 480x480 is not a multiple of 112x112 (patch stride 16 x window 7x7); try 560x560"),
    ("1000", "not a multiple of 112x112"),
])
def test_a_grid_that_is_not_whole_windows_errors_and_writes_nothing(plain_vit, cli, tmp_path, size, message):
    result = cli("convert", plain_vit[0], "-o", tmp_path / "out.safetensors", "--img-size", size, *OVERRIDES)
    assert message in one_line_error(result)
    assert not (tmp_path / "out.safetensors").exists()


def test_key_and_layout_belong_to_the_generic_family(plain_vit, cli):
    message = one_line_error(cli("inspect", plain_vit[0], "--family", "sam", *OVERRIDES))
    assert "use --family generic" in message
    assert cli("inspect", plain_vit[0], "--family", "generic", *OVERRIDES).exit_code == 0
    error = one_line_error(cli("inspect", plain_vit[0], "--family", "generic"))
    assert "needs --key, --layout and --window; missing --key, --layout, --window" in error


def test_nchw_without_a_patch_conv_needs_the_stride(tmp_path, cli):
    grid = torch.randn(1, 16, 8, 12)
    save_file({"backbone.pos": grid, "backbone.proj": torch.randn(16, 16)}, str(tmp_path / "x.safetensors"))
    base = ("--key", "backbone.pos", "--layout", "nchw", "--window", "4")
    assert "pass --patch-stride" in one_line_error(cli("inspect", tmp_path / "x.safetensors", *base))
    result = cli("convert", tmp_path / "x.safetensors", "-o", tmp_path / "out.safetensors", "--img-size", "128x192", *base,
                 "--patch-stride", 8)
    assert result.exit_code == 0, result.output
    out = load_file(tmp_path / "out.safetensors")
    assert out["backbone.pos"].shape == (1, 16, 16, 24)
    expected = expected_abswin(grid[0].permute(1, 2, 0), 4, (16, 24))
    assert torch.allclose(out["backbone.pos"][0].permute(1, 2, 0), expected, atol=1e-5)
    assert out["backbone.proj"].shape == (16, 16)  # passed through


def test_an_ambiguous_checkpoint_lists_the_families_and_family_chooses(tmp_path, cli):
    state = {
        "image_encoder.pos_embed": torch.randn(1, 8, 8, DIM),
        "image_encoder.patch_embed.proj.weight": torch.randn(DIM, 3, 16, 16),
        "backbone.net.pos_embed": torch.randn(1, 197, DIM),
        "backbone.net.patch_embed.proj.weight": torch.randn(DIM, 3, 16, 16),
    }
    save_file(state, str(tmp_path / "both.safetensors"))
    message = one_line_error(cli("inspect", tmp_path / "both.safetensors"))
    assert "ambiguous" in message and "sam (segment-anything)" in message and "vitdet (detectron2)" in message
    assert "--family" in message
    assert inspect(tmp_path / "both.safetensors", family="vitdet").to_json()["position_key"] == "backbone.net.pos_embed"


def test_window_override_on_a_known_family(tmp_path):
    save_file(
        {"pos_embed": torch.randn(1, 64, 64, DIM), "patch_embed.proj.weight": torch.randn(DIM, 3, 16, 16)},
        str(tmp_path / "sam.safetensors"),
    )
    report = inspect(tmp_path / "sam.safetensors", overrides=Overrides(window=(16, 16))).to_json()
    assert (report["family"], report["window"]) == ("sam", "16x16")
    with pytest.raises(AbswinError, match="--patch-stride must be a positive"):
        Overrides.parse(patch_stride=0)


def test_a_safetensors_file_whose_header_length_starts_with_0x80_is_read_as_safetensors(tmp_path):
    """The header length is little-endian, so its first byte is the pickle marker 0x80 in 1 file of 32 (seen with a
    transformers ViT); such a file must still open lazily as safetensors."""
    path = tmp_path / "x.safetensors"
    for pad in range(256):
        save_file({"pos": torch.zeros(1, 4, 4, 8)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    report = inspect(path, overrides=Overrides(key="pos", layout="nhwc", window=(2, 2), patch_stride=4)).to_json()
    assert (report["container"], report["grid"]) == ("safetensors", "4x4")
