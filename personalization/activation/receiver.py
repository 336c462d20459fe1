"""A webhook receiver that checks what it is sent: the signature over timestamp and body, the
timestamp's age, and repeats by ``Idempotency-Key``. The demo runs one on loopback; it is also
the reference for writing a receiver (docs/webhooks.md "Webhooks")."""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from personalization.activation.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature


@dataclass(frozen=True, slots=True)
class Delivery:
    """A request whose signature matched, within the timestamp's tolerance."""

    key: str  # Idempotency-Key
    body: bytes


def verified(secret: bytes, timestamp: str, sent_signature: str, body: bytes, tolerance_s: int = 300) -> bool:
    """True if ``body`` was signed with ``secret`` at ``timestamp``, less than ``tolerance_s`` ago."""
    try:
        too_old = abs(time.time() - int(timestamp)) > tolerance_s
    except ValueError:
        return False
    return not too_old and hmac.compare_digest(signature(secret, timestamp, body), sent_signature)


class SignedReceiver:
    """Answers 200 to a verified request and 401 to any other; keeps the first delivery of each key."""

    def __init__(self, secret: bytes, host: str = "127.0.0.1", port: int = 0) -> None:
        self._secret = secret
        self._lock = threading.Lock()
        self._deliveries: dict[str, Delivery] = {}
        self.refused = 0
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries.values())

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _take(self, headers, body: bytes) -> int:
        ok = verified(self._secret, headers.get(TIMESTAMP_HEADER, ""), headers.get(SIGNATURE_HEADER, ""), body)
        with self._lock:
            if not ok:
                self.refused += 1
                return 401
            key = headers.get(IDEMPOTENCY_HEADER, "")
            self._deliveries.setdefault(key, Delivery(key, body))
        return 200

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(receiver._take(self.headers, body))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        return Handler
