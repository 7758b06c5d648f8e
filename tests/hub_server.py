"""A local, in-memory stand-in for the Hugging Face Hub HTTP API, plus the `local_hub` pytest fixture.

Tests that push to / pull from "the Hub" use it so they never touch the network. It speaks the subset of the API that
`huggingface_hub` 2.4 uses for model repos (read from its source):

* ``POST /api/repos/create`` -- `create_repo`; 409 + ``url`` if it exists (`exist_ok=True` swallows it). Records
  ``visibility``/``private`` on `Repo.private`; a new repo gets an empty first commit. No namespace -> ``test-user/``.
* ``POST /api/validate-yaml`` -- checked before committing a README.md; always valid here.
* ``POST /api/models/{repo}/preupload/{rev}`` -- answers ``uploadMode: "regular"`` for every file, so the client sends
  contents inline (base64) in the commit and never starts an LFS or Xet transfer. Returns the current blob's git-sha1
  as ``oid`` so unchanged files are dropped client-side, as on the real Hub.
* ``POST /api/models/{repo}/commit/{branch}`` -- NDJSON commit (header, file, deletedFile, deletedFolder). ``lfsFile``
  and ``create_pr`` are rejected: this server never asks for LFS and has no pull requests.
* ``GET /api/models/{repo}[/revision/{rev}]`` -- `model_info`/`repo_info`; `snapshot_download` and diffusers'
  `resolve_revision` use it to pin a revision to a commit sha.
* ``GET /api/models/{repo}/tree/{rev}[/{path}]`` -- `list_repo_tree`/`list_repo_files` (one page, no pagination).
* ``HEAD|GET /{repo}/resolve/{rev}/{path}`` -- `hf_hub_download`: 200 with ``X-Repo-Commit``, ``ETag`` (git-sha1) and
  ``Content-Length``. No ``X-Xet-Hash`` header is ever sent, so downloads are plain HTTP.

Errors carry the ``X-Error-Code`` header that `hf_raise_for_status` maps: ``RepoNotFound`` -> `RepositoryNotFoundError`,
``RevisionNotFound`` -> `RevisionNotFoundError`, ``EntryNotFound`` -> `RemoteEntryNotFoundError` (an
`EntryNotFoundError`). Revisions are ``main`` or a full commit sha; each commit stores a full snapshot of the files.
Any token is accepted and private repos are not enforced.

`huggingface_hub` reads ``HF_ENDPOINT``, offline/Xet/cache settings into module constants at import time, and copies
live elsewhere: the module-level ``huggingface_hub.hf_api.api`` (whose bound methods `create_repo`, `upload_folder`,
`model_info` diffusers imports) and ``from huggingface_hub.constants import HF_HUB_OFFLINE`` in diffusers.
`patch_hf_clients` rewrites them all; the fixture also installs an HTTP client that refuses every host but this
server, so a missed code path fails loudly instead of reaching (or hanging on) huggingface.co.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

DEFAULT_NAMESPACE = "test-user"
_API_ACTIONS = ("revision", "tree", "preupload", "commit")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub uses as the ETag of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, bytes]  # full snapshot: path in repo -> content
    parent: str | None
    date: str = field(default_factory=_now)


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)  # oldest first
    branches: dict[str, str] = field(default_factory=dict)  # branch name -> commit oid
    created_at: str = field(default_factory=_now)

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision)
        return next((c for c in self.commits if c.oid == oid), None)

    def files(self, revision: str = "main") -> dict[str, bytes]:
        """Snapshot of the files at `revision` (branch name or commit sha)."""
        commit = self.resolve(revision)
        if commit is None:
            raise KeyError(f"unknown revision {revision!r} of {self.repo_id}")
        return dict(commit.files)

    def add_commit(self, branch: str, message: str, files: dict[str, bytes]) -> Commit:
        parent = self.branches.get(branch)
        digest = json.dumps([self.repo_id, parent, message, len(self.commits), sorted(
            (path, git_blob_sha1(data)) for path, data in files.items())])
        commit = Commit(hashlib.sha1(digest.encode()).hexdigest(), message, dict(files), parent)
        self.commits.append(commit)
        self.branches[branch] = commit.oid
        return commit


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, body=None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}
        self.body = body if body is not None else {"error": message}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so every response carries a Content-Length
    hub: LocalHub  # set on a per-server subclass

    def log_message(self, format, *args):  # keep pytest output quiet
        pass

    def do_GET(self):
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.hub.lock:
            self.hub.requests.append((self.command, url.path))
            try:
                parts = [unquote(p) for p in url.path.strip("/").split("/")]
                status, headers, payload = self._route(parts, parse_qs(url.query), body)
            except Exception as exc:  # noqa: BLE001 -- a server bug => 400, not 5xx (clients retry 5xx with backoff)
                err = exc if isinstance(exc, HubError) else HubError(400, f"local_hub internal error: {exc!r}")
                status, headers, payload = err.status, dict(err.headers), json.dumps(err.body).encode()
                headers["Content-Type"] = "application/json"
                if err.code:
                    headers["X-Error-Code"] = err.code
                headers["X-Error-Message"] = str(err)
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(payload)))
        for key, value in headers.items():
            self.send_header(key, str(value))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    # -- routing ------------------------------------------------------------------------------------------------

    def _route(self, parts: list[str], query: dict, body: bytes):
        method = self.command
        if method == "POST" and parts == ["api", "repos", "create"]:
            return self._create_repo(json.loads(body))
        if method == "POST" and parts == ["api", "validate-yaml"]:
            return _json({"errors": [], "warnings": []})
        if parts[:2] == ["api", "models"] and len(parts) > 2:
            rest = parts[2:]
            cut = next((i for i in range(1, len(rest)) if rest[i] in _API_ACTIONS), len(rest))
            repo_id, action, args = "/".join(rest[:cut]), rest[cut] if cut < len(rest) else None, rest[cut + 1:]
            if method == "GET" and action is None and len(rest) <= 2:  # longer: an endpoint this server lacks
                return self._info(repo_id, "main", query)
            if method == "GET" and action == "revision" and args:
                return self._info(repo_id, "/".join(args), query)
            if method == "GET" and action == "tree" and args:
                return self._tree(repo_id, args[0], "/".join(args[1:]), query)
            if method == "POST" and action == "preupload" and args:
                return self._preupload(repo_id, "/".join(args), json.loads(body))
            if method == "POST" and action == "commit" and args:
                return self._commit(repo_id, "/".join(args), query, body)
        if method in ("GET", "HEAD") and "resolve" in parts[1:] and parts[0] != "api":
            i = parts.index("resolve", 1)
            if len(parts) > i + 2:
                return self._resolve(repo_id="/".join(parts[:i]), revision=parts[i + 1], path="/".join(parts[i + 2:]))
        raise HubError(404, f"local_hub does not implement {method} {self.path}")

    # -- helpers ------------------------------------------------------------------------------------------------

    def _repo(self, repo_id: str) -> Repo:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            raise HubError(404, "Repository not found", code="RepoNotFound")
        return repo

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return commit

    # -- endpoints ----------------------------------------------------------------------------------------------

    def _create_repo(self, payload: dict):
        if payload.get("type", "model") != "model":
            raise HubError(400, "local_hub only supports model repos")
        repo_id = f"{payload.get('organization') or DEFAULT_NAMESPACE}/{payload['name']}"
        url = f"{self.hub.endpoint}/{repo_id}"
        if repo_id in self.hub.repos:
            raise HubError(409, "You already created this model repo", body={"error": "already exists", "url": url})
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = self.hub.repos[repo_id] = Repo(repo_id, private=private)
        repo.add_commit("main", "initial commit", {})
        return _json({"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def _info(self, repo_id: str, revision: str, query: dict):
        repo = self._repo(repo_id)
        commit = self._commit_at(repo, revision)
        with_blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = [
            {"rfilename": path, **({"size": len(data), "blobId": git_blob_sha1(data)} if with_blobs else {})}
            for path, data in sorted(commit.files.items())
        ]
        return _json({
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
            "author": repo_id.split("/")[0], "sha": commit.oid, "private": repo.private, "disabled": False,
            "gated": False, "downloads": 0, "likes": 0, "tags": [], "library_name": None,
            "lastModified": commit.date, "createdAt": repo.created_at, "siblings": siblings,
        })

    def _tree(self, repo_id: str, revision: str, path: str, query: dict):
        commit = self._commit_at(self._repo(repo_id), revision)
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        entries: dict[str, dict] = {}
        for file_path, data in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            *dirs, _ = file_path[len(prefix):].split("/")
            for depth in range(1, len(dirs) + 1 if recursive else min(len(dirs), 1) + 1):
                dir_path = prefix + "/".join(dirs[:depth])
                oid = hashlib.sha1(f"{commit.oid}:{dir_path}".encode()).hexdigest()
                entries.setdefault(dir_path, {"type": "directory", "path": dir_path, "oid": oid, "size": 0})
            if recursive or not dirs:
                entries[file_path] = {"type": "file", "path": file_path, "size": len(data), "oid": git_blob_sha1(data)}
        if prefix and not entries:
            raise HubError(404, f"{path} does not exist on {revision}", code="EntryNotFound")
        return _json(list(entries.values()))

    def _preupload(self, repo_id: str, revision: str, payload: dict):
        commit = self._commit_at(self._repo(repo_id), revision)
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": git_blob_sha1(commit.files[f["path"]]) if f["path"] in commit.files else None}
            for f in payload["files"]
        ]
        return _json({"files": files, "commitOid": commit.oid})

    def _commit(self, repo_id: str, branch: str, query: dict, body: bytes):
        repo = self._repo(repo_id)
        if query.get("create_pr", ["0"])[0] not in ("0", "false", ""):
            raise HubError(400, "local_hub does not support pull requests (create_pr)")
        if branch not in repo.branches:
            head = self._commit_at(repo, branch)  # a sha is a valid revision but not a branch to commit on
            raise HubError(400, f"Cannot commit on {head.oid}: not a branch")
        files, message = repo.files(branch), ""
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value["summary"]
                parent = value.get("parentCommit")
                if parent and not repo.branches[branch].startswith(parent):
                    raise HubError(412, f"Parent commit {parent} is not the head of {branch}")
            elif key == "file":
                content = value["content"]
                is_b64 = value.get("encoding") == "base64"
                files[value["path"]] = base64.b64decode(content) if is_b64 else content.encode()
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", code="EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {p: d for p, d in files.items() if not p.startswith(folder)}
            else:  # "lfsFile": never requested, since preupload always answers "regular"
                raise HubError(400, f"local_hub does not support commit operation {key!r}")
        commit = repo.add_commit(branch, message, files)
        return _json({"success": True, "commitOid": commit.oid, "hookOutput": "", "pullRequestUrl": None,
                      "commitUrl": f"{self.hub.endpoint}/{repo_id}/commit/{commit.oid}"})

    def _resolve(self, repo_id: str, revision: str, path: str):
        commit = self._commit_at(self._repo(repo_id), revision)
        if path not in commit.files:
            raise HubError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        data = commit.files[path]
        headers = {"Content-Type": "application/octet-stream", "ETag": f'"{git_blob_sha1(data)}"',
                   "X-Repo-Commit": commit.oid, "Content-Length": str(len(data))}
        return 200, headers, data


def _json(obj, status: int = 200):
    return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()


class LocalHub:
    """The server and its inspectable state: `.endpoint`, `.repos` (repo_id -> `Repo`), `.requests` ((method, path))."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"hub": self}))
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="local-hub", daemon=True
        )

    def __enter__(self) -> LocalHub:  # noqa: PYI034 -- typing.Self needs Python 3.11
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def patch_hf_clients(monkeypatch: pytest.MonkeyPatch, endpoint: str, hf_home: Path) -> None:
    """Point already-imported huggingface_hub (and the diffusers/transformers copies of its settings) at `endpoint`."""
    from huggingface_hub import constants, hf_api

    hub_cache, timeout = str(hf_home / "hub"), 5
    env = {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(hf_home),
           "HF_HUB_CACHE": hub_cache, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_ETAG_TIMEOUT": str(timeout),
           "HF_HUB_DOWNLOAD_TIMEOUT": str(timeout)}
    for name, value in env.items():  # for anything that re-reads the environment (e.g. subprocesses)
        monkeypatch.setenv(name, value)
    for name in ("TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    settings = {
        "ENDPOINT": endpoint,  # read at call time by HfApi(), hf_hub_url(), snapshot_download()
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",  # hf_hub_url()
        "HF_HUB_OFFLINE": False,  # the request hook refuses every request while this is True
        "HF_HUB_DISABLE_XET": True,  # upload_folder then takes the plain create_commit path (no hf_xet session)
        "HF_HUB_DISABLE_TELEMETRY": True,  # otherwise the user agent fetches {ENDPOINT}/api/agent-harnesses
        "HF_HUB_ETAG_TIMEOUT": timeout, "HF_HUB_DOWNLOAD_TIMEOUT": timeout,
        "HF_HOME": str(hf_home), "HF_HUB_CACHE": hub_cache, "HUGGINGFACE_HUB_CACHE": hub_cache,
        "HF_ASSETS_CACHE": str(hf_home / "assets"), "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"), "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(hf_home / ".agent_harnesses.json"),
    }
    for name, value in settings.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    # `create_repo`, `upload_folder`, `model_info`, ... are bound methods of this instance (endpoint fixed at import).
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    # Copies taken with `from huggingface_hub.constants import ...` (e.g. diffusers.utils.hub_utils.HF_HUB_OFFLINE).
    copies = {"HF_HUB_OFFLINE": False, "HF_HUB_DISABLE_TELEMETRY": True, "HUGGINGFACE_CO_RESOLVE_ENDPOINT": endpoint}
    for module_name, module in list(sys.modules.items()):
        if module is None or module is constants:
            continue
        if module_name.partition(".")[0] not in ("huggingface_hub", "diffusers", "transformers"):
            continue
        namespace = getattr(module, "__dict__", {})  # not getattr(): don't trigger lazy imports
        for name, value in copies.items():
            if name in namespace:
                monkeypatch.setattr(module, name, value)


def _guarded_client_factory(endpoint: str):
    """An HTTP client like huggingface_hub's default one that raises on any request not sent to `endpoint`."""
    import httpx2
    from huggingface_hub.utils._http import hf_request_event_hook

    allowed = urlsplit(endpoint)

    def refuse_other_hosts(request) -> None:
        if (request.url.host, request.url.port) != (allowed.hostname, allowed.port):
            raise RuntimeError(f"local_hub: test tried to reach {request.url} instead of the local Hub {endpoint}")

    def factory():
        hooks = {"request": [hf_request_event_hook, refuse_other_hosts]}
        return httpx2.Client(event_hooks=hooks, follow_redirects=True, timeout=None)

    return factory


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """A fresh local Hub; huggingface_hub, diffusers and transformers are patched to use it for the test."""
    import huggingface_hub
    from huggingface_hub.utils import _http

    with LocalHub() as hub:
        patch_hf_clients(monkeypatch, hub.endpoint, tmp_path / "hf_home")
        previous_factory = _http._GLOBAL_CLIENT_FACTORY
        huggingface_hub.set_client_factory(_guarded_client_factory(hub.endpoint))
        try:
            yield hub
        finally:
            huggingface_hub.set_client_factory(previous_factory)  # also closes the guarded client
