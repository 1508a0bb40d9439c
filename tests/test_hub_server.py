"""The local hub (tests/hubserver.py) against the real huggingface_hub client."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.hubserver import git_blob_oid

REPO = "test-org/model"
WEIGHTS = os.urandom(3 * 1024 * 1024 + 17)  # a few MB of binary, not a multiple of any chunk size


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


@pytest.fixture
def pushed(local_hub, tmp_path):
    """REPO holding model.safetensors (binary), config.json and a nested text file; returns its commit sha."""
    files = {"model.safetensors": WEIGHTS, "config.json": b'{"a": 1}', "notes/readme.txt": b"hello"}
    return local_hub.upload_folder(REPO, make_folder(tmp_path / "v1", files))


def test_upload_folder_makes_one_commit_and_lists_the_files(local_hub, pushed):
    api = HfApi()
    expected = [".gitattributes", "config.json", "model.safetensors", "notes/readme.txt"]
    assert sorted(api.list_repo_files(REPO)) == expected
    info = api.model_info(REPO)
    assert info.sha == pushed and len(pushed) == 40
    assert {s.rfilename for s in info.siblings} >= {"model.safetensors", "notes/readme.txt"}
    assert local_hub.commit_count(REPO) == 1
    assert api.list_repo_commits(REPO)[0].commit_id == pushed
    assert api.whoami()["name"] == "test-user"


def test_download_by_branch_and_by_commit_sha(local_hub, pushed, tmp_path):
    second = local_hub.upload_folder(REPO, make_folder(tmp_path / "v2", {"config.json": b'{"a": 2}'}))
    assert second != pushed and local_hub.commit_count(REPO) == 2
    assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == b'{"a": 2}'
    assert Path(hf_hub_download(REPO, "config.json", revision=pushed)).read_bytes() == b'{"a": 1}'
    assert Path(hf_hub_download(REPO, "model.safetensors", revision=second)).read_bytes() == WEIGHTS


def test_head_metadata_names_commit_etag_and_size(local_hub, pushed):
    metadata = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors"))
    assert metadata.commit_hash == pushed
    assert metadata.etag == git_blob_oid(WEIGHTS)
    assert metadata.size == len(WEIGHTS)


def test_pushing_the_same_folder_again_makes_no_commit(local_hub, pushed, tmp_path):
    again = local_hub.upload_folder(
        REPO, make_folder(tmp_path / "same", {"model.safetensors": WEIGHTS, "config.json": b'{"a": 1}'})
    )
    assert again == pushed
    assert local_hub.commit_count(REPO) == 1
    assert sum(r.method == "POST" and "/commit/" in r.path for r in local_hub.requests) == 1


def test_create_pr_leaves_main_alone(local_hub, pushed, tmp_path):
    api = HfApi()
    commit = api.upload_folder(
        repo_id=REPO, folder_path=make_folder(tmp_path / "pr", {"config.json": b'{"a": 3}'}), create_pr=True
    )
    assert commit.pr_revision == "refs/pr/1" and commit.pr_num == 1
    assert api.model_info(REPO).sha == pushed
    assert api.model_info(REPO, revision="refs/pr/1").sha == commit.oid
    assert Path(hf_hub_download(REPO, "config.json", revision="refs/pr/1")).read_bytes() == b'{"a": 3}'
    # create_commit opens its pull request with ?create_pr=1 on the commit endpoint instead
    direct = api.create_commit(
        REPO, [CommitOperationAdd("config.json", b'{"a": 4}')], commit_message="four", create_pr=True
    )
    assert direct.pr_revision == "refs/pr/2"
    assert api.model_info(REPO).sha == pushed
    assert api.list_repo_commits(REPO, revision="refs/pr/2")[0].title == "four"


def test_offline_mode_serves_the_cache_without_requests(local_hub, pushed):
    first = hf_hub_download(REPO, "model.safetensors")
    seen = len(local_hub.requests)
    local_hub.set_offline()
    assert hf_hub_download(REPO, "model.safetensors") == first
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "config.json")  # never downloaded
    assert len(local_hub.requests) == seen


def test_missing_repo_revision_and_file_raise_the_client_errors(local_hub, pushed):
    api = HfApi()
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("test-org/nope")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("test-org/nope", "model.safetensors")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.bin")


def test_private_repos_and_writes_need_the_token(local_hub, tmp_path):
    local_hub.upload_folder("test-org/secret", make_folder(tmp_path, {"a.pt": b"x"}), private=True)
    assert HfApi().model_info("test-org/secret").private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info("test-org/secret")
    with pytest.raises(HfHubHTTPError) as refused:
        HfApi(token="hf_wrong").create_repo("test-org/other")
    assert refused.value.response.status_code == 401


def test_requests_are_recorded_in_order(local_hub, pushed):
    start = len(local_hub.requests)
    hf_hub_download(REPO, "notes/readme.txt")
    assert [tuple(r) for r in local_hub.requests[start:]] == [
        ("HEAD", f"/{REPO}/resolve/main/notes/readme.txt"),
        ("GET", f"/{REPO}/resolve/main/notes/readme.txt"),
    ]
