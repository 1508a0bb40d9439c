"""A local stand-in for the Hugging Face Hub that the real ``huggingface_hub`` client can talk to.

It answers the subset of the Hub HTTP API that downloads, listings and uploads use, over real HTTP on
127.0.0.1, so tests exercise the client exactly as it runs against huggingface.co:

- ``HEAD``/``GET /{repo_id}/resolve/{revision}/{path}``: file contents with ``X-Repo-Commit``, ``ETag`` and
  ``Content-Length``
- ``GET /api/models/{repo_id}`` and ``GET /api/models/{repo_id}/revision/{revision}``: repo info with ``sha`` and
  ``siblings``; with ``?blobs=true`` (``files_metadata``) each sibling's size, and for the files the repo's
  ``.gitattributes`` sends to LFS the ``lfs`` entry (sha256, size) the Hub reads from their pointer
- ``GET /api/models/{repo_id}/tree/{revision}[/{path}]``: tree listing (``list_repo_files``, ``list_repo_tree``)
- ``GET /api/models/{repo_id}/commits/{revision}``: history, newest first (``list_repo_commits``)
- ``POST /api/repos/create``, ``POST /api/models/{repo_id}/branch/{branch}``
- ``POST /api/models/{repo_id}/preupload/{revision}`` and ``POST /api/models/{repo_id}/commit/{revision}``
  (every file is "regular": contents travel base64-encoded in the NDJSON commit body, so no LFS server is needed);
  ``?create_pr=1`` opens a pull request on a new ``refs/pr/N`` revision
- ``POST /api/models/{repo_id}/discussions`` and ``GET /api/models/{repo_id}/discussions/{num}``: how
  ``upload_folder(create_pr=True)`` opens its pull request before committing to ``refs/pr/N``
- ``GET /api/whoami-v2`` and ``POST /api/validate-yaml`` (called before a ``README.md`` is committed)

Only model repos exist. Revisions are branch names, ``refs/pr/N`` or full 40-hex commit shas. Errors carry the
``X-Error-Code`` header (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) that the client turns into its
typed exceptions. Started with a token, the server answers 401 to writes without ``Authorization: Bearer <token>``
and hides private repos from readers without it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

USER = "test-user"
"""The account every authenticated request belongs to; ``create_repo`` without an org creates repos here."""

_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.pt filter=lfs diff=lfs merge=lfs -text\n"
_LFS_SUFFIXES = (".safetensors", ".pt")  # what _GITATTRIBUTES sends to LFS; other files stay in git
_LFS_POINTER_SIZE = 134  # a git-lfs pointer file's usual size


class RecordedRequest(NamedTuple):
    """One request as the server saw it; ``path`` is percent-encoded and has no query string."""

    method: str
    path: str


class HubError(Exception):
    """An error answer: HTTP status, the Hub's ``X-Error-Code`` (if any), a message, extra headers and JSON fields."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        fields: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.fields = fields or {}


@dataclass(frozen=True)
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    tree: dict[str, str]  # path in repo -> blob oid


@dataclass(frozen=True)
class Discussion:
    num: int
    title: str
    is_pull_request: bool
    created_at: str

    @property
    def git_reference(self) -> str:
        return f"refs/pr/{self.num}"


