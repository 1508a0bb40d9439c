"""Output bytes stay what they were: each family converted from small inputs built here from a seeded generator,
every file of the output hashed and compared with the sha256 recorded when the output's code was reorganised
(a refactor of where the output is written must not change a byte of it)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from abswin_convert import api
from abswin_convert.families.overrides import Overrides
from abswin_convert.io import provenance

FIXED_VERSION = "0.0.0-bytes"  # the version is recorded in every output; fixed so that a release keeps these sums


def _values(rng: np.random.Generator, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    return {key: rng.standard_normal(shape).astype(np.float32) for key, shape in shapes.items()}


def hiera_official(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return _values(
        rng,
        {
            "pos_embed": (1, 56 * 56, 8),
            "patch_embed.proj.weight": (8, 3, 7, 7),
            "blocks.0.attn.qkv.weight": (24, 8),
            "blocks.0.mlp.fc1.weight": (16, 8),
        },
    )


def sam_official(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return _values(
        rng,
        {
            "image_encoder.pos_embed": (1, 16, 16, 8),
            "image_encoder.patch_embed.proj.weight": (8, 3, 16, 16),
            "image_encoder.blocks.0.attn.rel_pos_h": (27, 4),
            "image_encoder.blocks.0.attn.rel_pos_w": (27, 4),
        },
    )


def sam2_official(rng: np.random.Generator) -> dict[str, np.ndarray]:
    trunk = "image_encoder.trunk."
    return _values(
        rng,
        {
            trunk + "pos_embed": (1, 8, 7, 7),
            trunk + "pos_embed_window": (1, 8, 8, 8),
            trunk + "patch_embed.proj.weight": (8, 3, 7, 7),
            trunk + "blocks.0.mlp.layers.0.weight": (16, 8),
        },
    )


def vit_timm(rng: np.random.Generator, side: int = 14) -> dict[str, np.ndarray]:
    return _values(
        rng,
        {
            "cls_token": (1, 1, 8),
            "pos_embed": (1, 1 + side * side, 8),
            "patch_embed.proj.weight": (8, 3, 16, 16),
            "blocks.0.attn.qkv.weight": (24, 8),
        },
    )


def vitdet_timm(rng: np.random.Generator) -> dict[str, np.ndarray]:
    windowed = {f"blocks.{i}.attn.rel_pos_{axis}": (side, 4) for i, side in ((0, 27), (1, 55)) for axis in "hw"}
    return {**vit_timm(rng, 28), **_values(rng, windowed)}


def sharded_hiera(folder: Path, rng: np.random.Generator) -> Path:
    state = hiera_official(rng)
    shards = {
        "model-00001-of-00002.safetensors": ["pos_embed", "patch_embed.proj.weight"],
        "model-00002-of-00002.safetensors": ["blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight"],
    }
    for name, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(folder / name))
    weight_map = {k: name for name, keys in shards.items() for k in keys}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def plain_grid(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return _values(rng, {"net.pos": (1, 8, 8, 8), "net.proj.weight": (8, 3, 16, 16)})


# name -> (state, source file name, convert options, output name relative to the test folder)
CASES = {
    "hiera-baked": (hiera_official, "hiera.safetensors", {"img_size": 448}, "out.safetensors"),
    "hiera-baked-global": (hiera_official, "hiera.safetensors", {"img_size": 448, "global_size": "8x8"}, "out.safetensors"),
    "hiera-timm-abswin": (hiera_official, "hiera.safetensors", {"img_size": 448, "target": "timm-abswin"}, "out/"),
    "hiera-sam2": (hiera_official, "hiera.safetensors", {"img_size": 512, "target": "sam2"}, "out.pt"),
    "hiera-pt": (hiera_official, "hiera.safetensors", {"img_size": 448, "fmt": "pt"}, "out/"),
    "sam": (sam_official, "sam.safetensors", {"img_size": 512}, "out.safetensors"),
    "sam-pt": (sam_official, "sam.safetensors", {"img_size": 384}, "out.pth"),
    "sam2-baked": (sam2_official, "sam2.safetensors", {"img_size": 512}, "out.safetensors"),
    "sam2-sam2": (sam2_official, "sam2.safetensors", {"img_size": 512, "target": "sam2"}, "out.safetensors"),
    "vitdet": (vitdet_timm, "vit.safetensors", {"img_size": 896}, "out.safetensors"),
    "vitdet-global": (vitdet_timm, "vit.safetensors", {"img_size": 672, "global_size": "7x7"}, "out.safetensors"),
    "vitdet-tile": (vit_timm, "vit.safetensors", {"img_size": 448, "overrides": Overrides(recipe="tile")}, "out.safetensors"),
    "generic": (
        plain_grid,
        "grid.safetensors",
        {"img_size": 256, "overrides": Overrides(key="net.pos", layout="nhwc", window=(4, 4), patch_stride=16)},
        "out.safetensors",
    ),
    "sharded": (sharded_hiera, "shards/", {"img_size": 448}, "out/"),
    "zoo-provenance": (hiera_official, "hiera.safetensors", {"img_size": 448, "provenance": {"zoo_options": "{}"}}, "out/"),
}

EXPECTED: dict[str, dict[str, str]] = {  # printed by `python tests/test_output_bytes.py`
    "hiera-baked": {"out.safetensors": "bbc761359f9765ec0b9342d46b7a7a019b462375ea44db4be71ae27be62c79d1"},
    "hiera-baked-global": {"out.safetensors": "70ecf604a9603aed92979e316b561ab44b0a32cc5ac284518db8bfc9c4ec443e"},
    "hiera-timm-abswin": {"out/model.safetensors": "74dc9ac17cbc92fe84f52909330f1354662318d476484cddc11fa9734fb3ade7"},
    "hiera-sam2": {
        "out.pt": "49ffdb6e74bb493390d5d15e6fae56ea475491b62e04c15f97ac437b5d2b63e5",
        "out.pt.abswin.json": "1bb53fbd81b2ebf2a219185bfe20445bfd114bbd08e4061d8f5397c321f73794",
    },
    "hiera-pt": {
        # the same bytes as before issue 25; a --format pt output in a folder is named pytorch_model.bin since (timm finds it)
        "out/pytorch_model.bin": "2760904ed2d9113a663e79b76e78b29655b9c9e90b512c0073ca3167ea3b5ade",
        "out/pytorch_model.bin.abswin.json": "4b40d266d2963c221b142f87e5adb6210a7d9f1615e2b687fa49248c1c8db234",
    },
    "sam": {"out.safetensors": "881e4401c1fd71b66e3876330e459c3d1b2750743a251819c3fa07395e352a90"},
    "sam-pt": {
        "out.pth": "a4e69a6641eb76f926ee0b66b49ad40acf1c87740b68b12df3593660bd1ee527",
        "out.pth.abswin.json": "36701da608de23e40db6fc98df812bb6c55dcbab07a8b0a116e95adc1ce87a79",
    },
    "sam2-baked": {"out.safetensors": "95cf872b1cb4414ea2828e1d2f6af61a34c9fdd4568aebaaa77ce6dfe4ca3669"},
    "sam2-sam2": {"out.safetensors": "f027da8461606fdc15dbb3a3b9a06ce784e10a4271cd9ace9146208af505096e"},
    # the same tensors as before issue 25; the header now also lists the relative-position tables resized (abswin.also_rewritten)
    "vitdet": {"out.safetensors": "236e4bbe65e06bf5d541dfad95c069a348d8c4c864824687ebdf1533cdec8774"},
    "vitdet-global": {"out.safetensors": "8b0f3eb5e38408760fb91685f1a5781fa74989ef38cb68bb0de94dbea9d09552"},
    "vitdet-tile": {"out.safetensors": "4620385d192d592d474638912da778779b42e72073707aba2f521dc33b7412c8"},
    "generic": {"out.safetensors": "e7366833a55b8a8538c5a715a826d7c73973096f75f8a295a0e69e8ab4b09b72"},
    "sharded": {
        "out/model-00001-of-00002.safetensors": "7df991dfc095ca6a13ff3427c29da7285f0504c2e8e0e0f03f51a4839f1c0c42",
        "out/model-00002-of-00002.safetensors": "7f2d07e4a1bfccdb6b687a8ff30e3b74ecc38c6521c5a5364426b4c2b5673d7c",
        "out/model.safetensors.index.json": "114a11c9b67ab6afbc84f9048f3135ba048f77f76fab76d6230d55b2f69b1b2a",
    },
    "zoo-provenance": {"out/model.safetensors": "771bdc2a26c4978cc26160642d708da7e226af94319c5d169172999cd7149493"},
}


def _output_sums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def convert_case(name: str, tmp_path: Path) -> dict[str, str]:
    build, source_name, options, out_name = CASES[name]
    source = tmp_path / "in" / source_name
    source.parent.mkdir(parents=True)
    if source_name.endswith("/"):  # a folder of shards
        source.mkdir()
        build(source, np.random.default_rng(21))
    else:
        save_file(build(np.random.default_rng(21)), str(source))
    out = tmp_path / "out"
    out.mkdir()
    api.convert(source, out / out_name, progress=False, **options)
    return _output_sums(out)


@pytest.mark.parametrize("name", CASES)
def test_output_bytes_are_unchanged(name, tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "__version__", FIXED_VERSION)
    assert convert_case(name, tmp_path) == EXPECTED[name]


if __name__ == "__main__":  # prints the sums of today's outputs, to record them above
    import tempfile

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(provenance, "__version__", FIXED_VERSION)
        for case in CASES:
            with tempfile.TemporaryDirectory() as tmp:
                print(f"    {case!r}: {json.dumps(convert_case(case, Path(tmp)))},")
