"""SAM in its three formats (segment-anything .pth, transformers SamModel, timm samvit), converted through the CLI
and loaded with strict=True into the real upstream models built for the target size."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from transformers import SamConfig, SamModel

from abswin_convert import convert, inspect
from abswin_convert.errors import AbswinError
from abswin_convert.synthetic import structured_grid
from tests.random_weights import randomize

DIM, HEADS, DEPTH, GLOBAL = 32, 2, 2, (1,)  # block 1 attends globally, block 0 in 14x14 windows
FORMATS = ["segment-anything", "transformers", "timm"]
POS_KEY = {"segment-anything": "image_encoder.pos_embed", "transformers": "vision_encoder.pos_embed", "timm": "pos_embed"}


def sa_model(img_size: int = 1024, window: int = 14) -> Sam:
    """segment-anything's Sam with tiny dims, built like sam_model_registry's builders but for ``img_size``."""
    g = img_size // 16
    encoder = ImageEncoderViT(
        img_size=img_size, patch_size=16, embed_dim=DIM, depth=DEPTH, num_heads=HEADS, mlp_ratio=2, out_chans=16,
        qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
        global_attn_indexes=GLOBAL, window_size=window,
    )
    prompt = PromptEncoder(embed_dim=16, image_embedding_size=(g, g), input_image_size=(img_size, img_size), mask_in_chans=4)
    decoder = MaskDecoder(
        transformer_dim=16, transformer=TwoWayTransformer(depth=1, embedding_dim=16, mlp_dim=32, num_heads=2),
        num_multimask_outputs=3, iou_head_depth=2, iou_head_hidden_dim=16,
    )
    return Sam(encoder, prompt, decoder)


def hf_config(img_size: int = 1024, window: int = 14) -> SamConfig:
    return SamConfig(
        vision_config=dict(hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS, global_attn_indexes=list(GLOBAL),
                           output_channels=16, mlp_dim=64, image_size=img_size, window_size=window),
        prompt_encoder_config=dict(hidden_size=16, mask_input_channels=4, image_size=img_size),
        mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_hidden_layers=1, num_attention_heads=2, iou_head_hidden_dim=16),
    )


def timm_model(img_size: int | tuple[int, int] = 1024, window: int = 14) -> torch.nn.Module:
    return timm.create_model("samvit_base_patch16", pretrained=False, img_size=img_size, embed_dim=DIM, depth=DEPTH,
                             num_heads=HEADS, global_attn_indexes=GLOBAL, neck_chans=16, window_size=window).eval()


def build(fmt: str, img_size: int | tuple[int, int], window: int = 14) -> torch.nn.Module:
    if fmt == "segment-anything":
        return sa_model(img_size, window).eval()
    if fmt == "transformers":
        return SamModel(hf_config(img_size, window)).eval()
    return timm_model(img_size, window)


@torch.no_grad()
def encode(fmt: str, model: torch.nn.Module, size: int, seed: int = 0) -> torch.Tensor:
    """The image encoder's output (neck included) on a fixed random image."""
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    if fmt == "segment-anything":
        return model.image_encoder(x)
    if fmt == "transformers":
        return model.get_image_embeddings(x)
    return model.forward_features(x)


def position(fmt: str, model: torch.nn.Module) -> torch.Tensor:
    """The model's ``pos_embed`` as ``[H, W, C]``."""
    module = {"segment-anything": lambda m: m.image_encoder, "transformers": lambda m: m.vision_encoder, "timm": lambda m: m}[fmt]
    return module(model).pos_embed.detach()[0]


def plant_window_pattern(fmt: str, model: torch.nn.Module) -> torch.nn.Module:
    """Give the embedding what trained SAM embeddings show: a 14-periodic pattern over a smooth field."""
    with torch.no_grad():
        position(fmt, model).copy_(torch.from_numpy(structured_grid((64, 64), DIM, (14, 14), seed=3)) * 2)
    return model


def save(fmt: str, model: torch.nn.Module, folder: Path) -> Path:
    """Save ``model`` the way its library publishes checkpoints."""
    if fmt == "segment-anything":
        path = folder / "sam_vit_tiny.pth"
        torch.save(model.state_dict(), path)  # the official release: a flat state dict, no wrapper
    elif fmt == "transformers":
        path = folder / "sam-tiny"
        model.save_pretrained(path)
    else:
        path = folder / "model.safetensors"
        save_file(model.state_dict(), str(path))
    return path


def load_converted(fmt: str, out: Path, size: int | tuple[int, int], window: int = 14) -> torch.nn.Module:
    """The upstream model built for ``size``, loaded strictly from a converted output folder. transformers
    leaves tied weights out of its files, so there its own loader is the strict check: nothing missing,
    unexpected or mismatched."""
    if fmt == "transformers":
        model, info = SamModel.from_pretrained(out, output_loading_info=True)
        assert all(not v for v in info.values()), info
        return model.eval()
    model = build(fmt, size, window)
    model.load_state_dict(load_file(out / "model.safetensors"), strict=True)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """``saved(fmt)``: (original model at 1024, the path it was saved to natively), built once per format."""
    return saved_models(tmp_path_factory)


