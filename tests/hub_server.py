"""A small Hugging Face Hub on 127.0.0.1, for testing Hub code over real HTTP with the real client.

It speaks the part of the Hub API that `huggingface_hub` (2.x) uses to create a model repository, create
a branch, pre-upload and commit small files, validate a README's YAML, report model info, list models
(``GET /api/models``: `filter` by the tags the Hub derives from each README's YAML, `tags`, `library_name`
and ``base_model:<id>``; `sort` by downloads, lastModified or createdAt; `direction`, `limit`), and
resolve/download files (HEAD and GET, with the `ETag` / `X-Repo-Commit` headers `hf_hub_download`
needs). Errors carry the `X-Error-Code` / `X-Error-Message` headers the client maps to its exception
types (`RepositoryNotFoundError`, `RevisionNotFoundError`, `RemoteEntryNotFoundError`, ...).

Authentication follows the Hub: writes need a valid write token (`Authorization: Bearer <token>`); a
private repository is visible to its owner only; an unknown token is refused with 401 everywhere; a
missing token on a private repository is a 401 that reads as "repository not found"; a repository of
another user is a 404, and writing into another namespace a 403.

Faults can be injected per repository, to test what a client makes of them (`HubServer.fail`,
`gate`, `truncate`, `add_large_file`): every request answered with a server error (5xx); a gated
repository (401 / 403 with `X-Error-Code: GatedRepo`, as the Hub answers); a download whose connection
closes before the body announced by `Content-Length` is sent; a file whose size the metadata (`HEAD`)
reports as larger than any real one, without the server ever holding its bytes.

Everything lives in memory. Only model repositories, regular (non-LFS) files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

__all__ = ["Commit", "HubServer", "Repo", "Token"]


@dataclass(frozen=True)
class Token:
    """A user access token: whose it is, and whether it may write."""

    user: str
    write: bool = True


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, bytes]
    parent: str | None


@dataclass
class Repo:
    repo_id: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)  # branch or refs/pr/N -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    num_prs: int = 0
    downloads: int = 0
    created: int = 0  # ticks of the server's clock (one per commit), reported as seconds after 2025-01-01
    modified: int = 0

    @property
    def owner(self) -> str:
        return self.repo_id.split("/")[0]

    def resolve(self, revision: str) -> Commit | None:
        oid = self.refs.get(revision, revision)
        return self.commits.get(oid)


def git_blob_oid(content: bytes) -> str:
    """The git object id of a file, as the Hub reports it for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class _HTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers, self.body = headers or {}, body or {}


