"""Hub in and out: convert from the local hub, push with a model card, download the push back and load it
strictly into the upstream runtime (timm, transformers). Everything goes through the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.repocard import metadata_load
from safetensors.torch import load_file
from transformers import HieraForImageClassification

from abswin_convert import residual
from abswin_convert.cli import main
from abswin_convert.hub.model_card import ENERGY_SCALE
from abswin_convert.io.outputs import read_output
from tests import hiera_models as hm
from tests import test_sam2 as sam2_tests
from tests.hub_fixtures import TEST_TOKEN

TIMM_REPO = "test-org/hiera-tiny-timm"
HF_REPO = "test-org/hiera-tiny-hf"


def run(*args: object):
    """``abswin-convert ARGS`` in-process; stdout and stderr apart."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def run_ok(*args: object):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def timm_repo(local_hub, tmp_path) -> str:
    """A timm Hiera safetensors file (its native name) with a model card naming a license; returns the commit."""
    folder = tmp_path / "timm_src"
    folder.mkdir()
    hm.save_timm(folder)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\ntags: [vision]\n---\n# tiny Hiera\n")
    return local_hub.upload_folder(TIMM_REPO, folder)


@pytest.fixture
def hf_repo(local_hub, tmp_path) -> str:
    """A transformers Hiera folder (config.json + model.safetensors), no model card; returns the commit."""
    _, folder = hm.save_transformers(tmp_path)
    return local_hub.upload_folder(HF_REPO, folder)


def card_of(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text()
    return metadata_load(folder / "README.md"), text


def assert_no_token_anywhere(*texts: str, folders: tuple[Path, ...] = ()) -> None:
    for text in texts:
        assert TEST_TOKEN not in text
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                assert TEST_TOKEN.encode() not in path.read_bytes(), path


# --- hub sources in inspect and convert ----------------------------------------------------------------------------


def test_inspect_a_hub_name_shows_the_chosen_file_and_commit(timm_repo):
    result = run_ok("inspect", f"{TIMM_REPO}@main")
    assert f"hub            {TIMM_REPO}@main: chose hiera_timm.safetensors at commit {timm_repo}" in result.stdout
    report = json.loads(run_ok("inspect", f"{TIMM_REPO}@main", "--json").stdout)
    assert report["hub"] == {
        "repo_id": TIMM_REPO,
        "revision": "main",
        "commit": timm_repo,
        "filename": "hiera_timm.safetensors",
        "license": "apache-2.0",
    }
    assert report["family"] == "hiera" and report["format"] == "timm"


def test_convert_hf_uri_records_repo_commit_and_file(local_hub, timm_repo, tmp_path):
    out = tmp_path / "out.safetensors"
    run_ok("convert", f"hf://{TIMM_REPO}@{timm_repo}/hiera_timm.safetensors", "-o", out, "--img-size", 448)
    provenance = read_output(out).provenance.entries()
    assert provenance["source"] == TIMM_REPO
    assert provenance["source_commit"] == timm_repo and provenance["source_revision"] == timm_repo
    assert provenance["source_file"] == "hiera_timm.safetensors"
    assert provenance["source_license"] == "apache-2.0"
    original = Path(snapshot_download(TIMM_REPO, revision=timm_repo)) / "hiera_timm.safetensors"
    assert provenance["source_sha256"] == hashlib.sha256(original.read_bytes()).hexdigest()


def test_a_hub_file_changed_in_the_cache_fails_the_sha256_check(local_hub, timm_repo, tmp_path):
    source = f"hf://{TIMM_REPO}@{timm_repo}/hiera_timm.safetensors"
    cached = Path(snapshot_download(TIMM_REPO, revision=timm_repo)) / "hiera_timm.safetensors"
    data = bytearray(cached.read_bytes())
    data[-4:] = bytes(4 - i for i in range(4))  # the same size, one weight changed: still a readable checkpoint
    cached.write_bytes(data)
    out = tmp_path / "out.safetensors"
    result = run("convert", source, "-o", out, "--img-size", 448)
    assert result.exit_code == 2 and not out.exists() and not list(tmp_path.glob(".out*"))
    assert f"its sha256 is {hashlib.sha256(data).hexdigest()}, its source says" in result.stderr
    assert "the file changed after it was fetched" in result.stderr and len(result.stderr.splitlines()) == 1


def test_format_pt_from_the_hub_records_the_hubs_sha256_checked_once(local_hub, timm_repo, tmp_path, monkeypatch):
    # as a safetensors output does: the download is hashed beside the write, checked against the Hub's LFS sha256,
    # and remembered, so that a second conversion of it hashes nothing
    source = f"hf://{TIMM_REPO}@{timm_repo}/hiera_timm.safetensors"
    run_ok("convert", source, "-o", tmp_path / "first.pt", "--img-size", 448)
    original = Path(snapshot_download(TIMM_REPO, revision=timm_repo)) / "hiera_timm.safetensors"
    expected = hashlib.sha256(original.read_bytes()).hexdigest()
    assert read_output(tmp_path / "first.pt").provenance.entries()["source_sha256"] == expected

    def no_hashing(*args: object) -> object:
        raise AssertionError("hashed again")

    monkeypatch.setattr("abswin_convert.io.provenance.hashlib.file_digest", no_hashing)
    run_ok("convert", source, "-o", tmp_path / "again.pt", "--img-size", 256)
    assert read_output(tmp_path / "again.pt").provenance.entries()["source_sha256"] == expected


def test_a_hub_file_that_is_no_checkpoint_is_named_by_its_hub_name(local_hub, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"not a checkpoint at all")
    sha = local_hub.upload_folder("test-org/bad", tmp_path / "bad")
    result = run("inspect", "test-org/bad")
    assert result.exit_code == 2
    assert f"hf://test-org/bad@{sha}/model.safetensors: not a checkpoint" in result.stderr
    assert "snapshots" not in result.stderr


# --- round trips ----------------------------------------------------------------------------------------------------


def test_timm_round_trip_push_download_load_strict(local_hub, timm_repo, tmp_path):
    out = tmp_path / "converted"
    converted = run_ok("convert", f"{TIMM_REPO}@main", "-o", out, "--img-size", 448, "--to", "timm-abswin")
    pushed = run_ok("push", out, "--repo-id", "test-org/hiera-tiny-abswin", "--json")
    report = json.loads(pushed.stdout)
    assert report["changed"] is True and len(report["commit"]) == 40
    assert [f["path"] for f in report["files"]] == ["model.safetensors", "README.md"]
    assert local_hub.commit_count("test-org/hiera-tiny-abswin") == 1

    # download with the real client into a fresh folder, load strictly into timm's absolute-win Hiera at 448
    back = Path(snapshot_download("test-org/hiera-tiny-abswin", local_dir=tmp_path / "download"))
    assert (back / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    model = hm.timm_model(abs_win_pos_embed=True, global_pos_size=(56, 56), img_size=448)
    model.load_state_dict(load_file(back / "model.safetensors"), strict=True)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 448, 448))).all()

    front, card = card_of(back)
    assert front["base_model"] == TIMM_REPO and front["license"] == "apache-2.0"
    assert front["library_name"] == "timm" and "abswin" in front["tags"]
    provenance = read_output(out).provenance.entries()
    for label, value in [
        ("source", TIMM_REPO),
        ("source commit", timm_repo),
        ("target", "timm-abswin"),
        ("target input", "448x448"),
        ("window (tokens)", "8x8"),
        ("global size (tokens)", "56x56"),
        ("residual of the global fit", residual.in_words(float(provenance["residual"]))),
        (f"window energy (normalised: {ENERGY_SCALE})", f"{float(provenance['window_energy']):.3f}"),
    ]:
        assert f"| {label} | `{value}` |" in card
    assert float(provenance["window_energy"]) > 0.5  # the planted window pattern is seen

    # the same output again: the client finds every file unchanged on the hub, so no commit
    again = json.loads(run_ok("push", out, "--repo-id", "test-org/hiera-tiny-abswin", "--json").stdout)
    assert again["changed"] is False and again["commit"] == report["commit"]
    assert local_hub.commit_count("test-org/hiera-tiny-abswin") == 1
    assert run_ok("push", out, "--repo-id", "test-org/hiera-tiny-abswin").stdout.startswith(
        "test-org/hiera-tiny-abswin@main already holds these files; no commit made"
    )
    assert_no_token_anywhere(converted.output, pushed.output, folders=(out, back))


