"""A local incoming-webhook receiver on 127.0.0.1 that records JSON bodies (tests, demos)."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.lifecycle import StopsOnExit


@dataclass(frozen=True)
class ReceivedRequest:
    """One POST the receiver got, and what it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class _Planned:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


class WebhookReceiver(StopsOnExit):
    """An HTTP server in a thread on a free loopback port, answering like Slack ("ok").

    Only POSTs to `url` (a random token path, as real webhook URLs carry one) are
    accepted; other paths get 404. `fail_next` makes it answer errors first, to exercise
    retries. Use as a context manager, or call `start` and `stop`.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.path = f"/hooks/{secrets.token_urlsafe(12)}"
        self.requests: list[ReceivedRequest] = []
        self._planned: deque[_Planned] = deque()
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the webhook receiver is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The webhook URL to configure (holds the token path)."""
        return f"http://{self.host}:{self.port}{self.path}"

    @property
    def bodies(self) -> list[Any]:
        """JSON bodies of the requests answered with 2xx, in arrival order."""
        with self._changed:
            return [r.json() for r in self.requests if 200 <= r.status < 300]

    def fail_next(self, times: int, status: int = 500, *, retry_after: str | None = None) -> None:
        """Answer the next `times` POSTs with `status` (and a Retry-After header, if given)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        with self._changed:
            self._planned.extend(_Planned(status, headers) for _ in range(times))

    def wait_for(self, count: int, *, timeout: float = 10.0) -> list[Any]:
        """Wait until `count` bodies were accepted; return them (raises on timeout)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(200 <= r.status < 300 for r in self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"webhook receiver got fewer than {count} bodies")
                self._changed.wait(left)
        return self.bodies

    def start(self) -> WebhookReceiver:
        """Listen on a free port and serve in a daemon thread."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path != receiver.path:
                    self._answer(404, {}, b"no_service")
                    return
                with receiver._changed:
                    planned = receiver._planned.popleft() if receiver._planned else _Planned(200)
                    receiver.requests.append(
                        ReceivedRequest(
                            path=self.path,
                            headers=dict(self.headers.items()),
                            body=body,
                            status=planned.status,
                        )
                    )
                    receiver._changed.notify_all()
                self._answer(
                    planned.status, planned.headers, b"ok" if planned.status < 300 else b""
                )

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                # Quiet: the path is the token, and test output should stay readable.
                return

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval: `stop` waits up to one interval for the loop to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="webhook-receiver",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()
