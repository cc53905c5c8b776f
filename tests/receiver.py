"""A webhook receiver for the tests: a real HTTP server on a port of its own (in a thread).

It checks every delivery's signature, records every attempt, and keeps the events of the
deliveries it answered with 2xx. It can be told to answer 500, or to hang past the hub's 5 s
timeout, for its next attempts, and it can go down (its port closed) and come back on the same
port.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.harness import free_port

SECRET = "s3cret-" + "x" * 32


@dataclass
class Attempt:
    at: float  # time.monotonic() when it arrived
    delivery: str
    event_ids: list[str]
    answered: int  # the status sent back (0: hung up without an answer)
    peer_port: int


@dataclass
class Receiver:
    secret: str = SECRET
    port: int = field(default_factory=free_port)
    fail: int = 0  # answer 500 to this many more attempts
    hang: int = 0  # hang past the hub's timeout on this many more attempts
    attempts: list[Attempt] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # delivered (2xx), in order
    bad_signatures: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.hung = threading.Event()  # set when an attempt starts hanging

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Down: the port is closed (a hub's connections are refused)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length", "0")))
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(request.headers.get("X-Hub-Signature-256", ""), expected)
        payload = json.loads(body)
        assert request.headers.get("Content-Type") == "application/json"
        with self._lock:
            if not signed:
                self.bad_signatures += 1
                status = 401
            elif self.hang:
                self.hang -= 1
                status = 0
            elif self.fail:
                self.fail -= 1
                status = 500
            else:
                status = 200
                self.events.extend(payload["events"])
            ids = [e["id"] for e in payload["events"]]
            peer = request.client_address[1]
            self.attempts.append(Attempt(time.monotonic(), payload["id"], ids, status, peer))
        if status == 0:
            self.hung.set()
            time.sleep(7)  # past the hub's 5 s timeout
            status = 500
        request.send_response(status)
        request.send_header("Content-Length", "0")
        request.end_headers()

    def unique(self) -> list[dict[str, Any]]:
        """The delivered events, each once (by id), in the order they first arrived."""
        seen: set[str] = set()
        out = []
        with self._lock:
            for event in self.events:
                if event["id"] not in seen:
                    seen.add(event["id"])
                    out.append(event)
        return out

    def names(self, workspace_id: str) -> list[tuple[str, str | None]]:
        """(name, session_id) of the workspace's delivered events, each once, in order."""
        return [
            (e["name"], e.get("session_id"))
            for e in self.unique()
            if e["workspace_id"] == workspace_id
        ]
