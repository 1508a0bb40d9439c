"""The ``local_hub`` fixture: a local Hub server, with ``huggingface_hub`` pointed at it and at a throwaway cache.

Loaded through ``pytest_plugins`` in ``tests/conftest.py``. ``huggingface_hub`` copies its environment variables into
``huggingface_hub.constants`` when it is imported, so the fixture sets both: the variables (for subprocesses and for
code that reads them) and the constants (for the client already imported in this process).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import HfApi, close_session, constants

from tests.hubserver import HubServer, RecordedRequest

TEST_TOKEN = "hf_localtesttoken"


class LocalHub:
    """What ``local_hub`` yields: the running server, plus helpers that go through the real client."""

    def __init__(self, server: HubServer, monkeypatch: pytest.MonkeyPatch):
        self.server = server
        self._monkeypatch = monkeypatch

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def token(self) -> str:
        return TEST_TOKEN

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request the server has received so far, as ``(method, path)``."""
        return self.server.requests

    def commit_count(self, repo_id: str) -> int:
        """Commits made to ``repo_id`` through the commit endpoint (the initial commit is not counted)."""
        return self.server.commit_count(repo_id)

    def upload_folder(
        self, repo_id: str, folder: str | Path, *, revision: str | None = None, private: bool = False
    ) -> str:
        """Create ``repo_id`` if needed and upload ``folder`` to it with ``HfApi``; returns the head commit sha.

        A ``revision`` other than ``main`` is created as a branch off ``main`` first.
        """
        api = HfApi(endpoint=self.endpoint, token=self.token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision).oid

    def set_offline(self, offline: bool = True) -> None:
        """Switch the client's offline mode (``HF_HUB_OFFLINE``) for the rest of the test."""
        self._monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
        self._monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)


def _point_client_at(endpoint: str, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = hf_home / "hub"
    settings = {
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": TEST_TOKEN,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "0",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    for name in ("HUGGING_FACE_HUB_TOKEN", "HF_HUB_DISABLE_IMPLICIT_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)

    constant_values = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(cache),
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,  # also keeps the client from fetching anything but what a test asks for
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
    }
    for name, value in constant_values.items():
        monkeypatch.setattr(constants, name, value)


@pytest.fixture
def local_hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """A fresh local Hub for one test; ``HF_ENDPOINT``, ``HF_TOKEN`` and the HF cache point at it and a temp dir."""
    root = tmp_path_factory.mktemp("local_hub")
    with HubServer(root / "server", token=TEST_TOKEN) as server:
        _point_client_at(server.endpoint, root / "hf_home", monkeypatch)
        yield LocalHub(server, monkeypatch)
        close_session()  # drop the client's keep-alive connections to this server
