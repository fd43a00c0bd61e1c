"""A small threaded HTTP server speaking the subset of the Hugging Face Hub API used by cotprompt.

It exists so that pushing and pulling can be tested over real HTTP on 127.0.0.1 with the real
``huggingface_hub`` client: no server that accepts uploads through the Hub API can be installed
here. **Its behaviour follows the requests huggingface_hub (2.x) makes and the responses it
parses, as read from the client's source; it is not a model of the real Hub** (no git storage,
no Xet, no rate limits, simplified permissions and error texts).

Endpoints (model repositories only):

* ``POST /api/repos/create`` - 409 when the repository exists; an initial commit holds a
  ``.gitattributes`` file, like on the Hub. The payload is recorded
  (:attr:`HubServer.create_payloads`); a payload without ``visibility``/``private`` gets the
  namespace's default (private for the namespaces in ``private_by_default``).
* ``POST /api/validate-yaml`` - the README metadata check ``create_commit`` makes first.
* ``GET /api/models/{repo}[/revision/{rev}]`` - model info (``sha``, ``siblings``...);
  ``GET /api/models/{repo}/refs`` - branches, tags, pull requests.
* ``POST /api/models/{repo}/preupload/{rev}`` - upload modes: ``lfs`` for names matching
  ``lfs_patterns`` or files of at least ``lfs_min_size`` bytes, ``regular`` otherwise. (The real
  Hub answers ``lfs`` and the client then uses Xet when ``hf_xet`` is installed, so tests of the
  LFS path set ``HF_HUB_DISABLE_XET``; the server has no Xet endpoints.)
* ``POST /{repo}.git/info/lfs/objects/batch`` - LFS batch API (basic transfer), with
  ``PUT``/``POST`` ``/_lfs/upload|verify/...`` standing in for the storage bucket.
* ``POST /api/models/{repo}/commit/{rev}`` - ndjson commit (``file``, ``lfsFile``,
  ``deletedFile``, ``deletedFolder``), ``?create_pr=1`` opens ``refs/pr/N``.
* ``POST /api/models/{repo}/branch/{branch}``, ``POST /api/models/{repo}/tag/{rev}``.
* ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` by branch, tag, ``refs/pr/N`` or full commit
  id, with ``X-Repo-Commit``, ``ETag`` (git blob id, or sha256 for LFS files together with
  ``X-Linked-Etag``/``X-Linked-Size``), ``Content-Length`` and ``Range`` support.

Tokens (``Authorization: Bearer ...``) map to user names; users may write to their own namespace
and to the organisations listed for them. Writes without a token get 401, unknown tokens 401
("Invalid credentials in Authorization header"), another namespace 403. Private repositories
answer 401 ``RepoNotFound`` without a token and 404 to other users, as the Hub does.

Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) and
``X-Error-Message`` headers, which is how huggingface_hub picks its exception classes.
Tests can tamper with stored files (:meth:`HubServer.commit_files`), inject failures
(:meth:`HubServer.fail`) and read the request log (:attr:`HubServer.requests`).
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

logger = logging.getLogger(__name__)

GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
)
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


class HubHTTPError(Exception):
    """An error answer: status, message and the Hub's ``X-Error-Code``."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class StoredFile:
    """A file at some commit."""

    data: bytes
    lfs: bool

    @property
    def git_oid(self) -> str:
        """The git blob id (what the Hub reports as the ETag of a regular file)."""
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def sha256(self) -> str:
        """The SHA-256 of the content (the LFS object id)."""
        return hashlib.sha256(self.data).hexdigest()

    @property
    def oid(self) -> str:
        """What preupload reports as the remote oid (compared by the client to skip no-ops)."""
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class Commit:
    """One commit: the complete file tree and its parent."""

    oid: str
    parent: str | None
    message: str
    files: dict[str, StoredFile]
    created: float = field(default_factory=time.time)


