"""The hook API: ``run_hook(spec, checkpoint_path, options) -> dict`` for built-in and user hooks."""

from __future__ import annotations

import pytest

from abswin_convert.api import convert
from abswin_convert.demo import example_path
from abswin_convert.errors import AbswinError
from abswin_convert.evaluation.hooks import run_hook
from abswin_convert.io.checkpoint import open_checkpoint
from abswin_convert.io.safetensors_writer import OutputTensor, write_safetensors
from tests.hooks_support import make_idx_folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return f"fashion-mnist:{make_idx_folder(tmp_path_factory.mktemp('fashion'))}"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The example converted to 128 px, both ways, as folders with config.json."""
    out = tmp_path_factory.mktemp("converted")
    split = convert(example_path(), out / "split", 128, target="timm-abswin")
    baked = convert(example_path(), out / "baked", 128, target="baked")
    return {"split": split.output.parent, "baked": baked.output.parent}


def test_eval_hook_takes_the_size_from_the_conversion(converted, data):
    metrics = run_hook("eval", converted["baked"], {"data": data, "limit": 40, "device": "cpu"})
    assert metrics["img_size"] == 128 and metrics["images"] == 40 and 0 <= metrics["top1"] <= 1


def test_verify_hook_on_a_split_output(converted):
    metrics = run_hook("verify", converted["split"] / "model.safetensors", {"source": str(example_path())})
    assert (metrics["ok"], metrics["verdict"]) == (True, "verified"), metrics
    assert metrics["native_max_abs_error"] < 1e-5 and metrics["changes"]["at_native_vs_source"] < 1e-5
    assert metrics["runtime"].startswith("timm ") and metrics["img_size"] == "128x128"


def test_verify_hook_reports_a_broken_window_part(converted, tmp_path):
    """A tampered window part still loads, but is not what the source converts to: the verdict is failed."""
    ckpt = open_checkpoint(converted["split"])
    tensors = []
    for key in ckpt.keys():
        value = ckpt.tensor(key)
        raw = value.raw + 0.01 if key == "pos_embed_win" else value.raw  # float32 in this checkpoint
        tensors.append(OutputTensor(key, value.dtype, value.shape, raw))
    broken = tmp_path / "broken"
    write_safetensors(broken / "model.safetensors", tensors, ckpt.metadata)
    (broken / "config.json").write_bytes((converted["split"] / "config.json").read_bytes())
    metrics = run_hook("verify", broken, {"img_size": 128, "source": str(example_path())})
    assert (metrics["ok"], metrics["verdict"]) == (False, "failed") and metrics["native_max_abs_error"] > 1e-3
    assert any(p.startswith("native size") for p in metrics["problems"])
    assert any(p.startswith("position tensors") and "pos_embed_win" in p for p in metrics["problems"])


def test_verify_hook_reports_a_size_mismatch(converted):
    metrics = run_hook("verify", converted["baked"], {"img_size": 256, "source": str(example_path())})
    assert metrics["verdict"] == "failed" and metrics["checks"]["strict load"]["status"] == "failed"
    assert "do not load at 256x256" in metrics["problems"][0]


def test_finetune_hook_writes_beside_the_checkpoint(converted, data):
    metrics = run_hook("finetune", converted["baked"], {"data": data, "steps": 2, "pos": "abswin", "batch_size": 8,
                                                         "eval_limit": 20, "device": "cpu"})
    assert metrics["output"] == str(converted["baked"] / "finetuned-abswin")
    assert open_checkpoint(metrics["output"]).shape("pos_embed_win") == (1, 16, 8, 8)


def test_dotted_user_hook(converted):
    metrics = run_hook("tests.hooks_support:count_tensors", converted["split"], {"label": "mine"})
    expected = len(open_checkpoint(converted["split"]).keys())
    assert metrics == {"tensors": expected, "label": "mine"}


@pytest.mark.parametrize(
    "spec, options, message",
    [
        ("nonsense", {}, "unknown hook"),
        ("tests.no_such_module:f", {}, "cannot import"),
        ("tests.hooks_support:missing", {}, "no function"),
        ("tests.hooks_support:not_a_dict", {}, "not a dict"),
        ("eval", {"data": "x", "colour": "red"}, "unknown option"),
        ("finetune", {"data": "x", "steps": 1}, "missing option"),
    ],
)
def test_bad_hooks_and_options_are_user_errors(converted, spec, options, message):
    with pytest.raises(AbswinError, match=message):
        run_hook(spec, converted["split"], options)


def test_size_is_required_when_the_checkpoint_records_none(data):
    with pytest.raises(AbswinError, match="img_size"):
        run_hook("eval", example_path(), {"data": data})
