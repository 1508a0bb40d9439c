"""The in-memory API: ``convert_state_dict`` gives the very tensors the file route writes, for every family;
``interpolate_pos_embed`` edits a state dict in place for real timm models, as MAE's function of that name does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import tests.hiera_models as hm
from abswin_convert import convert, convert_state_dict, interpolate_pos_embed, resample_abswin_pos_embed
from abswin_convert.errors import AbswinError
from abswin_convert.families.overrides import Overrides
from abswin_convert.maths import absolute_win as aw
from abswin_convert.maths.resize import BICUBIC_ANTIALIAS
from abswin_convert.synthetic import structured_grid
from tests import test_sam, test_sam2, test_vitdet
from tests.random_weights import randomize


def _hiera_timm(folder):
    _, path = hm.save_timm(folder)
    return path, load_file(path), None


def _hiera_official(folder):
    _, path = hm.save_official(folder)
    return path, torch.load(path, weights_only=True)["model_state"], None


def _hiera_transformers(folder):
    _, path = hm.save_transformers(folder)
    return path, load_file(path / "model.safetensors"), json.loads((path / "config.json").read_text())


def _sam2(folder):
    _, path = test_sam2.save_native("sam2", folder)
    return path, torch.load(path, weights_only=True)["model"], None


def _sam(fmt):
    def build(folder):
        model = test_sam.plant_window_pattern(fmt, randomize(test_sam.build(fmt, 1024)))
        path = test_sam.save(fmt, model, folder)
        if fmt == "transformers":
            return path, load_file(path / "model.safetensors"), json.loads((path / "config.json").read_text())
        return path, (load_file(path) if fmt == "timm" else torch.load(path, weights_only=True)), None
    return build


def _vit(folder):
    path = folder / "vit.safetensors"
    save_file(randomize(test_vitdet.vit(), seed=2).state_dict(), str(path))
    return path, load_file(path), None


def _mae(folder):
    path = test_vitdet.save_mae(folder / "checkpoint-99.pth", randomize(test_vitdet.vit(global_pool="avg"), seed=3))
    return path, torch.load(path, weights_only=False)["model"], None


CASES = {  # name -> (builder, img_size, keyword arguments both routes take)
    "hiera-timm": (_hiera_timm, 448, {}),
    "hiera-timm-abswin": (_hiera_timm, "256x320", {"target": "timm-abswin", "global_size": 14}),
    "hiera-official": (_hiera_official, 256, {}),
    "hiera-transformers": (_hiera_transformers, 448, {}),
    "hiera-to-sam2": (_hiera_timm, 512, {"target": "sam2"}),
    "sam2": (_sam2, 512, {}),
    "sam2-refit": (_sam2, 512, {"global_size": 5}),
    "sam-segment-anything": (_sam("segment-anything"), 512, {}),
    "sam-transformers": (_sam("transformers"), 768, {}),
    "sam-timm": (_sam("timm"), "512x768", {}),
    "vit-timm": (_vit, 320, {"recipe": "tile"}),
    "mae": (_mae, 320, {"global_size": 14, "recipe": "tile"}),
    "generic": (_vit, 336, {"family": "generic", "key": "pos_embed", "layout": "flat_cls", "window": 7}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_convert_state_dict_gives_the_tensors_the_file_route_writes(name, tmp_path):
    build, img_size, kwargs = CASES[name]
    path, state, config = build(tmp_path)
    before = {k: v.clone() for k, v in state.items()}
    file_kwargs = {k: v for k, v in kwargs.items() if k not in ("key", "layout", "window", "recipe")}
    if "key" in kwargs:
        file_kwargs["overrides"] = Overrides.parse(kwargs["key"], kwargs["layout"], str(kwargs["window"]))
    if "recipe" in kwargs:
        file_kwargs["overrides"] = Overrides.parse(recipe=kwargs["recipe"])
    result = convert(path, tmp_path / "out.safetensors", img_size, **file_kwargs)
    written = load_file(result.output)

    converted = convert_state_dict(state, img_size, config=config, **kwargs)

    assert list(converted) == list(written)
    for key, value in written.items():
        assert converted[key].dtype == value.dtype and torch.equal(converted[key], value), key
    assert converted.notes == result.notes
    # a file tells MAE's training saves apart by their wrapper ({'model': ...}); a state dict has none
    assert converted.detection.family == result.detection.family and converted.detection.window == result.detection.window
    assert all(torch.equal(state[k], before[k]) for k in before), "the input state dict was modified"


def test_convert_state_dict_returns_the_updated_config(tmp_path):
    _, state, config = _hiera_transformers(tmp_path)
    converted = convert_state_dict(state, 448, config=config)
    assert converted.config["image_size"] == [448, 448]
    assert config["image_size"] == [224, 224]


@pytest.mark.parametrize("bad, message", [
    ({"model": {"pos_embed": torch.zeros(1)}}, "pass the state dict inside it (checkpoint['model'])"),
    ({"pos_embed": [1, 2]}, "state_dict['pos_embed'] is a list, not a tensor"),
    ({}, "the state dict is empty"),
    ({"weight": torch.zeros(3, 3)}, "state_dict: no position embedding recognised"),
])
def test_a_wrong_dict_is_refused_in_one_line(bad, message):
    with pytest.raises(AbswinError) as info:
        convert_state_dict(bad, 448)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_resample_abswin_pos_embed_keeps_the_window_pattern_and_is_the_identity_at_the_same_size():
    grid = torch.from_numpy(structured_grid((14, 14), 8, (7, 7), seed=1))
    posemb = torch.cat([torch.randn(1, 8), grid.reshape(-1, 8)]).unsqueeze(0)
    assert torch.equal(resample_abswin_pos_embed(posemb, (14, 14), (7, 7)), posemb)

    out = resample_abswin_pos_embed(posemb, (21, 28), (7, 7))
    assert out.shape == (1, 1 + 21 * 28, 8) and torch.equal(out[:, :1], posemb[:, :1])
    window, global_ = (torch.from_numpy(part) for part in aw.split(grid.numpy(), (7, 7)))
    expected = F.interpolate(global_.permute(2, 0, 1)[None], size=(21, 28), mode="bicubic", align_corners=False)
    expected = (expected[0].permute(1, 2, 0) + window.repeat(3, 4, 1)).float()
    torch.testing.assert_close(out[0, 1:].reshape(21, 28, 8), expected, rtol=0, atol=1e-6)


def mae_interpolate_pos_embed(model, checkpoint_model):
    """MAE's util/pos_embed.py as its README describes it: bicubic resize of the square grid to the model's."""
    pos = checkpoint_model["pos_embed"]
    extra = model.pos_embed.shape[-2] - model.patch_embed.num_patches
    old, new = int((pos.shape[-2] - extra) ** 0.5), int(model.patch_embed.num_patches ** 0.5)
    grid = pos[:, extra:].reshape(-1, old, old, pos.shape[-1]).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).flatten(1, 2)
    checkpoint_model["pos_embed"] = torch.cat([pos[:, :extra], grid], dim=1)


def logged(caplog) -> list[str]:
    """What interpolate_pos_embed said (INFO records of the ``abswin_convert`` logger), read and cleared."""
    lines = [r.getMessage() for r in caplog.records if r.name == "abswin_convert"]
    caplog.clear()
    return lines


def test_interpolate_pos_embed_on_a_plain_vit_is_maes_resize(caplog):
    caplog.set_level("INFO", logger="abswin_convert")
    state = randomize(test_vitdet.vit(224), seed=2).state_dict()
    model = test_vitdet.vit(320)
    reference = dict(state)
    mae_interpolate_pos_embed(model, reference)

    assert interpolate_pos_embed(model, state) is None
    # MAE resizes in float32, we in float64 rounded once: the same values to float32 precision
    torch.testing.assert_close(state["pos_embed"], reference["pos_embed"], rtol=1e-6, atol=1e-7)
    model.load_state_dict(state, strict=True)
    assert logged(caplog) == [
        "abswin-convert: pos_embed 14x14 -> 20x20 tokens by plain bicubic resize (the model has no windows, "
        "so no window pattern to keep)"
    ]


def test_interpolate_pos_embed_uses_absolute_win_for_timm_hiera(tmp_path, caplog):
    caplog.set_level("INFO", logger="abswin_convert")
    model_224, _ = hm.save_timm(tmp_path)
    state = model_224.state_dict()
    model = hm.timm_model(img_size=448)

    interpolate_pos_embed(model, state)

    expected = convert_state_dict(model_224.state_dict(), 448)
    assert torch.equal(state["pos_embed"], expected["pos_embed"])
    naive = aw.naive(hm.planted()[0].reshape(56, 56, -1).numpy(), (112, 112), BICUBIC_ANTIALIAS)
    assert not np.allclose(state["pos_embed"][0].reshape(112, 112, -1).numpy(), naive, atol=1e-3)
    model.load_state_dict(state, strict=True)
    assert logged(caplog) == ["abswin-convert: pos_embed 56x56 -> 112x112 tokens by absolute win (hiera, windows of 8x8 tokens)"]


def test_interpolate_pos_embed_fills_the_split_parameters_of_timm_abswin_hiera(tmp_path, caplog):
    caplog.set_level("INFO", logger="abswin_convert")
    model_224, _ = hm.save_timm(tmp_path)
    state = model_224.state_dict()
    model = hm.timm_model(abs_win_pos_embed=True, global_pos_size=(14, 14), img_size=448)

    interpolate_pos_embed(model, state)

    model.load_state_dict(state, strict=True)
    assert state["pos_embed"].shape == (1, hm.EMBED_DIM, 14, 14) and state["pos_embed_win"].shape == (1, hm.EMBED_DIM, 8, 8)
    assert logged(caplog)[0].endswith("split into pos_embed + pos_embed_win)")


def test_interpolate_pos_embed_uses_absolute_win_for_timm_sam_vit(caplog):
    caplog.set_level("INFO", logger="abswin_convert")
    source = test_sam.plant_window_pattern("timm", randomize(test_sam.timm_model(1024)))
    state = source.state_dict()
    model = test_sam.timm_model(512)

    interpolate_pos_embed(model, state)

    assert torch.equal(state["pos_embed"], convert_state_dict(source.state_dict(), 512)["pos_embed"])
    model.load_state_dict(state, strict=True)
    assert "pos_embed 64x64 -> 32x32 tokens by absolute win (sam, windows of 14x14 tokens)" in logged(caplog)[0]


def test_interpolate_pos_embed_at_the_models_own_size_changes_nothing_and_says_nothing(caplog):
    caplog.set_level("INFO", logger="abswin_convert")
    model = test_vitdet.vit(224)
    state = model.state_dict()
    same = dict(state)
    interpolate_pos_embed(model, state)
    assert all(state[k] is same[k] for k in same) and logged(caplog) == []
    hiera = hm.timm_model()
    state = hiera.state_dict()
    interpolate_pos_embed(hiera, state)
    assert torch.equal(state["pos_embed"], hiera.pos_embed) and "pos_embed_win" not in state
    assert logged(caplog) == []



def test_untouched_tensors_are_the_callers_own_under_a_prefix_too(tmp_path):
    """Only the position embedding is new; every other tensor is passed through as the caller's object (never
    copied, not even to read it), under its own prefixed name."""
    model, _ = hm.save_timm(tmp_path)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    converted = convert_state_dict(state, 448)
    assert list(converted) == list(state)
    assert converted["module.pos_embed"] is not state["module.pos_embed"]
    assert all(converted[k] is v for k, v in state.items() if k != "module.pos_embed")