@dataclass
class Repo:
    """A model repository."""

    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # includes refs/pr/N
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    next_pr: int = 1

    def resolve(self, revision: str) -> Commit:
        """The commit a branch, tag, PR ref or full commit id names."""
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if revision in self.tags:
            return self.commits[self.tags[revision]]
        if _COMMIT_RE.match(revision) and revision in self.commits:
            return self.commits[revision]
        raise HubHTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class HubServer:
    """The server and its in-memory state.

    Args:
        tokens: Token -> user name.
        orgs: Organisation -> members allowed to write to it.
        lfs_patterns: File name patterns preupload answers ``lfs`` for (Hub default: by
            ``.gitattributes``, which lists ``*.safetensors``); ``()`` makes every file regular.
        lfs_min_size: Files at least this large are LFS whatever their name.
        host: Interface to listen on.
        port: 0 for a free port.
        private_by_default: Namespaces whose new repositories are private unless the create
            request asks otherwise (an organisation setting on the Hub).
    """

    def __init__(
        self,
        *,
        tokens: Mapping[str, str] | None = None,
        orgs: Mapping[str, Iterable[str]] | None = None,
        lfs_patterns: Iterable[str] = ("*.safetensors",),
        lfs_min_size: int = 10 * 1024 * 1024,
        host: str = "127.0.0.1",
        port: int = 0,
        private_by_default: Iterable[str] = (),
    ) -> None:
        self.tokens = dict(tokens or {})
        self.orgs = {org: set(members) for org, members in (orgs or {}).items()}
        self.lfs_patterns = tuple(lfs_patterns)
        self.lfs_min_size = lfs_min_size
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.private_by_default = set(private_by_default)
        self.create_payloads: list[dict[str, Any]] = []
        self._faults: list[list[Any]] = []
        self._lock = threading.RLock()
        self._counter = 0
        self._connections: set[Any] = set()
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: close the listening socket and every open (keep-alive) connection."""
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for tests ----------------------------------------------------------------------

    def fail(self, pattern: str, status: int, times: int = 1) -> None:
        """Answer the next ``times`` requests whose path contains ``pattern`` with ``status``."""
        with self._lock:
            self._faults.append([pattern, status, times])

    def clear_faults(self) -> None:
        """Forget the failures :meth:`fail` queued."""
        with self._lock:
            self._faults.clear()

    def create_repo(self, repo_id: str, *, private: bool = False) -> Repo:
        """Create a repository directly (no HTTP), with the initial commit."""
        with self._lock:
            if repo_id in self.repos:
                raise HubHTTPError(409, f"You already created this model repo: {repo_id}")
            repo = Repo(repo_id=repo_id, private=private)
            self.repos[repo_id] = repo
            commit = self._new_commit(
                repo,
                None,
                "initial commit",
                {".gitattributes": StoredFile(GITATTRIBUTES, lfs=False)},
            )
            repo.branches["main"] = commit.oid
            return repo

    def commit_files(
        self,
        repo_id: str,
        files: Mapping[str, bytes | None],
        *,
        branch: str = "main",
        message: str = "edit",
    ) -> str:
        """Commit directly (no HTTP): ``None`` deletes a file; returns the new commit id."""
        with self._lock:
            repo = self.repos[repo_id]
            head = repo.resolve(branch)
            tree = dict(head.files)
            for path, data in files.items():
                if data is None:
                    tree.pop(path, None)
                else:
                    lfs = self._is_lfs(path, len(data))
                    if lfs:
                        self.lfs_objects[hashlib.sha256(data).hexdigest()] = data
                    tree[path] = StoredFile(data, lfs=lfs)
            commit = self._new_commit(repo, head.oid, message, tree)
            repo.branches[branch] = commit.oid
            return commit.oid

    def create_tag(self, repo_id: str, tag: str, revision: str = "main") -> str:
        """Tag a revision directly (no HTTP); returns the tagged commit id."""
        with self._lock:
            repo = self.repos[repo_id]
            repo.tags[tag] = repo.resolve(revision).oid
            return repo.tags[tag]

    def file(self, repo_id: str, path: str, revision: str = "main") -> StoredFile:
        """A stored file."""
        with self._lock:
            return self.repos[repo_id].resolve(revision).files[path]

    def head(self, repo_id: str, revision: str = "main") -> str:
        """The commit id a revision points to."""
        with self._lock:
            return self.repos[repo_id].resolve(revision).oid

    def count(self, method: str, pattern: str) -> int:
        """How many logged requests had this method and a path containing ``pattern``."""
        return sum(1 for m, p, _ in self.requests if m == method and pattern in p)

    # -- internals ------------------------------------------------------------------------------

    def _is_lfs(self, path: str, size: int) -> bool:
        name = path.rsplit("/", 1)[-1]
        return size >= self.lfs_min_size or any(fnmatch.fnmatch(name, p) for p in self.lfs_patterns)

    def _new_commit(
        self, repo: Repo, parent: str | None, message: str, files: dict[str, StoredFile]
    ) -> Commit:
        self._counter += 1
        digest = hashlib.sha1(
            json.dumps(
                [
                    repo.repo_id,
                    parent,
                    message,
                    self._counter,
                    sorted((p, f.git_oid) for p, f in files.items()),
                ]
            ).encode()
        ).hexdigest()
        commit = Commit(oid=digest, parent=parent, message=message, files=files)
        repo.commits[digest] = commit
        return commit

    def _take_fault(self, path: str) -> int | None:
        with self._lock:
            for fault in self._faults:
                if fault[0] in path and fault[2] > 0:
                    fault[2] -= 1
                    return int(fault[1])
        return None

    def _user(self, headers: Mapping[str, str]) -> str | None:
        auth = headers.get("Authorization") or headers.get("authorization")
        if not auth:
            return None
        token = auth.split(" ", 1)[-1].strip()
        if token not in self.tokens:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def _repo_for_read(self, repo_id: str, user: str | None) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not self._can_write(user, repo_id)):
            status = 401 if user is None else 404
            raise HubHTTPError(status, "Repository not found", "RepoNotFound")
        return repo

    def _can_write(self, user: str | None, repo_id: str) -> bool:
        namespace = repo_id.split("/", 1)[0]
        return user is not None and (namespace == user or user in self.orgs.get(namespace, ()))

    def _repo_for_write(self, repo_id: str, user: str | None) -> Repo:
        if user is None:
            raise HubHTTPError(401, "You must be authenticated to write to a repository")
        repo = self._repo_for_read(repo_id, user)
        if not self._can_write(user, repo_id):
            raise HubHTTPError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def _model_info(self, repo: Repo, commit: Commit) -> dict[str, Any]:
        card: dict[str, Any] | None = None
        readme = commit.files.get("README.md")
        if readme is not None:
            match = re.match(r"^---\n(.*?)\n---", readme.data.decode("utf-8", "replace"), re.S)
            if match:
                card = yaml.safe_load(match.group(1)) or None
        siblings = []
        for path, stored in sorted(commit.files.items()):
            entry: dict[str, Any] = {
                "rfilename": path,
                "size": len(stored.data),
                "blobId": stored.git_oid,
            }
            if stored.lfs:
                entry["lfs"] = {
                    "sha256": stored.sha256,
                    "size": len(stored.data),
                    "pointerSize": 134,
                }
            siblings.append(entry)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.created))
        return {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/", 1)[0],
            "sha": commit.oid,
            "lastModified": stamp,
            "createdAt": stamp,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "tags": list((card or {}).get("tags") or []),
            "library_name": (card or {}).get("library_name"),
            "cardData": card,
            "siblings": siblings,
        }

    # -- request handling (called from the handler threads) -------------------------------------

    def handle(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Route one request; returns ``(status, headers, body)``."""
        split = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        fault = self._take_fault(split.path)
        if fault is not None:
            return fault, {}, json.dumps({"error": "injected failure"}).encode()
        try:
            with self._lock:
                user = self._user(headers)
                return self._route(method, segments, query, headers, body, user)
        except HubHTTPError as err:
            extra = {"X-Error-Message": err.message, **err.headers}
            if err.code:
                extra["X-Error-Code"] = err.code
            return err.status, extra, json.dumps({"error": err.message}).encode()

    def _route(
        self,
        method: str,
        seg: list[str],
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        user: str | None,
    ) -> tuple[int, dict[str, str], bytes]:
        if seg[:2] == ["api", "repos"] and seg[2:] == ["create"] and method == "POST":
            return self._create(json.loads(body or b"{}"), user)
        if seg == ["api", "validate-yaml"] and method == "POST":
            return self._validate_yaml(json.loads(body or b"{}"))
        if seg == ["api", "whoami-v2"] and method == "GET":
            if user is None:
                raise HubHTTPError(401, "Invalid username or password.")
            orgs = [{"name": o} for o, members in self.orgs.items() if user in members]
            return _json({"type": "user", "name": user, "orgs": orgs})
        if len(seg) >= 4 and seg[:2] == ["api", "models"]:
            return self._api_models(method, f"{seg[2]}/{seg[3]}", seg[4:], query, body, user)
        if (
            len(seg) == 6
            and seg[1].endswith(".git")
            and seg[2:] == ["info", "lfs", "objects", "batch"]
        ):
            return self._lfs_batch(f"{seg[0]}/{seg[1][:-4]}", json.loads(body), user)
        if len(seg) == 5 and seg[0] == "_lfs" and seg[1] == "upload" and method == "PUT":
            return self._lfs_put(seg[4], body)
        if len(seg) == 4 and seg[0] == "_lfs" and seg[1] == "verify" and method == "POST":
            return self._lfs_verify(f"{seg[2]}/{seg[3]}", json.loads(body), user)
        if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:]), headers, user)
        raise HubHTTPError(404, f"no route for {method} /{'/'.join(seg)}")

    def _create(
        self, payload: Mapping[str, Any], user: str | None
    ) -> tuple[int, dict[str, str], bytes]:
        if user is None:
            raise HubHTTPError(401, "You must be authenticated to create a repository")
        if payload.get("type") not in (None, "model"):
            raise HubHTTPError(400, "this test server only hosts model repositories")
        self.create_payloads.append(dict(payload))
        namespace = payload.get("organization") or user
        repo_id = f"{namespace}/{payload['name']}"
        if not self._can_write(user, repo_id):
            raise HubHTTPError(
                403,
                f'You don\'t have the rights to create a model under the namespace "{namespace}"',
            )
        if repo_id in self.repos:  # huggingface_hub reads the url from this answer too
            message = f"You already created this model repo: {repo_id}"
            return (
                409,
                {"Content-Type": "application/json", "X-Error-Message": message},
                json.dumps({"error": message, "url": f"{self.url}/{repo_id}"}).encode(),
            )
        if "visibility" in payload:
            private = payload["visibility"] == "private"
        elif "private" in payload:
            private = bool(payload["private"])
        else:
            private = namespace in self.private_by_default
        self.create_repo(repo_id, private=private)
        return _json({"url": f"{self.url}/{repo_id}", "name": repo_id})

    def _validate_yaml(self, payload: Mapping[str, Any]) -> tuple[int, dict[str, str], bytes]:
        content = str(payload.get("content", ""))
        match = re.match(r"^---\n(.*?)\n---", content, re.S)
        try:
            if match:
                yaml.safe_load(match.group(1))
        except yaml.YAMLError as exc:
            return (
                400,
                {"Content-Type": "application/json"},
                json.dumps(
                    {"errors": [{"message": f"invalid YAML: {exc}"}], "warnings": []}
                ).encode(),
            )
        return _json({"errors": [], "warnings": []})

    def _api_models(
        self,
        method: str,
        repo_id: str,
        rest: list[str],
        query: Mapping[str, str],
        body: bytes,
        user: str | None,
    ) -> tuple[int, dict[str, str], bytes]:
        if not rest and method in ("GET", "HEAD"):
            repo = self._repo_for_read(repo_id, user)
            return _json(self._model_info(repo, repo.resolve("main")))
        action = rest[0]
        if action == "revision" and len(rest) >= 2 and method in ("GET", "HEAD"):
            repo = self._repo_for_read(repo_id, user)
            return _json(self._model_info(repo, repo.resolve("/".join(rest[1:]))))
        if action == "refs" and method == "GET":
            repo = self._repo_for_read(repo_id, user)
            branches = [
                {"name": n, "ref": f"refs/heads/{n}", "targetCommit": c}
                for n, c in repo.branches.items()
                if not n.startswith("refs/pr/")
            ]
            tags = [
                {"name": n, "ref": f"refs/tags/{n}", "targetCommit": c}
                for n, c in repo.tags.items()
            ]
            data: dict[str, Any] = {"branches": branches, "tags": tags, "converts": []}
            if query.get("include_prs"):
                data["pullRequests"] = [
                    {"name": n, "ref": n, "targetCommit": c}
                    for n, c in repo.branches.items()
                    if n.startswith("refs/pr/")
                ]
            return _json(data)
        if action == "preupload" and len(rest) >= 2 and method == "POST":
            return self._preupload(repo_id, "/".join(rest[1:]), json.loads(body), user)
        if action == "commit" and len(rest) >= 2 and method == "POST":
            return self._commit(
                repo_id, "/".join(rest[1:]), body, user, create_pr=query.get("create_pr") == "1"
            )
        if action == "branch" and len(rest) >= 2 and method == "POST":
            repo = self._repo_for_write(repo_id, user)
            branch = "/".join(rest[1:])
            if branch in repo.branches:
                raise HubHTTPError(409, "Reference already exists")
            start = json.loads(body or b"{}").get("startingPoint") or "main"
            repo.branches[branch] = repo.resolve(start).oid
            return _json({})
        if action == "tag" and len(rest) >= 2 and method == "POST":
            repo = self._repo_for_write(repo_id, user)
            tag = json.loads(body or b"{}")["tag"]
            if tag in repo.tags:
                raise HubHTTPError(409, "Tag already exists")
            repo.tags[tag] = repo.resolve("/".join(rest[1:])).oid
            return _json({})
        raise HubHTTPError(404, f"no route for {method} /api/models/{repo_id}/{'/'.join(rest)}")

    def _preupload(
        self, repo_id: str, revision: str, payload: Mapping[str, Any], user: str | None
    ) -> tuple[int, dict[str, str], bytes]:
        repo = self._repo_for_write(repo_id, user)
        head = repo.resolve(revision)
        files = []
        for item in payload.get("files", []):
            path = item["path"]
            existing = head.files.get(path)
            files.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if self._is_lfs(path, int(item["size"])) else "regular",
                    "shouldIgnore": False,
                    "oid": existing.oid if existing is not None else None,
                }
            )
        return _json({"files": files, "commitOid": head.oid})

    def _lfs_batch(
        self, repo_id: str, payload: Mapping[str, Any], user: str | None
    ) -> tuple[int, dict[str, str], bytes]:
        self._repo_for_write(repo_id, user)
        if payload.get("operation") != "upload":
            raise HubHTTPError(400, "only uploads are supported")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = str(obj["oid"]), int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.lfs_objects:
                entry["actions"] = {
                    "upload": {"href": f"{self.url}/_lfs/upload/{repo_id}/{oid}", "header": {}},
                    "verify": {"href": f"{self.url}/_lfs/verify/{repo_id}", "header": {}},
                }
            objects.append(entry)
        return (
            200,
            {"Content-Type": "application/vnd.git-lfs+json"},
            json.dumps({"transfer": "basic", "objects": objects}).encode(),
        )

    def _lfs_put(self, oid: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubHTTPError(400, "uploaded content does not match the object id")
        self.lfs_objects[oid] = body
        return 200, {}, b""

    def _lfs_verify(
        self, repo_id: str, payload: Mapping[str, Any], user: str | None
    ) -> tuple[int, dict[str, str], bytes]:
        self._repo_for_write(repo_id, user)
        data = self.lfs_objects.get(str(payload.get("oid")))
        if data is None or len(data) != int(payload.get("size", -1)):
            raise HubHTTPError(404, "object not found")
        return _json({"success": True})

    def _commit(
        self, repo_id: str, revision: str, body: bytes, user: str | None, *, create_pr: bool
    ) -> tuple[int, dict[str, str], bytes]:
        repo = self._repo_for_write(repo_id, user)
        head = repo.resolve(revision)
        if revision not in repo.branches:
            raise HubHTTPError(
                400, f"Cannot commit to {revision}: not a branch", "RevisionNotFound"
            )
        summary, tree = "", dict(head.files)
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
                parent = value.get("parentCommit")
                if parent and not create_pr and not head.oid.startswith(parent):
                    raise HubHTTPError(
                        412, "A commit has happened since. Please refresh and try again."
                    )
            elif key == "file":
                data = base64.b64decode(value["content"])
                tree[value["path"]] = StoredFile(data, lfs=False)
            elif key == "lfsFile":
                data = self.lfs_objects.get(value["oid"])
                if data is None:
                    raise HubHTTPError(422, f"LFS object {value['oid']} was not uploaded")
                tree[value["path"]] = StoredFile(data, lfs=True)
            elif key == "deletedFile":
                if tree.pop(value["path"], None) is None:
                    raise HubHTTPError(404, f"{value['path']} does not exist", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for path in [p for p in tree if p.startswith(prefix)]:
                    del tree[path]
            else:
                raise HubHTTPError(400, f"unknown commit operation {key!r}")
        commit = self._new_commit(repo, head.oid, summary, tree)
        pr_url = None
        if create_pr:
            number = repo.next_pr
            repo.next_pr += 1
            repo.branches[f"refs/pr/{number}"] = commit.oid
            pr_url = f"{self.url}/{repo_id}/discussions/{number}"
        else:
            repo.branches[revision] = commit.oid
        return _json(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self.url}/{repo_id}/commit/{commit.oid}",
                "pullRequestUrl": pr_url,
                "hookOutput": "",
            }
        )

    def _resolve(
        self, repo_id: str, revision: str, path: str, headers: Mapping[str, str], user: str | None
    ) -> tuple[int, dict[str, str], bytes]:
        repo = self._repo_for_read(repo_id, user)
        commit = repo.resolve(revision)
        stored = commit.files.get(path)
        if stored is None:
            raise HubHTTPError(
                404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": commit.oid}
            )
        out = {
            "X-Repo-Commit": commit.oid,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if stored.lfs:
            out.update(
                {
                    "ETag": f'"{stored.sha256}"',
                    "X-Linked-Etag": f'"{stored.sha256}"',
                    "X-Linked-Size": str(len(stored.data)),
                }
            )
        else:
            out["ETag"] = f'"{stored.git_oid}"'
        data = stored.data
        match = re.fullmatch(
            r"bytes=(\d+)-(\d*)", headers.get("Range") or headers.get("range") or ""
        )
        if match:
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            out["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return 206, out, data[start : end + 1]
        return 200, out, data


def _json(data: Any, status: int = 200) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(data).encode()


def _make_handler(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10

        def setup(self) -> None:
            super().setup()
            with server._lock:
                server._connections.add(self.connection)

        def finish(self) -> None:
            with server._lock:
                server._connections.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def _body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(parts)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _serve(self) -> None:
            body = self._body() if self.command in ("POST", "PUT") else b""
            status, headers, payload = server.handle(
                self.command, self.path, dict(self.headers.items()), body
            )
            with server._lock:
                server.requests.append((self.command, self.path.split("?", 1)[0], status))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_HEAD = do_POST = do_PUT = _serve  # http.server's naming

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("hub-server: " + format, *args)

    return Handler
