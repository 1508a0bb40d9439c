"""``abswin-convert finetune``: a few steps at 128 px from the shipped 64 px example, naive or absolute win."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

from abswin_convert.api import convert
from abswin_convert.demo import example_path
from abswin_convert.errors import AbswinError
from abswin_convert.evaluation.eval import run_eval
from abswin_convert.evaluation.finetune import run_finetune, start_model
from abswin_convert.io.checkpoint import open_checkpoint
from abswin_convert.io.provenance import Provenance
from abswin_convert.maths import absolute_win as aw
from abswin_convert.maths.grid import to_grid
from abswin_convert.maths.resize import BICUBIC_ANTIALIAS
from tests.hooks_support import make_idx_folder, read_json

STEPS = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return f"fashion-mnist:{make_idx_folder(tmp_path_factory.mktemp('fashion'))}"


@pytest.fixture(scope="module")
def source_state():
    ckpt = open_checkpoint(example_path())
    return {k: ckpt.tensor(k).float64() for k in ckpt.keys()}


def test_abswin_finetune_trains_window_and_global_apart(tmp_path, data, source_state):
    out = tmp_path / "ft"
    report = run_finetune(example_path(), data, 128, STEPS, "abswin", out, lr=1e-3, batch_size=16, device="cpu", eval_limit=100)
    state = open_checkpoint(out / "model.safetensors")
    window, global_ = state.tensor("pos_embed_win").float64(), state.tensor("pos_embed").float64()
    assert tuple(window.shape) == (1, 16, 8, 8) and tuple(global_.shape) == (1, 16, 16, 16)
    # Both parts started from the split of the learned embedding and both moved.
    start_window, start_global = aw.split(to_grid(source_state["pos_embed"], "flat").grid, (8, 8))
    assert not np.allclose(to_grid(window, "nchw").grid, start_window)
    assert not np.allclose(to_grid(global_, "nchw").grid, start_global)
    assert report["steps"] == STEPS and report["images"] == 100 and report["train_loss"] > 0
    config = read_json(out / "config.json")
    assert config["model_args"]["abs_win_pos_embed"] is True and config["model_args"]["global_pos_size"] == [16, 16]
    assert config["pretrained_cfg"]["input_size"] == [1, 128, 128]
    provenance = Provenance.from_metadata(state.metadata).entries()
    assert provenance["finetune.pos"] == "abswin" and provenance["img_size"] == "128x128"
    # The output rebuilds from its own config and scores what finetune reported.
    again = run_eval(out, data, 128, "cpu", limit=100)
    assert again["top1"] == report["top1"] and again["loss"] == pytest.approx(report["loss"], rel=1e-5)


def test_naive_finetune_writes_a_plain_embedding(tmp_path, data):
    out = tmp_path / "ft"
    run_finetune(example_path(), data, 128, STEPS, "naive", out, batch_size=16, device="cpu", eval_limit=50)
    state = open_checkpoint(out / "model.safetensors")
    assert "pos_embed_win" not in state and tuple(state.shape("pos_embed")) == (1, 32 * 32, 16)
    assert run_eval(out, data, 128, "cpu", limit=50)["images"] == 50


def test_starting_points_match_convert_and_the_naive_resize(tmp_path, source_state):
    """Zero steps: the abswin start is the baked conversion; the naive start is timm's resize of the grid."""
    baked = convert(example_path(), tmp_path / "baked", 128, target="baked")
    x = torch.randn(4, 1, 128, 128, generator=torch.Generator().manual_seed(0))
    abswin = start_model(example_path(), 128, "abswin")
    from abswin_convert.evaluation.classifier import load_classifier

    baked_model = load_classifier(baked.output.parent, 128)
    with torch.no_grad():
        assert torch.allclose(abswin(x), baked_model(x), atol=1e-5)
    naive = start_model(example_path(), 128, "naive")
    expected = BICUBIC_ANTIALIAS.apply(to_grid(source_state["pos_embed"], "flat").grid, (32, 32)).reshape(1, -1, 16)
    assert torch.allclose(naive.model.pos_embed.detach(), torch.from_numpy(expected).float(), atol=1e-6)


def test_existing_output_is_kept_without_force(tmp_path, data):
    out = tmp_path / "ft"
    (out).mkdir()
    (out / "model.safetensors").write_bytes(b"keep me")
    with pytest.raises(AbswinError, match="--force"):
        run_finetune(example_path(), data, 128, 1, "abswin", out, device="cpu")
    assert (out / "model.safetensors").read_bytes() == b"keep me"


def test_naive_from_a_split_checkpoint_is_refused(tmp_path, data):
    run_finetune(example_path(), data, 128, 0, "abswin", tmp_path / "split", device="cpu", eval_limit=10)
    with pytest.raises(AbswinError, match="already split"):
        start_model(tmp_path / "split", 128, "naive")
    # abswin from a split checkpoint keeps its parts as they are
    again = start_model(tmp_path / "split", 128, "abswin")
    assert tuple(again.model.pos_embed_win.shape) == (1, 16, 8, 8)


def test_size_that_is_not_whole_windows_is_refused():
    with pytest.raises(AbswinError, match="multiple of"):
        start_model(example_path(), 100, "abswin")


def test_cli_finetune_json(tmp_path, data):
    out = tmp_path / "ft"
    done = subprocess.run(
        ["abswin-convert", "finetune", str(example_path()), "--data", data, "--img-size", "128", "--steps", "2",
         "--pos", "abswin", "-o", str(out), "--batch-size", "8", "--eval-limit", "20", "--device", "cpu", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["steps"] == 2 and report["images"] == 20 and report["output"] == str(out)
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
