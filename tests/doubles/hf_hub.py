"""A Hugging Face hub double: the file-download routes `huggingface_hub.hf_hub_download` uses.

The hub is unreachable from the test machines; `HF_ENDPOINT` points the real client at this
server on 127.0.0.1. `HEAD|GET /{org}/{name}/resolve/{revision}/{file}` answers like the hub:
`X-Repo-Commit`, `ETag` and `Content-Length` on a hit; 404 with `X-Error-Code: EntryNotFound`
for a missing file, `RepoNotFound` for an unknown repo; 401 `GatedRepo` for a gated repo
requested without the right `Authorization: Bearer` token.

    with HubDouble() as hub:
        hub.add_repo("org/model", {"tokenizer.json": data}, gated_token="hf_x")
        env["HF_ENDPOINT"] = hub.url
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


class HubDouble:
    def __init__(self) -> None:
        self.repos: dict[str, tuple[str, dict[str, bytes], str | None]] = {}
        self.requests: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None

    def add_repo(
        self, repo_id: str, files: dict[str, bytes], *, gated_token: str | None = None
    ) -> str:
        """Serve `files` as repo `repo_id`; returns its commit hash."""
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        self.repos[repo_id] = (commit, dict(files), gated_token)
        return commit

    def __enter__(self) -> HubDouble:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def do_GET(self) -> None:
                hub._answer(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _answer(self, h: BaseHTTPRequestHandler, *, body: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        self.requests.append((h.command, path))
        parts = path.strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._send(h, 404, {"X-Error-Code": "RepoNotFound"}, b"", body)
        repo_id, filename = f"{parts[0]}/{parts[1]}", "/".join(parts[4:])
        if repo_id not in self.repos:
            return self._send(
                h, 404, {"X-Error-Code": "RepoNotFound"}, b"Repository not found", body
            )
        commit, files, gated_token = self.repos[repo_id]
        if gated_token is not None and h.headers.get("Authorization") != f"Bearer {gated_token}":
            return self._send(
                h, 401, {"X-Error-Code": "GatedRepo"}, b"Access to model is restricted", body
            )
        if filename not in files:
            return self._send(
                h,
                404,
                {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit},
                b"Entry not found",
                body,
            )
        data = files[filename]
        etag = hashlib.sha256(data).hexdigest()
        return self._send(h, 200, {"X-Repo-Commit": commit, "ETag": f'"{etag}"'}, data, body)

    def _send(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        data: bytes,
        body: bool,
    ) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)
