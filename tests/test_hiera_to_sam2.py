"""Hiera -> SAM2 image-encoder trunk (the open question of facebookresearch/hiera#45).

Every Hiera format converts with ``--to sam2`` into ``image_encoder.trunk.*`` keys that ``sam2``'s own ``Hiera``
loads with ``strict=True``. Then the question whether the SAM2 trunk computes what the Hiera computed:

- yes at 224, to float rounding, when SAM2's ``window_spec`` is ``(8, 4, 14, 7)`` (stage-3/4 windows as large as
  those stages' grids, i.e. global) and ``global_att_blocks=()``: mask-unit attention over 8x8 (then 4x4) token
  units is window attention over the same tokens in another order, and Hiera's q-pool is SAM2's 2x2 max pool;
- not with SAM2-L's ``window_spec`` ``(8, 4, 16, 8)``: the 14x14 stage-3 grid is zero-padded to 16x16 and the
  padded tokens enter attention as keys;
- not by naming Hiera's global blocks in ``global_att_blocks``: SAM2 cannot make a pooling block global (its
  unpartition divides by ``window_size // q_stride``), and Hiera's first stage-4 block is exactly that;
- at 448 the windows must grow with the grid, ``(8, 4, 28, 14)``; SAM2's stock ``(8, 4, 14, 7)`` makes stages 3-4
  windowed where Hiera attends globally.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from sam2.modeling.backbones.hieradet import Hiera as Sam2Trunk

from abswin_convert import convert, inspect
from abswin_convert.maths.absolute_win import relative_error
from tests import hiera_models as hm

PREFIX = "image_encoder.trunk."
FORMATS = ["official", "timm", "transformers"]
SAVERS = {"official": hm.save_official, "timm": hm.save_timm, "transformers": hm.save_transformers}
TOLERANCE = 1e-5


def sam2_trunk(window_spec=(8, 4, 14, 7), global_att_blocks=(), background=(56, 56)) -> Sam2Trunk:
    return Sam2Trunk(
        embed_dim=hm.EMBED_DIM, num_heads=1, stages=hm.STAGES, window_spec=window_spec,
        global_att_blocks=global_att_blocks, window_pos_embed_bkg_spatial_size=background,
    ).eval()


def trunk_state(path) -> dict[str, torch.Tensor]:
    """The trunk's own keys from a converted file, read with the upstream readers (not ours)."""
    if str(path).endswith(".safetensors"):
        state = load_file(path)
    else:
        saved = torch.load(path, weights_only=True)
        assert list(saved) == ["model"]
        state = saved["model"]
    assert state and all(k.startswith(PREFIX) for k in state)
    return {k[len(PREFIX):]: v for k, v in state.items()}


def loaded_trunk(path, **trunk_args) -> Sam2Trunk:
    model = sam2_trunk(**trunk_args)
    model.load_state_dict(trunk_state(path), strict=True)
    return model


def image(size: int) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size))


@torch.no_grad()
def sam2_stages(trunk: Sam2Trunk, x: torch.Tensor) -> list[torch.Tensor]:
    return [f.permute(0, 2, 3, 1) for f in trunk(x)]


@torch.no_grad()
def hiera_stages(model, fmt: str, x: torch.Tensor) -> list[torch.Tensor]:
    """Per-stage features ``[B, H, W, C]`` in spatial order, from each runtime's own API."""
    if fmt == "official":
        return model(x, return_intermediates=True)[1]
    if fmt == "timm":
        return model.forward_intermediates(x, intermediates_only=True, output_fmt="NHWC")
    return list(model(x, output_hidden_states=True).reshaped_hidden_states[1:])


