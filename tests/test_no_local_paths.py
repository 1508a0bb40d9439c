"""Nothing an output holds, or ``push`` uploads, says where its source sat on the user's disk: a source is
recorded by its name and sha256 (and, from the Hub, by repo and commit)."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from safetensors import safe_open

from abswin_convert import convert
from abswin_convert.demo import example_path
from abswin_convert.io.outputs import sidecar_of
from abswin_convert.io.provenance import public_name


@pytest.fixture
def deep_source(tmp_path):
    folder = tmp_path / "home" / "someone" / "private-project" / "checkpoints"
    folder.mkdir(parents=True)
    shutil.copytree(example_path(), folder / "hiera_tiny")
    return folder / "hiera_tiny"


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_outputs_name_the_source_without_its_folder(deep_source, tmp_path, fmt):
    out = tmp_path / "out" / ("model.safetensors" if fmt == "safetensors" else "pytorch_model.bin")
    result = convert(deep_source, out, 128, fmt=fmt)
    if fmt == "safetensors":
        with safe_open(result.output, "pt") as f:
            metadata = f.metadata()
    else:
        metadata = json.loads(sidecar_of(result.output).read_text())
    weights = deep_source / "model.safetensors"
    assert metadata["abswin.source"] == "hiera_tiny" and metadata["abswin.source_file"] == "model.safetensors"
    assert metadata["abswin.source_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert not any("private-project" in value or str(tmp_path) in value for value in metadata.values())
    assert b"private-project" not in result.output.read_bytes()


@pytest.mark.parametrize("location, name", [
    ("/home/me/ckpts/sam_vit_b.pth", "sam_vit_b.pth"),
    ("runs/out/", "out"),
    ("imagefolder:/data/me/pets", "imagefolder:pets"),
    ("fashion-mnist", "fashion-mnist"),
])
def test_public_name_keeps_the_name_and_drops_the_folders(location, name):
    assert public_name(location) == name