def test_transformers_round_trip_with_updated_config(local_hub, hf_repo, tmp_path):
    out = tmp_path / "converted"
    run_ok("convert", HF_REPO, "-o", out, "--img-size", "448x320", "--push-to", "test-org/hiera-hf-448")
    back = Path(snapshot_download("test-org/hiera-hf-448", local_dir=tmp_path / "download"))
    assert sorted(p.name for p in back.iterdir() if not p.name.startswith(".")) == [
        "README.md", "config.json", "model.safetensors"
    ]
    config = json.loads((back / "config.json").read_text())
    assert config["image_size"] == [448, 320]
    model = HieraForImageClassification(hm.hf_config((448, 320))).eval()
    model.load_state_dict(load_file(back / "model.safetensors"), strict=True)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 448, 320)).logits.shape == (1, hm.NUM_CLASSES)

    front, card = card_of(back)
    assert front["base_model"] == HF_REPO and front["library_name"] == "transformers"
    assert "license" not in front  # the source repo has no card, so no license is claimed
    assert f"| source commit | `{hf_repo}` |" in card and "| target | `baked` |" in card
    assert "strict=True" in card


def test_sam2_pt_round_trip_with_its_provenance_sidecar(local_hub, tmp_path):
    """A SAM2 repo holds one .pt (like facebook/sam2.1-hiera-large): converted with a refitted 14x14 background,
    pushed as .pt + .abswin.json sidecar, downloaded and loaded strictly into sam2's own model."""
    (tmp_path / "sam2").mkdir()
    sam2_tests.save_native("sam2", tmp_path / "sam2")
    commit = local_hub.upload_folder("test-org/sam2.1-hiera-tiny", tmp_path / "sam2")
    out = tmp_path / "converted"
    run_ok("convert", "test-org/sam2.1-hiera-tiny", "-o", out, "--img-size", 512, "--global-size", "14x14",
           "--format", "pt", "--push-to", "test-org/sam2-abswin-512")
    back = Path(snapshot_download("test-org/sam2-abswin-512", local_dir=tmp_path / "download"))
    weights = back / "sam2.1_hiera_tiny.pt"
    model = sam2_tests.load_converted("sam2", weights, background=(14, 14))  # strict=True inside
    assert len(sam2_tests.trunk_features(model, "sam2", sam2_tests.image(512))) == 4
    provenance = read_output(weights).provenance.entries()  # from the downloaded sidecar
    assert (provenance["source"], provenance["source_commit"], provenance["global_size"]) == (
        "test-org/sam2.1-hiera-tiny", commit, "14x14"
    )
    front, card = card_of(back)
    assert front["library_name"] == "sam2" and front["base_model"] == "test-org/sam2.1-hiera-tiny"
    assert f"| residual of the global fit | `{residual.in_words(float(provenance['residual']))}` |" in card


