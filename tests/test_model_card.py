"""Model cards ready to paste: front matter with pipeline_tag, a usage snippet for the runtime that loads the
weights, the exact command that made them; a repo's own README.md is kept unless --overwrite-card."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import HfApi, hf_hub_download

from abswin_convert.hub.model_card import model_card, reproduce_command
from abswin_convert.io.provenance import Provenance
from tests.test_push import TIMM_REPO, run_ok
from tests.test_push import timm_repo as timm_repo  # a fixture this file uses

# What every conversion records beside the entries a test names.
RECORDED = {"version": "0.1.0", "format": "official", "target": "baked", "position_key": "pos_embed",
            "native_input": "224x224", "window": "8x8",
            "global_size": "14x14", "resize": "bicubic", "residual": "0", "window_energy": "0.5"}


def record(entries: dict[str, str]) -> Provenance:
    """A conversion's provenance with ``entries`` (the rest as every conversion records them)."""
    return Provenance.from_entries({**RECORDED, **entries})


PROVENANCE = {
    "version": "0.1.0", "source": TIMM_REPO, "source_revision": "main", "source_commit": "a" * 40,
    "source_file": "model.safetensors", "family": "hiera", "format": "timm", "target": "timm-abswin",
    "img_size": "448x448", "window": "8x8", "global_size": "14x14", "resize": "bicubic-antialias",
}


def test_card_has_pipeline_tag_usage_and_reproduce_command():
    card = model_card(record(PROVENANCE), repo_id="me/hiera-448")
    front = card.split("---")[1]
    assert "pipeline_tag: image-classification" in front and "library_name: timm" in front
    assert 'timm.create_model("hf-hub:me/hiera-448", pretrained=True)' in card
    assert (f"abswin-convert convert hf://{TIMM_REPO}@{'a' * 40}/model.safetensors -o out/ --img-size 448x448 "
            "--target timm-abswin --global-size 14x14") in card


def test_reproduce_command_of_a_local_source_uses_its_name():
    local = {"source": "sam_vit_b.pth", "target": "baked", "img_size": "1536x1536", "global_size": "64x64", "family": "sam"}
    assert reproduce_command(record(local)) == (
        "abswin-convert convert sam_vit_b.pth -o out/ --img-size 1536x1536 --target baked --global-size 64x64")
    assert "mask-generation" in model_card(record(local)).split("---")[1]


def test_push_keeps_the_repos_own_card_unless_told(local_hub, timm_repo, tmp_path):
    out = tmp_path / "converted"
    run_ok("convert", TIMM_REPO, "-o", out, "--img-size", 448)
    api = HfApi()
    api.create_repo("test-org/with-card")
    api.upload_file(path_or_fileobj=b"# my own card\n", path_in_repo="README.md", repo_id="test-org/with-card")

    kept = json.loads(run_ok("push", out, "--repo-id", "test-org/with-card", "--json").stdout)
    assert kept["card_kept"] is True and [f["path"] for f in kept["files"]] == ["model.safetensors"]
    card = hf_hub_download("test-org/with-card", "README.md", local_dir=tmp_path / "a")
    assert Path(card).read_text() == "# my own card\n"

    replaced = json.loads(run_ok("push", out, "--repo-id", "test-org/with-card", "--overwrite-card", "--json").stdout)
    assert replaced["card_kept"] is False and replaced["changed"] is True
    card = hf_hub_download("test-org/with-card", "README.md", local_dir=tmp_path / "b", force_download=True)
    assert 'timm.create_model("hf-hub:test-org/with-card", pretrained=True)' in Path(card).read_text()


def test_the_reproduce_command_of_a_generic_conversion_names_its_layout(tmp_path):
    from transformers import ViTConfig, ViTModel

    from abswin_convert import convert
    from abswin_convert.families.overrides import Overrides
    from abswin_convert.hub.model_card import model_card
    from abswin_convert.io.outputs import read_output

    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(
        tmp_path / "vit"
    )
    overrides = Overrides.parse(key="embeddings.position_embeddings", layout="flat_cls", window="7", patch_stride=16)
    convert(tmp_path / "vit", tmp_path / "out", 448, overrides=overrides)
    card = model_card(read_output(tmp_path / "out").provenance)
    assert "--family generic --key embeddings.position_embeddings --layout flat_cls --window 7x7" in card