def stage_differences(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[float]:
    assert [t.shape for t in a] == [t.shape for t in b]
    return [float((p - q).abs().max()) for p, q in zip(a, b)]


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """The official Hiera and its SAM2 trunk (``--global-size full``) as a ``{'model': ...}`` .pt."""
    folder = tmp_path_factory.mktemp("official")
    model, source = hm.save_official(folder)
    out = folder / "trunk.pt"
    convert(source, out, 224, target="sam2", fmt="pt")
    return model, out


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_hiera_format_becomes_a_strict_sam2_trunk_that_reproduces_its_stage_features(tmp_path, cli, fmt):
    original, source = SAVERS[fmt](tmp_path)
    out = tmp_path / ("trunk.safetensors" if fmt == "timm" else "trunk.pt")
    args = ["--format", "pt"] if fmt != "timm" else []
    result = cli("convert", source, "-o", out, "--img-size", 224, "--to", "sam2", *args)
    assert result.exit_code == 0, result.output
    assert "stages=(1, 1, 2, 1)" in result.output and "window_spec=(8, 4, 14, 7)" in result.output
    assert "window_pos_embed_bkg_spatial_size=(56, 56)" in result.output
    assert "dropped" in result.output  # the classifier head and final norm have no place in a trunk
    trunk = loaded_trunk(out)
    x = image(224)
    diffs = stage_differences(hiera_stages(original, fmt, x), sam2_stages(trunk, x))
    assert max(diffs) <= TOLERANCE, diffs


def test_global_size_refit_loads_with_that_background_and_reports_the_true_residual(tmp_path):
    original, source = hm.save_official(tmp_path)
    result = convert(source, tmp_path / "trunk.pt", 1024, target="sam2", global_size="7x7", fmt="pt")
    trunk = loaded_trunk(result.output, background=(7, 7))
    # Independently: the source's global part is the embedding minus its 8x8 tile mean, tiled.
    grid = original.pos_embed.detach().reshape(56, 56, -1).double()
    window = grid.reshape(7, 8, 7, 8, -1).mean(dim=(0, 2))
    global_part = grid - window.repeat(7, 7, 1)
    with torch.no_grad():
        composed = trunk._get_pos_embed((56, 56))[0].double()
    got = relative_error((composed - window.repeat(7, 7, 1)).numpy(), global_part.numpy())
    assert got == pytest.approx(float(result.metadata["abswin.residual"]), rel=1e-3)
    assert 0 < got < 0.5


def test_sam2_l_window_spec_pads_stage_3_and_breaks_the_equivalence(official):
    model, out = official
    x = image(224)
    diffs = stage_differences(hiera_stages(model, "official", x), sam2_stages(loaded_trunk(out, window_spec=(8, 4, 16, 8)), x))
    assert max(diffs[:2]) <= TOLERANCE, diffs  # stages 1-2: 8x8 and 4x4 windows, as Hiera's mask units
    assert min(diffs[2:]) > 1e-3, diffs  # 14x14 padded to 16x16: zero tokens join the attention


def test_sam2_cannot_make_hiera_s_pooling_global_block_global(official):
    _, out = official
    first_of_stage_4 = sum(hm.STAGES[:3])  # Hiera: global attention with q-pool; SAM2: needs a window
    trunk = loaded_trunk(out, global_att_blocks=(first_of_stage_4,))
    with pytest.raises(ZeroDivisionError):
        trunk(image(224))


def test_at_448_windows_must_grow_with_the_grid(official):
    model, out = official
    grown = loaded_trunk(out, window_spec=(8, 4, 28, 14))
    stock = loaded_trunk(out, window_spec=(8, 4, 14, 7))
    hiera_448 = hm.official_model(input_size=(448, 448))
    hiera_448.load_state_dict(model.state_dict() | {"pos_embed": _embedding_at(grown, 112)}, strict=True)
    x = image(448)
    expected = hiera_stages(hiera_448, "official", x)
    assert max(stage_differences(expected, sam2_stages(grown, x))) <= TOLERANCE
    stock_diffs = stage_differences(expected, sam2_stages(stock, x))
    assert max(stock_diffs[:2]) <= TOLERANCE and min(stock_diffs[2:]) > 1e-3, stock_diffs


def _embedding_at(trunk: Sam2Trunk, side: int) -> torch.Tensor:
    """What the SAM2 runtime adds at a ``side x side`` token grid, flat for the official Hiera."""
    with torch.no_grad():
        return trunk._get_pos_embed((side, side)).reshape(1, side * side, -1)


def test_timm_abswin_source_is_recomposed_for_sam2_s_plain_bicubic(tmp_path):
    """timm's abswin Hiera resizes with antialias, SAM2 without: the parts are re-split, not copied."""
    source_model = hm.timm_model(abs_win_pos_embed=True, global_pos_size=(14, 14))
    with torch.no_grad():
        source_model.pos_embed.normal_(std=0.02)
    source = tmp_path / "abswin.safetensors"
    save_file({k: v.contiguous() for k, v in source_model.state_dict().items()}, source)
    result = convert(source, tmp_path / "trunk.safetensors", 224, target="sam2")
    assert result.detection.spelling == "timm-abswin"
    trunk = loaded_trunk(result.output)
    x = image(224)
    assert max(stage_differences(hiera_stages(source_model, "timm", x), sam2_stages(trunk, x))) <= TOLERANCE


def test_video_hiera_has_no_sam2_target_and_nothing_is_written(tmp_path, cli):
    _, source = hm.save_official_video(tmp_path)
    out = tmp_path / "trunk.pt"
    result = cli("convert", source, "-o", out, "--img-size", 224, "--to", "sam2")
    assert result.exit_code == 2
    assert "not available for hiera (official-video)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_inspect_offers_sam2_for_every_hiera_image_format(tmp_path):
    for fmt, save in SAVERS.items():
        (tmp_path / fmt).mkdir()
        _, source = save(tmp_path / fmt)
        report = inspect(source).to_json()
        assert (report["family"], report["format"]) == ("hiera", fmt)
        assert "sam2" in report["targets"]
