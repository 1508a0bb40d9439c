"""``abswin-convert eval``: the data readers, the model builders for timm / official Hiera / transformers, and the
accuracy of the shipped example, checked against each runtime's own preprocessing."""

from __future__ import annotations

import gzip
import json
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from abswin_convert.demo import example_path
from abswin_convert.errors import AbswinError
from abswin_convert.evaluation.classifier import load_classifier
from abswin_convert.evaluation.data import Preprocess, open_dataset, parse_spec, read_idx
from abswin_convert.evaluation.eval import run_eval
from tests.hooks_support import EVAL_IMAGES, REAL, make_idx_folder, save_timm, write_idx


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return make_idx_folder(tmp_path_factory.mktemp("fashion"))


@pytest.fixture(scope="module")
def data(idx_dir):
    return f"fashion-mnist:{idx_dir}"


# --- data ---------------------------------------------------------------------------------------------------


def test_idx_reader_reads_gzipped_and_plain_files_alike(tmp_path):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    plain = read_idx(write_idx(tmp_path / "a-idx3-ubyte", array))
    zipped = read_idx(write_idx(tmp_path / "a-idx3-ubyte.gz", array))
    assert plain.shape == (2, 3, 5) and np.array_equal(plain, array) and np.array_equal(zipped, array)


@pytest.mark.parametrize("damage", ["magic", "truncated", "gzip"])
def test_idx_reader_refuses_broken_files(tmp_path, damage):
    path = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    raw = path.read_bytes()
    if damage == "magic":
        path.write_bytes(b"\x01\x02" + raw[2:])
    elif damage == "truncated":
        path.write_bytes(raw[:-10])
    else:
        path = tmp_path / "x-idx3-ubyte.gz"
        path.write_bytes(gzip.compress(raw)[:-8])
    with pytest.raises(AbswinError, match="idx"):
        read_idx(path)


def test_fashion_mnist_spec_reads_both_splits(idx_dir):
    train = open_dataset(f"fashion-mnist:{idx_dir}", "train")
    test = open_dataset(f"fashion-mnist:{idx_dir}", "eval")
    image, label = test[0]
    assert len(test) == EVAL_IMAGES and len(train) > 0
    assert image.shape == (1, 28, 28) and image.dtype == torch.uint8 and 0 <= label < 10


@pytest.mark.parametrize("spec", ["mnist:/tmp", "fashion-mnist:", "imagefolder", "fashion-mnist:/no/such/folder"])
def test_bad_data_specs_say_what_to_write(spec):
    with pytest.raises(AbswinError, match="data"):
        parse_spec(spec)