def test_dry_run_lists_exactly_what_would_be_uploaded_and_sends_nothing(local_hub, tmp_path):
    _, source = hm.save_official(tmp_path)
    out = tmp_path / "pt"
    run_ok("convert", source, "-o", out, "--img-size", 448, "--format", "pt")
    seen = len(local_hub.requests)
    result = json.loads(run_ok("push", out, "--repo-id", "test-org/never", "--dry-run", "--json").stdout)
    assert len(local_hub.requests) == seen
    listed = {f["path"]: f for f in result["files"]}
    assert set(listed) == {"hiera_official.pth", "hiera_official.pth.abswin.json", "README.md"}
    for name in ("hiera_official.pth", "hiera_official.pth.abswin.json"):
        data = (out / name).read_bytes()
        assert listed[name]["size"] == len(data) and listed[name]["sha256"] == hashlib.sha256(data).hexdigest()
    card = result["card"].encode()
    assert listed["README.md"]["sha256"] == hashlib.sha256(card).hexdigest()
    front = result["card"].split("---")[1]
    assert "library_name: hiera" in front and "base_model" not in front  # a local source is no base model
    assert str(tmp_path) not in result["card"]  # a public card names no local folders
    text = run_ok("push", out, "--repo-id", "test-org/never", "--dry-run").stdout
    assert text.startswith("dry run: would upload to test-org/never@main") and "--- README.md ---" in text


def test_revision_and_pull_request(local_hub, timm_repo, tmp_path):
    out = tmp_path / "converted"
    run_ok("convert", TIMM_REPO, "-o", out, "--img-size", 448)
    run_ok("push", out, "--repo-id", "test-org/abswin", "--revision", "dev")
    api = HfApi()
    assert "model.safetensors" in api.list_repo_files("test-org/abswin", revision="dev")
    assert "model.safetensors" not in api.list_repo_files("test-org/abswin")  # main untouched
    pr = json.loads(run_ok("push", out, "--repo-id", "test-org/abswin", "--create-pr", "--json").stdout)
    assert pr["pull_request"] == "refs/pr/1"
    assert "model.safetensors" in api.list_repo_files("test-org/abswin", revision="refs/pr/1")
    assert "model.safetensors" not in api.list_repo_files("test-org/abswin")


def test_private_repo_is_created_private(local_hub, timm_repo, tmp_path):
    out = tmp_path / "converted"
    run_ok("convert", TIMM_REPO, "-o", out, "--img-size", 448, "--push-to", "test-org/secret")  # public
    run_ok("push", out, "--repo-id", "test-org/hidden", "--private")
    assert HfApi().model_info("test-org/hidden").private is True
    assert HfApi().model_info("test-org/secret").private is False


# --- refusals -------------------------------------------------------------------------------------------------------


def test_a_wrong_token_is_refused_in_one_line_without_echoing_it(local_hub, timm_repo, tmp_path, monkeypatch):
    out = tmp_path / "converted"
    run_ok("convert", TIMM_REPO, "-o", out, "--img-size", 448)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_secret_value")
    result = run("push", out, "--repo-id", "test-org/abswin")
    assert result.exit_code == 2
    assert result.stderr.startswith("abswin-convert: error: the Hub at http://127.0.0.1:")
    assert "HF_TOKEN" in result.stderr and result.stderr.count("\n") == 1
    assert "hf_wrong_secret_value" not in result.output and TEST_TOKEN not in result.output


@pytest.mark.parametrize(
    ("make", "repo_id", "message"),
    [
        (lambda tmp: hm.save_timm(tmp)[1], "test-org/x", "no abswin provenance"),  # a source, not an output
        (lambda tmp: tmp / "missing", "test-org/x", "no such file or folder"),
        (lambda tmp: tmp, "not a repo id", "is not a Hub repo id"),
    ],
)
def test_push_refusals(local_hub, tmp_path, make, repo_id, message):
    seen = len(local_hub.requests)
    result = run("push", make(tmp_path), "--repo-id", repo_id)
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1
    assert len(local_hub.requests) == seen
