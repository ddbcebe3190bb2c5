"""A tiny fake S3 endpoint on 127.0.0.1 that answers what a test says: an error status with S3's error XML, a hang-up
without an answer, or a body cut short.

Why not the session's SeaweedFS: a real server cannot be told to answer 503 SlowDown, 429 or 500 to one request, to
reset a connection, or to break a download mid-body, and those are the failures whose exit code (75 retried, 2 not)
`kolora_core/storage/transient.py` decides. A test that needs a working S3 uses the `store` fixture (tests/conftest.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape


@dataclass(frozen=True)
class Answer:
    """One reply: `status` with S3's error XML for `code` (none for 2xx), or `hang_up` (close, answer nothing).

    `declared_length` larger than the body sends a Content-Length the body never reaches, then closes: a download
    whose stream breaks (what a server dying mid-transfer looks like)."""

    status: int = 200
    code: str = ""
    message: str = ""
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang_up: bool = False
    declared_length: int | None = None

    def payload(self) -> bytes:
        if not self.code:
            return self.body
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(self.code)}</Code>'
            f"<Message>{escape(self.message)}</Message><RequestId>fake</RequestId></Error>"
        ).encode()


Responder = Callable[[str, str], Answer]  # (method, path with query) -> the answer


def error(status: int, code: str = "", message: str = "") -> Answer:
    """An S3 error reply (code '' = a status without a body, as S3 answers HEAD requests)."""
    return Answer(status=status, code=code, message=message or f"fake {status}")


class FakeS3:
    """A threaded HTTP server answering every request with `responder(method, path)`; `requests` records them."""

    def __init__(self, responder: Responder | Answer) -> None:
        self.responder: Responder = responder if callable(responder) else (lambda _method, _path: responder)
        self.requests: list[tuple[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:  # quiet: pytest shows what matters
                pass

            def _drain(self) -> None:
                """Read the request body (plain or chunked), so closing the socket sends FIN, not a reset."""
                if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    return
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    self.rfile.read(size + 2)
                while self.rfile.readline().strip():  # trailers (aws-chunked checksums) up to the blank line
                    pass

            def _answer(self) -> None:
                self._drain()
                fake.requests.append((self.command, self.path))
                answer = fake.responder(self.command, self.path)
                self.close_connection = True  # one request per connection: nothing left over between answers
                if answer.hang_up:
                    return
                body = answer.payload()
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if answer.code:
                    self.send_header("Content-Type", "application/xml")
                if "Content-Length" not in answer.headers:  # a HEAD answer states the object's length itself
                    self.send_header("Content-Length", str(answer.declared_length or len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.requests if m == method)


@contextmanager
def fake_s3(responder: Responder | Answer) -> Iterator[FakeS3]:
    """A running `FakeS3`, shut down afterwards."""
    fake = FakeS3(responder)
    thread = threading.Thread(target=fake.server.serve_forever, name="fake-s3", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()
        thread.join(timeout=5)