def test_preprocess_follows_timm_eval_transform():
    """Shorter side to size / crop_pct, centre crop: the same pixels as timm's own eval transform."""
    from timm.data import create_transform

    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = Preprocess(32, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear", 0.8)
    theirs = create_transform(input_size=(3, 32, 32), interpolation="bilinear", crop_pct=0.8, mean=(0.5,) * 3, std=(0.25,) * 3)
    expected = theirs(Image.fromarray(image.permute(1, 2, 0).numpy()))
    got = ours.normalize(ours.geometry(image).unsqueeze(0))[0]
    assert got.shape == expected.shape == (3, 32, 32)
    # PIL and torch resize differ by a grey level or so; a wrong crop or scale would differ by far more.
    assert (got - expected).abs().mean() < 0.05


# --- the shipped example, through each runtime ---------------------------------------------------------------


def test_eval_of_the_shipped_example(data):
    result = run_eval(example_path(), data, img_size=64, device="cpu", batch_size=64, limit=200)
    assert result["runtime"] == "timm" and result["images"] == 200 and result["device"] == "cpu"
    assert np.isfinite(result["loss"]) and 0 <= result["top1"] <= 1
    if REAL:  # the example was trained on Fashion-MNIST at 64 px
        assert result["top1"] > 0.7, result


def test_eval_matches_a_plain_timm_loop(data, idx_dir):
    """Our loop (device counters, our preprocessing) against timm's own transform and a plain forward."""
    from timm.data import create_transform, resolve_data_config

    classifier = load_classifier(example_path(), 64)
    cfg = resolve_data_config(pretrained_cfg=classifier.config["pretrained_cfg"], model=classifier.model)
    transform = create_transform(**cfg)
    test = open_dataset(data, "eval")
    images = torch.stack([transform(Image.fromarray(test[i][0][0].numpy())) for i in range(100)])
    labels = test.labels[:100]
    with torch.no_grad():
        logits = classifier.model(images)
    expected_top1 = float((logits.argmax(1) == labels).float().mean())
    expected_loss = float(F.cross_entropy(logits, labels))
    result = run_eval(example_path(), data, 64, "cpu", batch_size=32, limit=100)
    assert abs(result["top1"] - expected_top1) <= 0.02
    assert abs(result["loss"] - expected_loss) < 0.05 * max(1.0, expected_loss)


def test_imagefolder_gives_the_same_result_as_the_idx_files(tmp_path, data):
    """The same images as PNG files in class folders: identical pixels, identical metrics."""
    test = open_dataset(data, "eval")
    classes = [f"{k}_class" for k in range(10)]
    for index in range(60):
        image, label = test[index]
        folder = tmp_path / classes[label]
        folder.mkdir(exist_ok=True)
        Image.fromarray(image[0].numpy()).save(folder / f"{index:04d}.png")
    for k in classes:  # class folders must exist even when the slice holds no image of that class
        (tmp_path / k).mkdir(exist_ok=True)
    from_pngs = run_eval(example_path(), f"imagefolder:{tmp_path}", 64, "cpu", batch_size=16)
    from_idx = run_eval(example_path(), data, 64, "cpu", batch_size=16, limit=60)
    assert from_pngs["images"] == 60
    assert from_pngs["top1"] == from_idx["top1"]
    assert from_pngs["loss"] == pytest.approx(from_idx["loss"], rel=1e-5)


def test_official_hiera_mixin_folder(tmp_path, data):
    import hiera

    torch.manual_seed(0)
    model = hiera.Hiera(input_size=(64, 64), embed_dim=16, num_heads=1, stages=(1, 1, 2, 1), num_classes=10, in_chans=1).eval()
    model.save_pretrained(tmp_path)
    result = run_eval(tmp_path, data, 64, "cpu", limit=64)
    classifier = load_classifier(tmp_path, 64)
    images = open_dataset(data, "eval", classifier.preprocess.geometry)
    x = classifier.preprocess.normalize(torch.stack([images[i][0] for i in range(64)]))
    labels = open_dataset(data, "eval").labels[:64]
    with torch.no_grad():
        expected = F.cross_entropy(model(x), labels).item()
    assert result["runtime"] == "hiera" and result["images"] == 64
    assert result["loss"] == pytest.approx(expected, rel=1e-5)


def test_transformers_folder_uses_its_preprocessor_config(tmp_path, data):
    from transformers import BitImageProcessor, HieraConfig, HieraForImageClassification

    torch.manual_seed(0)
    config = HieraConfig(embed_dim=16, num_heads=[1, 2, 4, 8], depths=[1, 1, 2, 1], image_size=[64, 64], num_labels=10)
    model = HieraForImageClassification(config).eval()
    model.save_pretrained(tmp_path)
    processor = BitImageProcessor(size={"shortest_edge": 73}, crop_size={"height": 64, "width": 64}, do_convert_rgb=True,
                                  image_mean=[0.4, 0.4, 0.4], image_std=[0.3, 0.3, 0.3])
    processor.save_pretrained(tmp_path)
    test = open_dataset(data, "eval")
    pixels = processor([Image.fromarray(test[i][0][0].numpy()).convert("RGB") for i in range(48)], return_tensors="pt")
    with torch.no_grad():
        expected = F.cross_entropy(model(**pixels).logits, test.labels[:48]).item()
    result = run_eval(tmp_path, data, 64, "cpu", limit=48)
    assert result["runtime"] == "transformers"
    assert load_classifier(tmp_path, 64).preprocess.crop_pct == pytest.approx(64 / 73)
    assert result["loss"] == pytest.approx(expected, rel=0.02)


# --- errors and the command line -----------------------------------------------------------------------------


def test_wrong_size_is_refused_with_a_hint_to_convert(data):
    with pytest.raises(AbswinError, match="convert --img-size 128"):
        run_eval(example_path(), data, 128, "cpu", limit=8)


def test_checkpoint_without_config_is_refused(tmp_path, data):
    import timm

    model = timm.create_model("hiera_tiny_224", embed_dim=16, num_heads=1, stages=(1, 1, 2, 1), num_classes=10)
    save_timm(tmp_path / "m", model, {})
    (tmp_path / "m" / "config.json").unlink()
    with pytest.raises(AbswinError, match=r"config.json"):
        run_eval(tmp_path / "m", data, 224, "cpu", limit=8)


def test_labels_beyond_the_model_classes_are_refused(tmp_path, data):
    import timm

    model = timm.create_model(
        "hiera_tiny_224", embed_dim=16, num_heads=1, stages=(1, 1, 2, 1), num_classes=3, img_size=64, in_chans=1
    )
    save_timm(tmp_path / "m", model, {"mean": [0.5], "std": [0.5], "crop_pct": 1.0})
    with pytest.raises(AbswinError, match="label"):
        run_eval(tmp_path / "m", data, 64, "cpu", limit=64)


def test_cli_eval_json_and_error_exit(data):
    ok = subprocess.run(["abswin-convert", "eval", str(example_path()), "--data", data, "--img-size", "64", "--limit", "50",
                         "--device", "cpu", "--json"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["images"] == 50 and 0 <= report["top1"] <= 1
    bad = subprocess.run(["abswin-convert", "eval", str(example_path()), "--data", data, "--img-size", "96", "--limit", "5"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("abswin-convert: error:")
