"""The FHIR test server's HTTP side: routes, OAuth2 token endpoint, faults, admin, `serve`.

Routes (loopback only):
- `POST /token`: OAuth2 client credentials (client auth by HTTP Basic or form fields);
  bearer tokens expire after `--token-ttl` seconds. FHIR routes answer 401 without one.
- `GET /fhir/metadata`: a CapabilityStatement (no token needed).
- `POST /fhir`: a `transaction` Bundle, atomic (see transactions.py).
- `GET /fhir/<Type>?identifier=s|v1,s|v2` (or `s|`: any value) with `_tag`, `_count`,
  `_offset`, `_summary=count`, `_elements`; `GET /fhir/<Type>/<id>` (with an ETag);
  `PUT /fhir/<Type>/<id>` (with an optional If-Match).
- `/_admin/...` (tests only): `POST faults` {"status", "retry_after", "times", "route",
  "drop"}, `POST expire-tokens`, `POST config` {"reject_codes"}, `POST reset`,
  `GET stats`, `GET resources/<Type>`.

`--state-file` keeps the store across restarts (written after every commit).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import ipaddress
import json
import secrets
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.fhir_server.store import (
    Fault,
    FhirFailure,
    ServerState,
    Store,
    operation_outcome,
)
from tests.support.fhir_server.transactions import (
    CAPABILITY_STATEMENT,
    FHIR_BASE,
    SUPPORTED_TYPES,
    read_resource,
    run_transaction,
    search,
    update_by_id,
)

FHIR_JSON = "application/fhir+json"
MAX_BODY = 64 * 1024 * 1024


class Handler(BaseHTTPRequestHandler):
    """Routes: /token, /fhir…, /_admin/…; see the module docstring."""

    protocol_version = "HTTP/1.1"
    server: FhirHttpServer

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines carry identifiers: a test server keeps quiet like a careful one.
        return

    @property
    def state(self) -> ServerState:
        return self.server.state

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        try:
            body = self._body()
            if path.startswith("/_admin/"):
                self._admin(method, path.removeprefix("/_admin/"), body)
                return
            route = "token" if path == "/token" else "fhir"
            if self._fault(route):
                return
            if path == "/token" and method == "POST":
                self._token(body)
            elif path == f"{FHIR_BASE}/metadata" and method == "GET":
                self._send(200, CAPABILITY_STATEMENT)
            elif path == FHIR_BASE or path.startswith(f"{FHIR_BASE}/"):
                self._fhir(method, path.removeprefix(FHIR_BASE).strip("/"), query, body)
            else:
                self._send(404, operation_outcome("not-found", f"no route {path}"))
        except FhirFailure as failure:
            self._send(failure.status, operation_outcome(failure.code, failure.diagnostics))
        except Exception as exc:  # a bug here: answer 500 (never retried) rather than hang up
            self._send(500, operation_outcome("exception", type(exc).__name__))

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            raise FhirFailure(413, "too-long", "body too large")
        return self.rfile.read(length) if length else b""

    def _fault(self, route: str) -> bool:
        with self.state.lock:
            fault = next(
                (f for f in self.state.faults if f.route in (route, "any") and f.times > 0), None
            )
            if fault is None:
                return False
            fault.times -= 1
            self.state.faults = [f for f in self.state.faults if f.times > 0]
            self.state.bump("faults_served")
        if fault.drop:
            self.close_connection = True
            return True
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        code = "throttled" if fault.status == 429 else "transient"
        self._send(fault.status, operation_outcome(code, "fault injected"), headers)
        return True

    def _token(self, body: bytes) -> None:
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        client_id, client_secret = None, None
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                decoded = base64.b64decode(header[6:], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            raw_id, _, raw_secret = decoded.partition(":")
            client_id = urllib.parse.unquote_plus(raw_id)
            client_secret = urllib.parse.unquote_plus(raw_secret)
            if "client_secret" in form:
                self._oauth_error(400, "invalid_request")
                return
        elif "client_id" in form:
            client_id = form["client_id"][0]
            client_secret = form.get("client_secret", [""])[0]
        with self.state.lock:
            self.state.bump("token_requests")
            good = secrets.compare_digest(
                (client_id or "").encode(), self.state.client_id.encode()
            ) and secrets.compare_digest(
                (client_secret or "").encode(), self.state.client_secret.encode()
            )
            if not good:
                self._oauth_error(401, "invalid_client")
                return
            if form.get("grant_type", [""])[0] != "client_credentials":
                self._oauth_error(400, "unsupported_grant_type")
                return
            token = secrets.token_urlsafe(24)
            self.state.tokens[token] = time.monotonic() + self.state.token_ttl
            self.state.bump("tokens_issued")
        answer: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": int(self.state.token_ttl),
        }
        if "scope" in form:
            answer["scope"] = form["scope"][0]
        self._send(200, answer, {"Cache-Control": "no-store"}, content_type="application/json")

    def _oauth_error(self, status: int, error: str) -> None:
        headers = {"WWW-Authenticate": 'Basic realm="token"'} if status == 401 else {}
        self._send(status, {"error": error}, headers, content_type="application/json")

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        with self.state.lock:
            expires = self.state.tokens.get(token)
            if expires is not None and time.monotonic() < expires:
                return True
            self.state.bump("unauthorized")
        self._send(
            401,
            operation_outcome("login", "a valid bearer token is required"),
            {"WWW-Authenticate": 'Bearer realm="fhir", error="invalid_token"'},
        )
        return False

    def _fhir(self, method: str, path: str, query: str, body: bytes) -> None:
        if not self._authorized():
            return
        if method == "POST" and path == "":
            try:
                bundle = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise FhirFailure(400, "structure", "the body is not JSON") from None
            with self.state.lock:
                self.state.bump("transactions")
                try:
                    answer = run_transaction(self.state, bundle)
                except FhirFailure:
                    self.state.bump("transactions_refused")
                    raise
                self.state.bump("transactions_committed")
                self.state.save()
            self._send(200, answer)
            return
        parts = path.split("/")
        if method == "GET" and len(parts) == 1 and parts[0] in SUPPORTED_TYPES:
            with self.state.lock:
                self.state.bump("searches")
                answer = search(self.state, parts[0], query)
            self._send(200, answer)
            return
        if method == "GET" and len(parts) == 2 and parts[0] in SUPPORTED_TYPES:
            with self.state.lock:
                resource = read_resource(self.state, parts[0], parts[1])
            self._send(200, resource, _etag(resource))
            return
        if method == "PUT" and len(parts) == 2 and parts[0] in SUPPORTED_TYPES:
            try:
                body_json = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise FhirFailure(400, "structure", "the body is not JSON") from None
            with self.state.lock:
                self.state.bump("updates")
                status, stored = update_by_id(
                    self.state, parts[0], parts[1], body_json, self.headers.get("If-Match")
                )
            self._send(status, stored, _etag(stored))
            return
        raise FhirFailure(405 if parts[0] in SUPPORTED_TYPES else 404, "not-supported", path)

    def _admin(self, method: str, path: str, body: bytes) -> None:
        data = json.loads(body) if body else {}
        state = self.state
        with state.lock:
            if method == "POST" and path == "faults":
                state.faults.append(
                    Fault(
                        status=int(data.get("status", 503)),
                        retry_after=data.get("retry_after"),
                        times=int(data.get("times", 1)),
                        route=str(data.get("route", "fhir")),
                        drop=bool(data.get("drop", False)),
                    )
                )
                answer: Any = {"faults": len(state.faults)}
            elif method == "POST" and path == "expire-tokens":
                state.tokens = dict.fromkeys(state.tokens, 0.0)
                answer = {"expired": len(state.tokens)}
            elif method == "POST" and path == "config":
                if "reject_codes" in data:
                    state.reject_codes = set(data["reject_codes"])
                answer = {"reject_codes": sorted(state.reject_codes)}
            elif method == "POST" and path == "reset":
                state.store = Store()
                state.tokens.clear()
                state.faults.clear()
                state.stats.clear()
                state.reject_codes = set(state.initial_reject_codes)
                state.save()
                answer = {"reset": True}
            elif method == "GET" and path == "stats":
                answer = {
                    **state.stats,
                    "resources": {t: len(r) for t, r in state.store.resources.items()},
                    "versions_written": state.store.versions_written,
                    "faults_pending": sum(f.times for f in state.faults),
                }
            elif method == "GET" and path.startswith("resources/"):
                answer = list(state.store.resources.get(path.split("/", 1)[1], {}).values())
            else:
                raise FhirFailure(404, "not-found", f"no admin route {path}")
        self._send(200, answer, content_type="application/json")

    def _send(
        self,
        status: int,
        body: Any,
        headers: Mapping[str, str] | None = None,
        *,
        content_type: str = FHIR_JSON,
    ) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _etag(resource: Mapping[str, Any]) -> dict[str, str]:
    return {"ETag": f'W/"{resource["meta"]["versionId"]}"'}


class FhirHttpServer(ThreadingHTTPServer):
    """The threading HTTP server carrying the shared state."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: ServerState) -> None:
        super().__init__(address, Handler)
        self.state = state


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(argv: Sequence[str] | None = None) -> None:
    """Command line entry: parse options, listen on loopback, print READY <port>, serve."""
    parser = argparse.ArgumentParser(description="batchbridge's FHIR R4 test server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--token-ttl", type=float, default=3600.0)
    parser.add_argument("--reject-codes", default="", help="comma-separated LOINC codes")
    parser.add_argument("--state-file", type=Path, default=None)
    args = parser.parse_args(argv)
    if not _loopback(args.host):
        parser.error("the test server listens on loopback only")
    reject = frozenset(code for code in args.reject_codes.split(",") if code)
    state = ServerState(
        client_id=args.client_id,
        client_secret=args.client_secret,
        token_ttl=args.token_ttl,
        reject_codes=set(reject),
        initial_reject_codes=reject,
        state_file=args.state_file,
    )
    if args.state_file is not None and args.state_file.exists():
        state.store = Store.from_json(json.loads(args.state_file.read_text(encoding="utf-8")))
    server = FhirHttpServer((args.host, args.port), state)
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
