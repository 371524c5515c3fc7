"""A local imitation of the Hugging Face hub's file endpoints, for pull tests (set ``HF_ENDPOINT`` to it).

It answers what huggingface_hub asks when it downloads a Git LFS file:

- ``HEAD|GET /{owner}/{repo}/resolve/{revision}/{filename}``: ``302`` to a second server standing in
  for the CDN (another origin, so huggingface_hub takes the metadata from this response, as on the
  real hub), with ``X-Repo-Commit``, ``X-Linked-Etag`` (the sha256), ``X-Linked-Size`` and ``ETag``;
  ``404`` with ``X-Error-Code: EntryNotFound`` / ``RevisionNotFound`` otherwise;
- ``HEAD|GET /cdn/{key}`` on the CDN server: the bytes, ``Accept-Ranges: bytes``, ``Range: bytes=N-``
  answered with ``206`` and ``Content-Range``.

Behaviour, changeable between requests: ``advertise`` (filename -> sha256 to claim instead of the
real one), ``serve_instead`` (filename -> other bytes to send), ``rate`` (bytes per second, 0 = as
fast as possible), ``drops`` (for each coming GET of bytes, close the connection after that many
body bytes), ``ignore_range`` (answer ``200`` with the whole file).

Misbehaviours of a hostile mirror (issue 21): ``endless`` (filenames whose bytes never end: no length,
then zeros for as long as the client reads), ``endless_error`` (filenames whose bytes are answered ``500``
with a body that never ends), ``endless_head`` (the same for the hub's metadata answer). ``sent`` counts
the bytes those endless answers wrote.
``requests`` records ``(method, path, range)`` of each request.
"""

from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

CHUNK = 64 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class HubMirror:
    """Serves files of one or more repositories at one commit; use as a context manager."""

    def __init__(self, files: dict[tuple[str, str], bytes | Path], commit: str = "0" * 40):
        self.files = {key: (Path(v) if isinstance(v, (str, Path)) else v) for key, v in files.items()}
        self.commit = commit
        self.advertise: dict[str, str] = {}
        self.serve_instead: dict[str, bytes] = {}
        self.rate = 0
        self.drops: list[int] = []
        self.ignore_range = False  # answer 200 with every byte, as some proxies and CDNs do
        self.endless: set[str] = set()
        self.endless_error: set[str] = set()
        self.endless_head: set[str] = set()
        self.sent = 0
        self.requests: list[tuple[str, str, str | None]] = []
        self._sha: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self.hub = _Server(("127.0.0.1", 0), self._handler(cdn=False))
        self.cdn = _Server(("127.0.0.1", 0), self._handler(cdn=True))

    # -- helpers --------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.hub.server_address[1]}"

    def sha256(self, repo: str, filename: str) -> str:
        key = (repo, filename)
        if key not in self._sha:
            data = self.files[key]
            digest = hashlib.sha256()
            if isinstance(data, Path):
                with open(data, "rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
            else:
                digest.update(data)
            self._sha[key] = digest.hexdigest()
        return self._sha[key]

    def size(self, repo: str, filename: str) -> int:
        data = self.files[(repo, filename)]
        return data.stat().st_size if isinstance(data, Path) else len(data)

    def gets(self, filename: str) -> list[str | None]:
        """The Range header of every body request for ``filename`` (None: from the start)."""
        keys = {f"/cdn/{i}" for i, k in enumerate(self.files) if k[1] == filename}
        return [r for m, p, r in self.requests if m == "GET" and p in keys]

    def __enter__(self) -> "HubMirror":
        for server in (self.hub, self.cdn):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for server in (self.hub, self.cdn):
            server.shutdown()
            server.server_close()

    # -- the handler ----------------------------------------------------------------------------
    def _handler(self, cdn: bool):
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = unquote(self.path.split("?")[0])
                with mirror._lock:
                    mirror.requests.append((self.command, path, self.headers.get("Range")))
                if cdn:
                    return self._bytes(path, body)
                parts = path.strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._status(404, "RepoNotFound")
                repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                if revision not in ("main", mirror.commit):
                    return self._status(404, "RevisionNotFound")
                if (repo, filename) not in mirror.files:
                    return self._status(404, "EntryNotFound")
                if filename in mirror.endless_head:
                    return self._forever(500)
                key = list(mirror.files).index((repo, filename))
                sha = mirror.advertise.get(filename) or mirror.sha256(repo, filename)
                cdn_port = mirror.cdn.server_address[1]
                self.send_response(302)
                for name, value in (("Location", f"http://127.0.0.1:{cdn_port}/cdn/{key}"),
                                    ("X-Repo-Commit", mirror.commit), ("X-Linked-Etag", f'"{sha}"'),
                                    ("X-Linked-Size", str(mirror.size(repo, filename))),
                                    ("ETag", f'"{hashlib.sha1(filename.encode()).hexdigest()}"'),
                                    ("Content-Length", "0")):
                    self.send_header(name, value)
                self.end_headers()

            def _status(self, code: int, error: str) -> None:
                self.send_response(code)
                self.send_header("X-Error-Code", error)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _bytes(self, path: str, body: bool) -> None:
                try:
                    repo, filename = list(mirror.files)[int(path.rsplit("/", 1)[-1])]
                except (ValueError, IndexError):
                    return self._status(404, "EntryNotFound")
                if filename in mirror.endless_error:
                    return self._forever(500)
                if filename in mirror.endless and body:
                    return self._forever(200)
                data = mirror.serve_instead.get(filename, mirror.files[(repo, filename)])
                size = data.stat().st_size if isinstance(data, Path) else len(data)
                start = 0
                spec = self.headers.get("Range")
                if spec and spec.startswith("bytes=") and not mirror.ignore_range:
                    start = int(spec[6:].split("-")[0] or 0)
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.send_header("Content-Length", str(size - start))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    self._send(data, start, size)

            def _forever(self, code: int) -> None:
                """A response whose body never ends (closing the connection is the only end a client sees)."""
                self.send_response(code)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                block = b"\0" * CHUNK
                try:
                    while mirror.sent < 512 << 20:  # a ceiling, so a client that reads it all stays in memory
                        self.wfile.write(block)
                        with mirror._lock:
                            mirror.sent += len(block)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass

            def _send(self, data, start: int, size: int) -> None:
                with mirror._lock:
                    drop = mirror.drops.pop(0) if mirror.drops else None
                sent = 0
                f = open(data, "rb") if isinstance(data, Path) else None
                try:
                    if f:
                        f.seek(start)
                    pos = start
                    while pos < size:
                        n = min(CHUNK, size - pos)
                        if drop is not None:
                            n = min(n, drop - sent)
                            if n <= 0:
                                self.close_connection = True
                                self.wfile.flush()
                                self.connection.shutdown(2)
                                return
                        block = f.read(n) if f else data[pos:pos + n]
                        self.wfile.write(block)
                        pos += n
                        sent += n
                        if mirror.rate:
                            time.sleep(n / mirror.rate)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    if f:
                        f.close()

        return Handler
