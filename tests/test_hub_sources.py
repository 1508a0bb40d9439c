"""Hub names as conversion sources (abswin_convert/hub.py), resolved against the local hub."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
from pathlib import Path

import pytest
from huggingface_hub import constants

from abswin_convert.errors import AbswinError
from abswin_convert.hub.locations import HubSource, parse_hub_source
from abswin_convert.hub.sources import pick_weight_file, resolve_hub_source

REPO = "test-org/model"


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


# --- parsing -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("org/repo", HubSource("org/repo", "main", None)),
        ("facebook/hiera_base_224.mae_in1k_ft_in1k", HubSource("facebook/hiera_base_224.mae_in1k_ft_in1k")),
        ("org/repo@v1.0", HubSource("org/repo", "v1.0", None)),
        ("org/repo@refs/pr/3", HubSource("org/repo", "refs/pr/3", None)),
        ("hf://org/repo", HubSource("org/repo", "main", None)),
        ("hf://org/repo/sub/model.pt", HubSource("org/repo", "main", "sub/model.pt")),
        ("hf://org/repo@dev/model.safetensors", HubSource("org/repo", "dev", "model.safetensors")),
        ("hf://org/repo@refs/pr/2/model.pt", HubSource("org/repo", "refs/pr/2", "model.pt")),
        ("hf://org/repo@feature%2Fx/model.pt", HubSource("org/repo", "feature/x", "model.pt")),
        ("hf://models/org/repo@dev", HubSource("org/repo", "dev", None)),
    ],
)
def test_parse_hub_names(text, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_hub_source(text) == expected


@pytest.mark.parametrize(
    "text", ["model.safetensors", "./org/repo", "/abs/x.pt", "runs/best.pt", "a/b/c", "org/repo@", "org--x/repo"]
)
def test_local_looking_names_are_not_hub_names(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_hub_source(text) is None


def test_an_existing_local_path_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "repo").write_bytes(b"")
    assert parse_hub_source("org/repo") is None


@pytest.mark.parametrize("text", ["hf://justone", "hf://datasets/org/data", "hf://org/re po"])
def test_malformed_hf_names_raise(text):
    with pytest.raises(AbswinError):
        parse_hub_source(text)


@pytest.mark.parametrize(
    "source",
    [HubSource("org/repo"), HubSource("org/repo", "feature/x", "a/b.pt"), HubSource("org/repo", "refs/pr/4", "m.pt")],
)
def test_str_of_a_source_parses_back(source):
    assert parse_hub_source(str(source)) == source


# --- choosing the weight file --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["config.json", "other.safetensors", "model.safetensors", "x.pt"], "model.safetensors"),
        (["config.json", "weights.safetensors", "x.pt"], "weights.safetensors"),
        (["config.json", "sam2.1_hiera_large.pt"], "sam2.1_hiera_large.pt"),
        (["README.md", "pytorch_model.bin"], "pytorch_model.bin"),
    ],
)
def test_pick_weight_file(files, expected):
    assert pick_weight_file(files, HubSource("org/repo")) == expected


def test_pick_weight_file_refuses_to_guess():
    with pytest.raises(AbswinError, match=r"several weight files \(a\.pt, b\.pth\).*hf://org/repo@main/a\.pt"):
        pick_weight_file(["b.pth", "a.pt", "config.json"], HubSource("org/repo"))
    with pytest.raises(AbswinError, match=r"no weight file.*README\.md"):
        pick_weight_file(["README.md"], HubSource("org/repo"))


# --- resolving against the local hub --------------------------------------------------------------------------------


@pytest.fixture
def repo_sha(local_hub, tmp_path):
    """REPO with model.safetensors, another safetensors file and both configs; returns the commit sha."""
    files = {
        "model.safetensors": b"main weights",
        "ema.safetensors": b"ema weights",
        "config.json": b'{"model_type": "hiera"}',
        "preprocessor_config.json": b'{"size": 224}',
    }
    return local_hub.upload_folder(REPO, make_folder(tmp_path / "repo", files))


def test_resolve_prefers_model_safetensors_and_fetches_configs(repo_sha):
    resolved = resolve_hub_source(HubSource(REPO))
    assert (resolved.filename, resolved.repo_id, resolved.revision) == ("model.safetensors", REPO, "main")
    assert resolved.commit_sha == repo_sha
    assert resolved.path.read_bytes() == b"main weights"
    assert resolved.config_path.read_bytes() == b'{"model_type": "hiera"}'
    assert resolved.preprocessor_config_path.read_bytes() == b'{"size": 224}'
    assert Path(constants.HF_HUB_CACHE) in resolved.path.parents  # the normal (here: the test's) HF cache


def test_resolve_takes_the_only_pickle(local_hub, tmp_path):
    local_hub.upload_folder("test-org/sam2", make_folder(tmp_path, {"sam2_hiera_t.pt": b"pt", "README.md": b"#"}))
    resolved = resolve_hub_source(HubSource("test-org/sam2"))
    assert resolved.filename == "sam2_hiera_t.pt"
    assert resolved.config_path is None and resolved.preprocessor_config_path is None


def test_resolve_lists_several_candidates(local_hub, tmp_path):
    local_hub.upload_folder("test-org/many", make_folder(tmp_path, {"a.safetensors": b"a", "b.safetensors": b"b"}))
    with pytest.raises(AbswinError, match=r"a\.safetensors, b\.safetensors.*hf://test-org/many@main/a\.safetensors"):
        resolve_hub_source(HubSource("test-org/many"))


def test_resolve_an_explicit_file(repo_sha):
    resolved = resolve_hub_source(parse_hub_source(f"hf://{REPO}/ema.safetensors"))
    assert resolved.filename == "ema.safetensors" and resolved.path.read_bytes() == b"ema weights"
    with pytest.raises(AbswinError, match=r"no file 'nope\.pt'.*ema\.safetensors, model\.safetensors"):
        resolve_hub_source(parse_hub_source(f"hf://{REPO}/nope.pt"))


def test_resolve_by_branch_and_by_commit_sha(local_hub, repo_sha, tmp_path):
    dev_folder = make_folder(tmp_path / "dev", {"model.safetensors": b"dev"})
    branch_sha = local_hub.upload_folder(REPO, dev_folder, revision="dev")
    newer_sha = local_hub.upload_folder(REPO, make_folder(tmp_path / "new", {"model.safetensors": b"newer"}))

    on_branch = resolve_hub_source(parse_hub_source(f"{REPO}@dev"))
    assert (on_branch.commit_sha, on_branch.revision, on_branch.path.read_bytes()) == (branch_sha, "dev", b"dev")
    pinned = resolve_hub_source(parse_hub_source(f"{REPO}@{repo_sha}"))
    assert (pinned.commit_sha, pinned.path.read_bytes()) == (repo_sha, b"main weights")
    assert resolve_hub_source(HubSource(REPO)).commit_sha == newer_sha


def test_resolve_takes_the_sha256_from_the_lfs_metadata(local_hub, repo_sha, tmp_path):
    assert resolve_hub_source(HubSource(REPO)).sha256 == hashlib.sha256(b"main weights").hexdigest()
    # a file the repo keeps in git, not LFS (the local hub's .gitattributes sends *.safetensors and *.pt to LFS)
    local_hub.upload_folder("test-org/in-git", make_folder(tmp_path / "git", {"weights.pth": b"pickle"}))
    assert resolve_hub_source(HubSource("test-org/in-git")).sha256 is None


def test_a_cached_file_of_the_wrong_size_is_refused(local_hub, repo_sha):
    path = resolve_hub_source(HubSource(REPO)).path
    path.write_bytes(b"main weights, grown in the cache")  # through the snapshot link, into the cached blob
    with pytest.raises(AbswinError, match=r"cached copy has 32 bytes, the Hub says 12; delete it"):
        resolve_hub_source(HubSource(REPO))


def test_resolve_offline_from_the_cache(local_hub, repo_sha, monkeypatch):
    online = resolve_hub_source(HubSource(REPO))
    explicit = resolve_hub_source(HubSource(REPO, filename="ema.safetensors"))
    seen = len(local_hub.requests)
    local_hub.set_offline()

    # offline the Hub's LFS metadata is out of reach: no sha256 is given, the conversion hashes the file itself
    assert resolve_hub_source(HubSource(REPO)) == dataclasses.replace(online, sha256=None)
    assert resolve_hub_source(HubSource(REPO, filename="ema.safetensors")) == dataclasses.replace(explicit, sha256=None)
    assert resolve_hub_source(HubSource(REPO, repo_sha)).commit_sha == repo_sha
    with pytest.raises(AbswinError, match=r"offline mode .*not in the Hugging Face cache"):
        resolve_hub_source(HubSource("test-org/never-fetched"))
    assert len(local_hub.requests) == seen


def test_offline_set_in_the_environment_after_import_counts_too(local_hub, repo_sha, monkeypatch):
    online = resolve_hub_source(HubSource(REPO))
    seen = len(local_hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # huggingface_hub.constants still says online
    assert resolve_hub_source(HubSource(REPO)) == dataclasses.replace(online, sha256=None)
    assert len(local_hub.requests) == seen


def test_offline_without_a_named_file_needs_model_safetensors(local_hub, tmp_path):
    local_hub.upload_folder("test-org/sam2", make_folder(tmp_path, {"sam2_hiera_t.pt": b"pt"}))
    resolve_hub_source(HubSource("test-org/sam2"))
    local_hub.set_offline()
    with pytest.raises(AbswinError, match=r"cannot list the files.*hf://test-org/sam2@main/<file>"):
        resolve_hub_source(HubSource("test-org/sam2"))
    assert resolve_hub_source(HubSource("test-org/sam2", filename="sam2_hiera_t.pt")).path.read_bytes() == b"pt"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (HubSource("test-org/missing"), "no Hub repository 'test-org/missing' at http://127.0.0.1:"),
        (HubSource(REPO, "no-such-branch"), f"Hub repository '{REPO}' has no revision 'no-such-branch'"),
    ],
)
def test_hub_errors_are_one_line(repo_sha, source, message):
    with pytest.raises(AbswinError) as error:
        resolve_hub_source(source)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_private_repo_without_token_says_so(local_hub, tmp_path, monkeypatch):
    local_hub.upload_folder("test-org/secret", make_folder(tmp_path, {"model.safetensors": b"x"}), private=True)
    assert resolve_hub_source(HubSource("test-org/secret")).filename == "model.safetensors"
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(AbswinError, match="set HF_TOKEN"):
        resolve_hub_source(HubSource("test-org/secret", filename="model.safetensors"))


def test_unreachable_endpoint_is_one_line(local_hub, monkeypatch):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    with pytest.raises(AbswinError) as error:
        resolve_hub_source(HubSource(REPO))
    assert str(error.value).startswith(f"cannot connect to {dead}") and "\n" not in str(error.value)