def saved_models(tmp_path_factory):
    """What the ``saved`` fixture gives (tests/test_window_change.py takes it too)."""
    cache: dict[str, tuple[torch.nn.Module, Path]] = {}

    def get(fmt: str) -> tuple[torch.nn.Module, Path]:
        if fmt not in cache:
            model = plant_window_pattern(fmt, randomize(build(fmt, 1024)))
            cache[fmt] = model, save(fmt, model, tmp_path_factory.mktemp(fmt))
        return cache[fmt]

    return get


def cells(h: int, w: int, window: int = 14) -> torch.Tensor:
    """In-window position (row-major, 0..window**2-1) of every token of an h x w grid, windows from the top-left."""
    return ((torch.arange(h) % window)[:, None] * window + (torch.arange(w) % window)[None, :]).reshape(-1)


def window_part(grid: torch.Tensor, window: int = 14) -> torch.Tensor:
    """Each in-window position's mean over every token holding it, partial edge tiles included: [window**2, C]."""
    h, w, c = grid.shape
    src = cells(h, w, window)
    sums = torch.zeros(window * window, c, dtype=torch.float64).index_add_(0, src, grid.reshape(-1, c).double())
    return sums / torch.bincount(src, minlength=window * window)[:, None]


def tiled(win: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return win[cells(*size)].reshape(*size, -1).float()


def reference(grid: torch.Tensor, out: tuple[int, int]) -> torch.Tensor:
    """Absolute win written out independently: window part tiled, plus a plain bicubic resize of what is left."""
    win = window_part(grid)
    rest = grid - tiled(win, tuple(grid.shape[:2]))
    up = F.interpolate(rest.permute(2, 0, 1)[None], size=out, mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
    return up + tiled(win, out)


@pytest.mark.parametrize("fmt", FORMATS)
def test_inspect_recognises_format_grid_window_and_global_blocks(saved, cli, fmt):
    _, path = saved(fmt)
    result = cli("inspect", path, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["family"], report["format"], report["layout"]) == ("sam", fmt, "nhwc")
    assert report["position_key"] == POS_KEY[fmt]
    geometry = (report["grid"], report["window"], report["patch_stride"], report["native_input"])
    assert geometry == ("64x64", "14x14", 16, "1024x1024")
    assert report["details"]["global_blocks"] == "[1]"
    assert report["targets"] == ["baked"] and report["resize"] == "bicubic"
    text = cli("inspect", path).stdout
    assert f"sam ({fmt} format)" in text and "window 14x14" in text


@pytest.mark.parametrize("fmt", FORMATS)
def test_native_size_leaves_the_image_encoder_unchanged(saved, cli, tmp_path, fmt):
    original, path = saved(fmt)
    result = cli("convert", path, "-o", tmp_path / "out", "--img-size", 1024)
    assert result.exit_code == 0, result.output
    model = load_converted(fmt, tmp_path / "out", 1024)
    assert torch.allclose(position(fmt, model), position(fmt, original), atol=1e-6)
    expected = encode(fmt, original, 1024)
    assert (encode(fmt, model, 1024) - expected).abs().max() <= 1e-4 * expected.abs().max()


@pytest.mark.parametrize("size", [512, 768, 1536])
@pytest.mark.parametrize("fmt", FORMATS)
def test_other_sizes_load_strict_with_absolute_win_embedding(saved, cli, tmp_path, fmt, size):
    original, path = saved(fmt)
    result = cli("convert", path, "-o", tmp_path / "out", "--img-size", size, "--json")
    assert result.exit_code == 0, result.output
    model = load_converted(fmt, tmp_path / "out", size)
    g = size // 16
    got = position(fmt, model)
    expected = reference(position(fmt, original), (g, g))
    assert got.shape == (g, g, DIM)
    assert (got - expected).abs().max() <= 1e-5
    naive = F.interpolate(position(fmt, original).permute(2, 0, 1)[None], size=(g, g), mode="bicubic")[0].permute(1, 2, 0)
    assert (got - naive).norm() > 0.3 * got.norm()  # the window pattern is kept, not stretched
    notes = json.loads(result.stdout)["notes"]
    assert any(f"127 -> {2 * g - 1} rows" in n for n in notes), notes


@pytest.mark.parametrize("fmt", FORMATS)
def test_resized_tables_match_sams_own_get_rel_pos(saved, cli, tmp_path, fmt):
    """A model at 768 with the converted tables computes what the same model computes from the 1024 tables,
    which its own get_rel_pos resizes on the fly."""
    original, path = saved(fmt)
    assert cli("convert", path, "-o", tmp_path / "out", "--img-size", 768).exit_code == 0
    converted = load_converted(fmt, tmp_path / "out", 768)
    runtime_resized = load_converted(fmt, tmp_path / "out", 768)
    source_state = original.state_dict()
    tables = [k for k, v in converted.state_dict().items() if k.endswith(("rel_pos_h", "rel_pos_w")) and v.shape[0] == 95]
    assert len(tables) == 2 * len(GLOBAL)
    for key in tables:  # put the 127-row source tables back; the runtime interpolates them itself
        module_path, name = key.rsplit(".", 1)
        assert source_state[key].shape[0] == 127
        setattr(runtime_resized.get_submodule(module_path), name, torch.nn.Parameter(source_state[key].clone()))
    expected = encode(fmt, runtime_resized, 768)
    assert (encode(fmt, converted, 768) - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_segment_anything_pth_output_loads_with_torch_load(saved, cli, tmp_path):
    """--format pt keeps the official flat .pth form, read the way sam_model_registry's builders read it."""
    _, path = saved("segment-anything")
    assert cli("convert", path, "-o", tmp_path / "out", "--img-size", 768, "--format", "pt").exit_code == 0
    state = torch.load(tmp_path / "out" / path.name, weights_only=True)
    sa_model(768).load_state_dict(state, strict=True)


def test_transformers_folder_gets_config_for_the_new_size(saved, cli, tmp_path):
    _, path = saved("transformers")
    assert cli("convert", path, "-o", tmp_path / "out", "--img-size", 768).exit_code == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["vision_config"]["image_size"] == 768
    assert config["prompt_encoder_config"]["image_size"] == 768
    assert config["prompt_encoder_config"]["image_embedding_size"] == 48
    model = load_converted("transformers", tmp_path / "out", 768)
    assert model.vision_encoder.pos_embed.shape == (1, 48, 48, DIM)
    assert encode("transformers", model, 768).shape == (1, 16, 48, 48)


def test_timm_takes_a_non_square_size(saved, tmp_path):
    original, path = saved("timm")
    result = convert(path, tmp_path / "out.safetensors", "512x768")
    model = timm_model((512, 768))
    model.load_state_dict(load_file(tmp_path / "out.safetensors"), strict=True)
    assert model.pos_embed.shape == (1, 32, 48, DIM)
    assert torch.allclose(model.pos_embed[0], reference(original.pos_embed.detach()[0], (32, 48)), atol=1e-5)
    assert (model.blocks[1].attn.rel_pos_h.shape[0], model.blocks[1].attn.rel_pos_w.shape[0]) == (63, 95)
    assert result.metadata["abswin.img_size"] == "512x768"


@pytest.mark.parametrize("fmt", FORMATS)
def test_global_size_fits_a_small_global_part_and_reports_its_residual(saved, tmp_path, fmt):
    original, path = saved(fmt)
    result = convert(path, tmp_path / "out.safetensors", 1024, global_size="8x8")
    residual = float(result.metadata["abswin.residual"])
    grid = position(fmt, original)
    global_part = grid - tiled(window_part(grid), (64, 64))
    baked = load_file(tmp_path / "out.safetensors")[POS_KEY[fmt]][0]
    # at the native size the only error is what an 8x8 grid cannot express of the global part
    assert 0.05 < residual < 1
    assert abs(float((baked - grid).norm() / global_part.norm()) - residual) < 1e-3
    assert result.metadata["abswin.global_size"] == "8x8"


@pytest.mark.parametrize(("fmt", "size", "message"), [
    ("timm", "1000", "not a multiple of 16x16"),
    ("segment-anything", "512x768", "square models only"),
    ("transformers", "768x512", "square models only"),
])
def test_bad_sizes_fail_with_one_line_and_write_nothing(saved, cli, tmp_path, fmt, size, message):
    _, path = saved(fmt)
    result = cli("convert", path, "-o", tmp_path / "out", "--img-size", size)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_nhwc_embedding_without_its_patch_embedding_is_not_claimed(tmp_path):
    save_file(
        {"pos_embed": torch.zeros(1, 8, 8, 16), "patch_embed.proj.weight": torch.zeros(32, 3, 16, 16)},
        str(tmp_path / "x.safetensors"),
    )
    with pytest.raises(AbswinError, match=r"no position embedding recognised.*pos_embed \[1, 8, 8, 16\].*--key"):
        inspect(tmp_path / "x.safetensors").to_json()


@pytest.mark.parametrize("fmt", FORMATS)
def test_output_records_provenance(saved, tmp_path, fmt):
    _, path = saved(fmt)
    convert(path, tmp_path / "out.safetensors", 768)
    with safe_open(tmp_path / "out.safetensors", "pt") as f:
        meta = f.metadata()
    assert meta["abswin.family"] == "sam" and meta["abswin.format"] == fmt
    assert meta["abswin.img_size"] == "768x768" and meta["abswin.window"] == "14x14" and meta["abswin.resize"] == "bicubic"