@dataclass
class Repo:
    repo_id: str
    private: bool
    created_at: str
    refs: dict[str, str] = field(default_factory=dict)  # branch or refs/pr/N -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    discussions: list[Discussion] = field(default_factory=list)  # discussion N is discussions[N - 1]
    api_commits: int = 0  # commits made through the commit endpoint

    def resolve(self, revision: str) -> Commit:
        """The commit a branch, PR ref or full commit sha names."""
        oid = self.refs.get(revision) or (revision if revision in self.commits else None)
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[oid]

    def history(self, revision: str) -> Iterator[Commit]:
        """Commits reachable from ``revision``, newest first."""
        commit: Commit | None = self.resolve(revision)
        while commit is not None:
            yield commit
            commit = self.commits[commit.parent] if commit.parent else None


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob: what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@functools.lru_cache(maxsize=256)
def _sha256_of(blob: Path) -> str:  # blobs are named by content, so a path's hash never changes
    with open(blob, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class HubState:
    """Repos, commits and blob contents (stored on disk under ``root``); safe to use from several threads."""

    def __init__(self, root: Path):
        self._blobs = root / "blobs"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._repos: dict[str, Repo] = {}
        self._lock = threading.RLock()
        self._sequence = itertools.count()  # makes every commit oid unique, even for identical trees

    def create_repo(self, repo_id: str, private: bool) -> bool:
        """Create a repo; False if it already exists."""
        with self._lock:
            if repo_id in self._repos:
                return False
            repo = Repo(repo_id, private, _now())
            self._repos[repo_id] = repo
            # Like the Hub, a new repo starts with one commit holding a .gitattributes file.
            tree = {".gitattributes": self.write_blob(_GITATTRIBUTES)}
            repo.refs["main"] = self._add_commit(repo, None, tree, "initial commit", "").oid
            return True

    def repo(self, repo_id: str, authorized: bool) -> Repo:
        """The repo, or a RepoNotFound error: unknown repos and private ones without a token look the same."""
        with self._lock:
            repo = self._repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def commit(
        self, repo: Repo, revision: str, lines: list[dict[str, Any]], create_pr: bool
    ) -> tuple[Commit, Discussion | None]:
        """Apply an NDJSON commit body on top of branch ``revision``, all or nothing.

        The branch moves to the new commit, or with ``create_pr`` a new pull request's ref does.
        """
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        with self._lock:
            base = self._branch_head(repo, revision)
            parent = header.get("parentCommit")
            if parent and parent != base.oid:
                raise HubError(412, f"Parent commit {parent} is not the head of {revision}")
            tree = self._apply(dict(base.tree), lines)
            title = header.get("summary", "")
            pull_request = self.open_discussion(repo, title, pull_request=True, base=revision) if create_pr else None
            commit = self._add_commit(repo, base.oid, tree, title, header.get("description", ""))
            repo.refs[pull_request.git_reference if pull_request else revision] = commit.oid
            repo.api_commits += 1
            return commit, pull_request

    def open_discussion(self, repo: Repo, title: str, pull_request: bool, base: str = "main") -> Discussion:
        """A new discussion; a pull request also gets a ``refs/pr/N`` ref starting at branch ``base``."""
        with self._lock:
            discussion = Discussion(len(repo.discussions) + 1, title, pull_request, _now())
            if pull_request:
                repo.refs[discussion.git_reference] = self._branch_head(repo, base).oid
            repo.discussions.append(discussion)
            return discussion

    def discussion(self, repo: Repo, num: int) -> Discussion:
        if not 1 <= num <= len(repo.discussions):
            raise HubError(404, f"Discussion {num} not found")
        return repo.discussions[num - 1]

    def _branch_head(self, repo: Repo, branch: str) -> Commit:
        if branch not in repo.refs:
            repo.resolve(branch)  # 404 for an unknown revision; a commit sha is no branch, hence the 400 below
            raise HubError(400, f"{branch} is not a branch")
        return repo.commits[repo.refs[branch]]

    def create_branch(self, repo: Repo, branch: str, starting_point: str) -> None:
        with self._lock:
            if branch in repo.refs:
                raise HubError(409, f"Branch {branch} already exists")
            repo.refs[branch] = repo.resolve(starting_point).oid

    def write_blob(self, content: bytes) -> str:
        oid = git_blob_oid(content)
        path = self._blobs / oid
        if not path.exists():
            path.write_bytes(content)
        return oid

    def blob_path(self, oid: str) -> Path:
        return self._blobs / oid

    def _apply(self, tree: dict[str, str], lines: list[dict[str, Any]]) -> dict[str, str]:
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                tree[value["path"]] = self.write_blob(base64.b64decode(value["content"]))
            elif key == "deletedFile":
                if tree.pop(value["path"], None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                tree = {path: oid for path, oid in tree.items() if not path.startswith(prefix)}
            elif key != "header":
                raise HubError(400, f"Unsupported commit operation {key!r}: this server only takes regular files")
        return tree

    def _add_commit(self, repo: Repo, parent: str | None, tree: dict[str, str], title: str, message: str) -> Commit:
        seed = json.dumps([repo.repo_id, parent, sorted(tree.items()), title, message, next(self._sequence)])
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, title, message, _now(), tree)
        repo.commits[commit.oid] = commit
        return commit


def _route(method: str, pattern: str) -> Callable[[Callable], Callable]:
    """Mark a handler method as answering ``method`` on URLs whose percent-encoded path matches ``pattern``."""

    def mark(func: Callable) -> Callable:
        func.route = (method, re.compile(pattern))  # type: ignore[attr-defined]
        return func

    return mark


_REPO = r"(?P<repo_id>[^/]+/[^/]+)"
_REV = r"(?P<revision>[^/]+)"  # the client percent-encodes '/' in revisions (refs%2Fpr%2F1)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    timeout = 30  # seconds an idle keep-alive connection holds its thread
    server: _HubHTTPServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean; `HubServer.requests` is the log

    # --- plumbing ------------------------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.server.record(RecordedRequest(method, url.path))
        self.query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            handler, params = self._find_handler(method, url.path)
            handler(**params)
        except HubError as error:
            headers = {"X-Error-Message": error.message, **error.headers}
            if error.code:
                headers["X-Error-Code"] = error.code
            self._send_json({"error": error.message, **error.fields}, error.status, headers)

    def _find_handler(self, method: str, path: str) -> tuple[Callable[..., None], dict[str, str]]:
        verb = "GET" if method == "HEAD" else method  # HEAD answers like GET, without a body
        for name in dir(type(self)):
            route = getattr(getattr(type(self), name), "route", None)
            if route and route[0] == verb and (match := route[1].fullmatch(path)):
                params = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                return getattr(self, name), params
        raise HubError(404, f"No route for {method} {path}")

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Invalid JSON body: {error}") from None

    def _authorized(self) -> bool:
        token = self.server.token
        return token is None or self.headers.get("Authorization") == f"Bearer {token}"

    def _require_write_access(self) -> None:
        if not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, repo_id: str) -> Repo:
        return self.server.state.repo(repo_id, self._authorized())

    @property
    def _endpoint(self) -> str:
        return self.server.endpoint

    # --- endpoints ------------------------------------------------------------------------------------------------

    @_route("GET", r"/api/whoami-v2")
    def whoami(self) -> None:
        if "Authorization" not in self.headers or not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")
        self._send_json(
            {
                "type": "user",
                "name": USER,
                "fullname": "Test User",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
            }
        )

    @_route("POST", r"/api/validate-yaml")
    def validate_yaml(self) -> None:
        self._send_json({"errors": [], "warnings": []})

    @_route("POST", r"/api/repos/create")
    def create_repo(self) -> None:
        self._require_write_access()
        payload = self._json_body()
        if payload.get("type", "model") != "model":
            raise HubError(400, "This server only hosts model repos")
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        private = payload.get("visibility") == "private" or payload.get("private") is True
        url = f"{self._endpoint}/{repo_id}"
        if not self.server.state.create_repo(repo_id, private):
            # The client's `exist_ok=True` accepts a 409 and still reads `url` from it.
            raise HubError(409, "You already created this model repo", fields={"url": url})
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    @_route("GET", rf"/api/models/{_REPO}")
    def model_info(self, repo_id: str, revision: str = "main") -> None:
        repo = self._repo(repo_id)
        commit = repo.resolve(revision)
        with_blobs = self.query.get("blobs", "").lower() == "true"
        siblings = [self._sibling(path, oid, with_blobs) for path, oid in sorted(commit.tree.items())]
        self._send_json(
            {
                "_id": repo_id,
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0],
                "sha": commit.oid,
                "lastModified": commit.date,
                "createdAt": repo.created_at,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "spaces": [],
            }
        )

    @_route("GET", rf"/api/models/{_REPO}/revision/{_REV}")
    def model_info_at_revision(self, repo_id: str, revision: str) -> None:
        self.model_info(repo_id, revision)

    @_route("GET", rf"/api/models/{_REPO}/tree/{_REV}(?:/(?P<path>.+))?")
    def tree(self, repo_id: str, revision: str, path: str = "") -> None:
        commit = self._repo(repo_id).resolve(revision)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        files = {name: oid for name, oid in commit.tree.items() if name.startswith(prefix)}
        if prefix and not files:
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        recursive = self.query.get("recursive", "").lower() == "true"
        entries: dict[str, dict[str, Any]] = {}
        for name, oid in sorted(files.items()):
            parts = name[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):  # folders on the way to the file
                folder = prefix + "/".join(parts[:depth])
                # A folder's oid only has to be stable and unique here, not a real git tree hash.
                entries.setdefault(folder, {"type": "directory", "path": folder, "oid": git_blob_oid(folder.encode())})
            if recursive or len(parts) == 1:
                size = self.server.state.blob_path(oid).stat().st_size
                entries[name] = {"type": "file", "path": name, "oid": oid, "size": size}
        self._send_json(list(entries.values()))

    @_route("GET", rf"/api/models/{_REPO}/commits/{_REV}")
    def commits(self, repo_id: str, revision: str) -> None:
        history = self._repo(repo_id).history(revision)
        self._send_json(
            [
                {"id": c.oid, "title": c.title, "message": c.message, "date": c.date, "authors": [{"user": USER}]}
                for c in history
            ]
        )

    @_route("POST", rf"/api/models/{_REPO}/branch/{_REV}")
    def create_branch(self, repo_id: str, revision: str) -> None:
        self._require_write_access()
        repo = self._repo(repo_id)
        self.server.state.create_branch(repo, revision, self._json_body().get("startingPoint") or "main")
        self._send_json({})

    @_route("POST", rf"/api/models/{_REPO}/preupload/{_REV}")
    def preupload(self, repo_id: str, revision: str) -> None:
        self._require_write_access()
        tree = self._repo(repo_id).resolve(revision).tree
        # `oid` of a file already there lets the client drop unchanged files (and skip empty commits), as on the Hub.
        self._send_json(
            {
                "files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": tree.get(f["path"])}
                    for f in self._json_body()["files"]
                ]
            }
        )

    @_route("POST", rf"/api/models/{_REPO}/commit/{_REV}")
    def commit(self, repo_id: str, revision: str) -> None:
        self._require_write_access()
        repo = self._repo(repo_id)
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        create_pr = self.query.get("create_pr") == "1"
        commit, pull_request = self.server.state.commit(repo, revision, lines, create_pr)
        commit_url = f"{self._endpoint}/{repo_id}/commit/{commit.oid}"
        answer = {"success": True, "commitOid": commit.oid, "commitUrl": commit_url}
        if pull_request is not None:
            answer["pullRequestUrl"] = f"{self._endpoint}/{repo_id}/discussions/{pull_request.num}"
        self._send_json(answer)

    @_route("POST", rf"/api/models/{_REPO}/discussions")
    def create_discussion(self, repo_id: str) -> None:
        self._require_write_access()
        payload = self._json_body()
        repo = self._repo(repo_id)
        discussion = self.server.state.open_discussion(repo, payload["title"], bool(payload.get("pullRequest")))
        self._send_json(
            {
                "num": discussion.num,
                "pullRequest": discussion.is_pull_request,
                "url": f"{self._endpoint}/{repo_id}/discussions/{discussion.num}",
            }
        )

    @_route("GET", rf"/api/models/{_REPO}/discussions/(?P<num>\d+)")
    def discussion_details(self, repo_id: str, num: str) -> None:
        repo = self._repo(repo_id)
        discussion = self.server.state.discussion(repo, int(num))
        self._send_json(
            {
                "num": discussion.num,
                "title": discussion.title,
                "status": "open",
                "createdAt": discussion.created_at,
                "author": {"name": USER},
                "repo": {"name": repo_id, "type": "model"},
                "isPullRequest": discussion.is_pull_request,
                "events": [],
                "filesWithConflicts": [],
                "changes": {"base": "refs/heads/main"},
                "diff": "",
            }
        )

    @_route("GET", rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)")
    def resolve(self, repo_id: str, revision: str, path: str) -> None:
        commit = self._repo(repo_id).resolve(revision)
        oid = commit.tree.get(path)
        if oid is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        content = self.server.state.blob_path(oid).read_bytes()
        headers = {"Content-Type": "application/octet-stream", "ETag": f'"{oid}"', "X-Repo-Commit": commit.oid}
        self._send(200, content, headers)  # Content-Length is the file size, for HEAD too

    def _sibling(self, path: str, oid: str, with_blobs: bool) -> dict[str, Any]:
        if not with_blobs:
            return {"rfilename": path}
        blob = self.server.state.blob_path(oid)
        sibling = {"rfilename": path, "blobId": oid, "size": blob.stat().st_size}
        if path.endswith(_LFS_SUFFIXES):  # as the Hub lists an LFS file: its sha256 and size from the pointer
            lfs = {"sha256": _sha256_of(blob), "size": sibling["size"], "pointerSize": _LFS_POINTER_SIZE}
            sibling["lfs"] = lfs
        return sibling


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: HubState, token: str | None):
        super().__init__(("127.0.0.1", 0), _Handler)  # port 0: the OS picks a free port
        self.state = state
        self.token = token
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"
        self._requests: list[RecordedRequest] = []
        self._requests_lock = threading.Lock()

    def record(self, request: RecordedRequest) -> None:
        with self._requests_lock:
            self._requests.append(request)

    def recorded(self) -> list[RecordedRequest]:
        with self._requests_lock:
            return list(self._requests)


class HubServer:
    """The local hub, serving from a background thread while started (also a context manager).

    ``root`` is where blob contents are stored. With ``token`` set, writes need ``Authorization: Bearer <token>``
    and private repos are invisible without it.
    """

    def __init__(self, root: Path, token: str | None = None):
        self._http = _HubHTTPServer(HubState(Path(root)), token)
        # A short poll interval makes `stop` quick: shutdown waits for the serving loop's next poll.
        serve = functools.partial(self._http.serve_forever, poll_interval=0.05)
        self._thread = threading.Thread(target=serve, name="local-hub", daemon=True)

    @property
    def endpoint(self) -> str:
        """Base URL to use as ``HF_ENDPOINT``, e.g. ``http://127.0.0.1:54321``."""
        return self._http.endpoint

    @property
    def token(self) -> str | None:
        return self._http.token

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, in order."""
        return self._http.recorded()

    def commit_count(self, repo_id: str) -> int:
        """How many commits were made through the commit endpoint (the repo's initial commit is not counted)."""
        return self._http.state.repo(repo_id, authorized=True).api_commits

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