class HubServer:
    """An in-memory Hub served on 127.0.0.1 at a random port.

    Args:
        tokens (`dict[str, Token]`):
            The valid tokens.

    Attributes:
        url (`str`): the endpoint to set as `HF_ENDPOINT`.
        repos (`dict[str, Repo]`): the repositories, by id.
        requests (`list[tuple[str, str]]`): `(method, path)` of every request received.
    """

    def __init__(self, tokens: dict[str, Token]):
        self.tokens = dict(tokens)
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        # Injected faults, by repository id (see `fail`, `gate`, `truncate`, `add_large_file`).
        self.failing: dict[str, int] = {}
        self.gated: dict[str, set[str]] = {}
        self.truncated: dict[tuple[str, str], tuple[int, bool]] = {}
        self.large_files: dict[tuple[str, str], int] = {}
        self.listing_status: int | None = None  # answer `GET /api/models` with this error status
        self.clock = 0
        self.lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def reset(self) -> None:
        with self.lock:
            self.repos.clear()
            self.requests.clear()
            self.failing.clear()
            self.gated.clear()
            self.truncated.clear()
            self.large_files.clear()
            self.listing_status = None

    # ------------------------------------------------------------------ fault injection

    def fail(self, repo_id: str, status: int = 503) -> None:
        """Answer every request about `repo_id` with `status` (a server error), as a Hub outage does."""
        self.failing[repo_id] = status

    def gate(self, repo_id: str, granted: tuple[str, ...] = ()) -> None:
        """Make `repo_id` gated: only its owner and the users in `granted` may read its files."""
        self.gated[repo_id] = set(granted)

    def truncate(self, repo_id: str, path: str, keep: int, *, hang_up: bool = True) -> None:
        """Downloads of `path` send only its first `keep` bytes.

        With `hang_up`, the response announces the whole file (`Content-Length`) and the connection closes
        after `keep` bytes (a dropped connection); without it, the response is a complete one of `keep`
        bytes, shorter than the size the file's metadata (`HEAD`) reported (a truncating proxy).
        """
        self.truncated[(repo_id, path)] = (keep, hang_up)

    def add_large_file(self, repo_id: str, path: str, size: int) -> None:
        """A file of `size` bytes (spaces) in `repo_id`'s main revision, never held in memory.

        Its metadata (`HEAD`) reports the size; a `GET` would stream it (the tests check it is never asked).
        """
        with self.lock:
            repo = self.repos[repo_id]
            head = repo.resolve("main")
            self._commit(repo, "main", f"add {path}", {**head.files, path: b""}, parent=head.oid)
            self.large_files[(repo_id, path)] = size

    def downloads(self, repo_id: str) -> list[str]:
        """The paths of `repo_id` asked for with a `GET` (a file's body, not only its metadata)."""
        prefix = f"/{repo_id}/resolve/"
        return [path for method, path in self.requests if method == "GET" and path.startswith(prefix)]

    def commits_of(self, repo_id: str) -> list[Commit]:
        """The commits of a repository, oldest first (the initial commit included)."""
        return list(self.repos[repo_id].commits.values())

    def add_repo(self, repo_id: str, *, private: bool = False, files: dict[str, bytes] | None = None) -> Repo:
        """Create a repository directly (no HTTP), with one commit holding `files`."""
        with self.lock:
            repo = self.repos[repo_id] = Repo(repo_id, private)
            self._commit(
                repo, "main", "initial commit", {".gitattributes": b"", **(files or {})}, parent=None
            )
            return repo

    def _commit(
        self, repo: Repo, ref: str, message: str, files: dict[str, bytes], parent: str | None
    ) -> Commit:
        digest = hashlib.sha1(
            json.dumps(
                [parent, message, len(repo.commits), sorted((p, git_blob_oid(c)) for p, c in files.items())]
            ).encode()
        ).hexdigest()
        commit = repo.commits[digest] = Commit(digest, message, files, parent)
        repo.refs[ref] = digest
        self.clock += 1
        repo.created = repo.created or self.clock
        repo.modified = self.clock
        return commit


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "sdfp-test-hub/1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        # ---------------------------------------------------------------- plumbing

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def _dispatch(self, method: str) -> None:
            split = urlsplit(self.path)
            self.query = parse_qs(split.query)
            raw = [unquote(part) for part in split.path.split("/")[1:]]
            hub.requests.append((method, split.path))
            length = int(self.headers.get("Content-Length") or 0)
            self.body = self.rfile.read(length) if length else b""
            try:
                with hub.lock:
                    try:
                        self._route(method, raw)
                    except (KeyError, TypeError, ValueError) as e:  # a malformed request, not a server bug
                        raise _HTTPError(400, f"Bad request: {e!r}") from e
            except _HTTPError as e:
                headers = dict(e.headers)
                if e.code:
                    headers["X-Error-Code"] = e.code
                headers["X-Error-Message"] = e.message
                self._send(
                    e.status, json.dumps({"error": e.message, **e.body}).encode(), headers, method=method
                )

        def _send(
            self,
            status: int,
            body: bytes = b"",
            headers: dict[str, str] | None = None,
            *,
            method: str = "GET",
            content_type: str = "application/json",
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, data: Any) -> None:
            self._send(status, json.dumps(data).encode())

        def _route(self, method: str, parts: list[str]) -> None:
            repo_id = "/".join(parts[2:4]) if parts[:2] == ["api", "models"] else "/".join(parts[:2])
            if repo_id in hub.failing:
                status = hub.failing[repo_id]
                raise _HTTPError(status, f"Internal Error - We're working hard to fix this as soon as possible! ({status})")
            if method == "POST" and parts == ["api", "repos", "create"]:
                return self._create_repo()
            if method == "POST" and parts == ["api", "validate-yaml"]:
                return self._validate_yaml()
            if method == "GET" and parts == ["api", "models"]:
                return self._list_models()
            if len(parts) >= 4 and parts[:2] == ["api", "models"]:
                repo_id, rest = "/".join(parts[2:4]), parts[4:]
                if method == "GET" and not rest:
                    return self._model_info(repo_id, "main")
                if method == "GET" and len(rest) == 2 and rest[0] == "revision":
                    return self._model_info(repo_id, rest[1])
                if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
                    return self._preupload(repo_id, rest[1])
                if method == "POST" and len(rest) == 2 and rest[0] == "commit":
                    return self._commit(repo_id, rest[1])
                if method == "POST" and len(rest) == 2 and rest[0] == "branch":
                    return self._create_branch(repo_id, rest[1])
            if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(method, "/".join(parts[:2]), parts[3], "/".join(parts[4:]))
            raise _HTTPError(404, f"no such endpoint: {method} {self.path}")

        # ---------------------------------------------------------------- auth

        def _user(self) -> str | None:
            """The user of the request's token; None without a token; 401 for an unknown token."""
            header = self.headers.get("Authorization")
            if not header:
                return None
            token = header.removeprefix("Bearer ").strip()
            if token not in hub.tokens:
                raise _HTTPError(401, "Invalid credentials in Authorization header")
            return hub.tokens[token].user

        def _readable(self, repo_id: str) -> Repo:
            user = self._user()
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and user is not None and user != repo.owner):
                raise _HTTPError(404, "Repository not found", "RepoNotFound")
            if repo.private and user is None:
                raise _HTTPError(401, "Invalid username or password.", "RepoNotFound")
            return repo

        def _files_readable(self, repo_id: str) -> Repo:
            """`_readable`, and for a gated repository, a user granted access (the Hub gates files, not info)."""
            repo = self._readable(repo_id)
            granted = hub.gated.get(repo_id)
            if granted is not None:
                user = self._user()
                if user is None:
                    raise _HTTPError(
                        401, f"Access to model {repo_id} is restricted. You must have access to it and be "
                        "authenticated to access it. Please log in.", "GatedRepo",
                    )
                if user != repo.owner and user not in granted:
                    raise _HTTPError(
                        403, f"Access to model {repo_id} is restricted and you are not in the authorized list. "
                        f"Visit {hub.url}/{repo_id} to ask for access.", "GatedRepo",
                    )
            return repo

        def _writer(self, namespace: str) -> str:
            user = self._user()
            if user is None:
                raise _HTTPError(401, "You must be authenticated to write to the Hub: pass a token")
            token = hub.tokens[self.headers["Authorization"].removeprefix("Bearer ").strip()]
            if not token.write:
                raise _HTTPError(403, "This token has read access only; a write token is needed")
            if namespace != user:
                raise _HTTPError(403, f"You don't have the rights to write to the namespace {namespace}")
            return user

        def _writable(self, repo_id: str) -> Repo:
            repo = self._readable(repo_id)
            self._writer(repo.owner)
            return repo

        # ---------------------------------------------------------------- endpoints

        def _create_repo(self) -> None:
            payload = json.loads(self.body or b"{}")
            name, organization = payload.get("name"), payload.get("organization")
            if payload.get("type", "model") != "model":
                raise _HTTPError(400, "this test Hub serves model repositories only")
            user = self._user()
            namespace = organization or user
            if namespace is None:
                raise _HTTPError(401, "You must be authenticated to create a repository: pass a token")
            self._writer(namespace)
            repo_id = f"{namespace}/{name}"
            url = f"{hub.url}/{repo_id}"
            if repo_id in hub.repos:
                raise _HTTPError(409, "You already created this model repo", body={"url": url})
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            repo = hub.repos[repo_id] = Repo(repo_id, private)
            hub._commit(
                repo, "main", "initial commit", {".gitattributes": b"*.bin filter=lfs\n"}, parent=None
            )
            self._json(200, {"url": url, "name": repo_id, "id": repo_id})

        def _validate_yaml(self) -> None:
            content = json.loads(self.body or b"{}").get("content", "")
            errors = []
            if content.startswith("---"):
                header = content.split("---", 2)[1] if content.count("---") >= 2 else None
                try:
                    metadata = yaml.safe_load(header) if header is not None else None
                    if header is None or not isinstance(metadata, (dict, type(None))):
                        errors.append({"message": "metadata must be a YAML mapping between two '---' lines"})
                except yaml.YAMLError as e:
                    errors.append({"message": f"invalid YAML: {e}"})
            self._json(400 if errors else 200, {"errors": errors, "warnings": []})

        def _model_info(self, repo_id: str, revision: str) -> None:
            repo = self._readable(repo_id)
            commit = repo.resolve(revision)
            if commit is None:
                raise _HTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            self._json(
                200,
                {
                    "id": repo_id,
                    "modelId": repo_id,
                    "author": repo.owner,
                    "sha": commit.oid,
                    "private": repo.private,
                    "disabled": False,
                    "gated": "manual" if repo_id in hub.gated else False,
                    "tags": [],
                    "siblings": [{"rfilename": path} for path in sorted(commit.files)],
                },
            )

        def _list_models(self) -> None:
            if hub.listing_status is not None:
                raise _HTTPError(hub.listing_status, f"listing refused ({hub.listing_status})")
            user = self._user()
            filters = self.query.get("filter", [])
            found = []
            for repo in hub.repos.values():
                commit = repo.resolve("main")
                if commit is None or (repo.private and user != repo.owner):
                    continue
                tags = _card_tags(commit.files.get("README.md", b""))
                if all(f in tags for f in filters):
                    found.append((repo, commit, tags))
            sort = (self.query.get("sort") or [None])[0]
            if sort is not None:
                order = {"downloads": lambda r: r.downloads, "lastModified": lambda r: r.modified,
                         "createdAt": lambda r: r.created}[sort]
                found.sort(key=lambda item: order(item[0]), reverse=(self.query.get("direction") or ["-1"])[0] == "-1")
            limit = int((self.query.get("limit") or [len(found)])[0])
            self._json(200, [
                {
                    "id": repo.repo_id,
                    "modelId": repo.repo_id,
                    "author": repo.owner,
                    "sha": commit.oid,
                    "private": repo.private,
                    "downloads": repo.downloads,
                    "likes": 0,
                    "tags": tags,
                    "createdAt": _iso(repo.created),
                    "lastModified": _iso(repo.modified),
                }
                for repo, commit, tags in found[:limit]
            ])

        def _create_branch(self, repo_id: str, branch: str) -> None:
            repo = self._writable(repo_id)
            if branch.startswith("refs/"):
                raise _HTTPError(400, f"Invalid reference for a branch: {branch}")
            if branch in repo.refs:
                raise _HTTPError(409, f"Reference already exists: refs/heads/{branch}")
            start = json.loads(self.body or b"{}").get("startingPoint") or "main"
            commit = repo.resolve(start)
            if commit is None:
                raise _HTTPError(404, f"Invalid rev id: {start}", "RevisionNotFound")
            repo.refs[branch] = commit.oid
            self._json(200, {})

        def _preupload(self, repo_id: str, revision: str) -> None:
            repo = self._writable(repo_id)
            commit = repo.resolve(revision)
            current = commit.files if commit is not None else {}
            files = json.loads(self.body or b"{}").get("files", [])
            self._json(
                200,
                {
                    "files": [
                        {
                            "path": f["path"],
                            "uploadMode": "regular",
                            "shouldIgnore": False,
                            "oid": git_blob_oid(current[f["path"]]) if f["path"] in current else None,
                        }
                        for f in files
                    ]
                },
            )

        def _commit(self, repo_id: str, revision: str) -> None:
            repo = self._writable(repo_id)
            parent = repo.resolve(revision)
            if parent is None:
                raise _HTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
            if not lines or lines[0].get("key") != "header":
                raise _HTTPError(400, "a commit starts with a header line")
            header = lines[0]["value"]
            files = dict(parent.files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise _HTTPError(400, "files must be base64-encoded")
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise _HTTPError(404, "A file with this name doesn't exist", "EntryNotFound")
                    del files[value["path"]]
                else:
                    raise _HTTPError(400, f"this test Hub does not support {key!r} operations (LFS, copies)")
            pr_url = None
            if self.query.get("create_pr") == ["1"]:
                repo.num_prs += 1
                ref = f"refs/pr/{repo.num_prs}"
                pr_url = f"{hub.url}/{repo_id}/discussions/{repo.num_prs}"
            else:
                ref = revision if revision in repo.refs else parent.oid
            commit = hub._commit(repo, ref, header.get("summary", ""), files, parent=parent.oid)
            self._json(
                200,
                {
                    "success": True,
                    "commitOid": commit.oid,
                    "commitUrl": f"{hub.url}/{repo_id}/commit/{commit.oid}",
                    "pullRequestUrl": pr_url,
                },
            )

        def _resolve(self, method: str, repo_id: str, revision: str, path: str) -> None:
            repo = self._files_readable(repo_id)
            commit = repo.resolve(revision)
            if commit is None:
                raise _HTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            if path not in commit.files:
                raise _HTTPError(
                    404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": commit.oid}
                )
            if (repo_id, path) in hub.large_files:
                return self._send_large(method, hub.large_files[repo_id, path], commit)
            content = commit.files[path]
            headers = {"ETag": f'"{git_blob_oid(content)}"', "X-Repo-Commit": commit.oid}
            if method == "GET" and (repo_id, path) in hub.truncated:
                keep, hang_up = hub.truncated[repo_id, path]
                if not hang_up:
                    return self._send(200, content[:keep], headers, content_type="application/octet-stream")
                return self._send_truncated(content, keep, headers)
            self._send(200, content, headers, method=method, content_type="application/octet-stream")

        def _send_truncated(self, content: bytes, keep: int, headers: dict[str, str]) -> None:
            """Announce all of `content`, send its first `keep` bytes, and close the connection."""
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(content)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(content[:keep])
            self.wfile.flush()
            self.close_connection = True

        def _send_large(self, method: str, size: int, commit: Commit) -> None:
            headers = {"ETag": f'"large-{size}"', "X-Repo-Commit": commit.oid}
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if method == "GET":
                chunk = b" " * (1 << 20)
                left = size
                while left > 0:
                    self.wfile.write(chunk[: min(left, len(chunk))])
                    left -= len(chunk)

    return Handler


def _card_tags(readme: bytes) -> list[str]:
    """The tags the Hub derives from a model card's YAML: its `tags`, its `library_name`, ``base_model:<id>``."""
    text = readme.decode("utf-8", errors="replace")
    if not text.startswith("---") or text.count("---") < 2:
        return []
    try:
        metadata = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return []
    if not isinstance(metadata, dict):
        return []
    tags = [str(t) for t in metadata.get("tags") or []]
    if metadata.get("library_name"):
        tags.append(str(metadata["library_name"]))
    bases = metadata.get("base_model") or []
    for base in [bases] if isinstance(bases, str) else bases:
        tags.append(f"base_model:{base}")
    return tags


def _iso(ticks: int) -> str:
    import datetime

    moment = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=ticks)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
