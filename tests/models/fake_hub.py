"""A Hugging Face hub on 127.0.0.1 that the real `huggingface_hub` client downloads from (no network here).

It answers the three calls `snapshot_download(..., local_dir=...)` makes in huggingface_hub 0.36: the repo info
(`GET /api/models/<repo>/revision/<rev>`: commit sha and file list, which the client filters by allow_patterns),
then per file `HEAD` and `GET /<repo>/resolve/<commit>/<file>` (X-Repo-Commit, ETag = the file's sha256, as the
hub sends for LFS files, and Content-Length). Unknown repos and revisions get the hub's 404 with
`X-Error-Code: RepoNotFound` / `RevisionNotFound`, which the client turns into its own exception types.
Requests are recorded so tests can see which files were really fetched. `modelscope_snapshot` fakes ModelScope's
client the simple way (a function), since its hub protocol is not what these tests are about.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

COMMIT = "0123456789abcdef0123456789abcdef01234567"
DEFAULT_BRANCH = "main"


class FakeHub:
    """repos: repo id -> {file name -> bytes}; every repo has the one revision `main` (= COMMIT)."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.fetched: list[str] = []  # "<repo>/<file>" of every GET of a file
        self.api_calls_before_outage: int | None = None  # answer this many repo-info calls, then 503 (hub down)

    def add(self, repo_id: str, directory: Path, extra: dict[str, bytes] | None = None) -> None:
        files = {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
        self.repos[repo_id] = files | (extra or {})

    def handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet test output
                pass

            def _error(self, code: str) -> None:
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Type", "application/json")
                body = json.dumps({"error": code}).encode()
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _unavailable(self) -> None:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _file(self, send_body: bool) -> None:
                found = re.fullmatch(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.path)
                if not found or found["repo"] not in hub.repos:
                    return self._error("RepoNotFound")
                if found["rev"] not in (COMMIT, DEFAULT_BRANCH):
                    return self._error("RevisionNotFound")
                data = hub.repos[found["repo"]].get(found["file"])
                if data is None:
                    return self._error("EntryNotFound")
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if send_body:
                    hub.fetched.append(f"{found['repo']}/{found['file']}")
                    self.wfile.write(data)
                return None

            def do_HEAD(self) -> None:
                self._file(send_body=False)

            def do_GET(self) -> None:
                info = re.fullmatch(r"/api/models/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>[^/?]+)(?:\?.*)?", self.path)
                if info is None:
                    return self._file(send_body=True)
                if hub.api_calls_before_outage is not None:
                    if hub.api_calls_before_outage <= 0:
                        return self._unavailable()
                    hub.api_calls_before_outage -= 1
                if info["repo"] not in hub.repos:
                    return self._error("RepoNotFound")
                if info["rev"] not in (COMMIT, DEFAULT_BRANCH):
                    return self._error("RevisionNotFound")
                siblings = [{"rfilename": name} for name in hub.repos[info["repo"]]]
                body = json.dumps({"id": info["repo"], "sha": COMMIT, "siblings": siblings}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return None

        return Handler


@contextmanager
def serve(hub: FakeHub) -> Iterator[str]:
    """Run the hub on a free port of 127.0.0.1; yields its endpoint URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), hub.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def modelscope_snapshot(repos: dict[str, Path], calls: list[tuple[str, str | None, list[str]]]) -> Callable[..., str]:
    """A stand-in for modelscope's `snapshot_download` serving local directories, filtered by allow_patterns as the
    hubs filter (huggingface_hub's own `filter_repo_objects`); an unknown repo raises ModelScope's NotExistError."""

    def snapshot_download(
        model_id: str, revision: str | None = None, allow_patterns: list[str] | None = None, local_dir: str = "", **_: Any
    ) -> str:
        from huggingface_hub.utils import filter_repo_objects
        from modelscope.hub.errors import NotExistError

        calls.append((model_id, revision, list(allow_patterns or [])))
        if model_id not in repos:
            raise NotExistError(f"The model: {model_id} not exists", status_code=404)
        source = repos[model_id]
        names = [str(p.relative_to(source)) for p in sorted(source.rglob("*")) if p.is_file()]
        for name in filter_repo_objects(names, allow_patterns=allow_patterns):
            target = Path(local_dir) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, target)
        (Path(local_dir) / "._____temp").mkdir(exist_ok=True)  # the client's own scratch dir, as the real one leaves it
        return local_dir

    return snapshot_download


def point_hf_client_at(endpoint: str, monkeypatch: Any) -> None:
    """What HF_ENDPOINT does when set before import: huggingface_hub 0.36 reads it at import time into
    `constants.ENDPOINT` (the API) and the file URL template that `file_download` imported by name."""
    import huggingface_hub.constants as constants
    import huggingface_hub.file_download as file_download

    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
