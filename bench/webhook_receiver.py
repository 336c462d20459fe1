"""A real local webhook receiver (tests and the webhook bench): a threaded http.server on a
free loopback port that records every request. Paths pick the behaviour:

- ``/ok``: 200;  ``/fail``: 500;  ``/flaky``: 500 the first time a key is seen, then 200;
- ``/slow``: answers only when released (``close``), so the client times out first;
- ``/busy``: 429 with ``Retry-After: 1`` the first time a key is seen, then 200.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    status: int
    at: float  # time.monotonic() when it arrived


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.max_in_flight: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}
        self._seen: dict[str, set[str]] = {"/flaky": set(), "/busy": set()}
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def delivered(self, path: str = "/ok") -> set[str]:
        """Idempotency keys answered 2xx on ``path`` (duplicates collapse: receivers dedupe)."""
        with self._lock:
            return {r.headers["idempotency-key"] for r in self.requests if r.path == path and r.status < 300}

    def count(self, path: str) -> int:
        with self._lock:
            return sum(r.path == path for r in self.requests)

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, path: str, key: str) -> int:
        if path == "/slow":
            self._release.wait(60)
            return 200
        if path == "/fail":
            return 500
        if path in self._seen:
            with self._lock:
                first = key not in self._seen[path]
                self._seen[path].add(key)
            return (500 if path == "/flaky" else 429) if first else 200
        return 200 if path == "/ok" else 404

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the client pools connections

            def do_POST(self) -> None:
                at = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    n = receiver._in_flight.get(self.path, 0) + 1
                    receiver._in_flight[self.path] = n
                    receiver.max_in_flight[self.path] = max(n, receiver.max_in_flight.get(self.path, 0))
                try:
                    status = receiver._answer(self.path, self.headers.get("Idempotency-Key", ""))
                finally:
                    with receiver._lock:
                        receiver._in_flight[self.path] -= 1
                with receiver._lock:
                    receiver.requests.append(Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body, status, at))
                try:
                    self.send_response(status)
                    if status == 429:
                        self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the client gave up (timed out) before the answer
                    pass

            def log_message(self, *args) -> None:
                pass

        return Handler
