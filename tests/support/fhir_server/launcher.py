"""Running the FHIR test server from tests: a subprocess on a free loopback port, a handle."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.support.fhir_server.transactions import FHIR_BASE
from tests.support.lifecycle import read_ready_port


class FhirServerProcess:
    """A running test server subprocess, with URLs, credentials and admin helpers."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        host: str,
        port: int,
        client_id: str,
        client_secret: str,
    ) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.client_id = client_id
        self.client_secret = client_secret
        self._admin = httpx.Client(base_url=f"http://{host}:{port}/_admin", timeout=10)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}{FHIR_BASE}"

    @property
    def token_url(self) -> str:
        return f"http://{self.host}:{self.port}/token"

    def __repr__(self) -> str:
        return f"FhirServerProcess(port={self.port})"

    def _post(self, path: str, payload: Mapping[str, Any] | None = None) -> Any:
        response = self._admin.post(path, json=dict(payload or {}))
        response.raise_for_status()
        return response.json()

    def add_fault(
        self,
        status: int = 503,
        *,
        retry_after: str | None = None,
        times: int = 1,
        route: str = "fhir",
        drop: bool = False,
    ) -> None:
        """Answer the next `times` requests on `route` (fhir, token, any) with a failure."""
        self._post(
            "/faults",
            {
                "status": status,
                "retry_after": retry_after,
                "times": times,
                "route": route,
                "drop": drop,
            },
        )

    def expire_tokens(self) -> None:
        """Make every issued token invalid (clients must fetch a new one)."""
        self._post("/expire-tokens")

    def set_reject_codes(self, codes: Sequence[str]) -> None:
        """LOINC codes the server's terminology check refuses from now on."""
        self._post("/config", {"reject_codes": list(codes)})

    def reset(self) -> None:
        """Empty the store and forget tokens, faults, stats and reject codes."""
        self._post("/reset")

    def stats(self) -> dict[str, Any]:
        """Counters, resources per type and versions written."""
        response = self._admin.get("/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def resources(self, resource_type: str) -> list[dict[str, Any]]:
        """Every current resource of a type."""
        response = self._admin.get(f"/resources/{resource_type}")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def stop(self) -> None:
        """Terminate the process (killed if it does not stop within 5 s)."""
        self._admin.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> FhirServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_fhir_server(
    *,
    client_id: str,
    client_secret: str,
    host: str = "127.0.0.1",
    token_ttl: float = 3600.0,
    reject_codes: Sequence[str] = (),
    state_file: Path | None = None,
    startup_timeout: float = 20.0,
) -> FhirServerProcess:
    """Start the server as a subprocess on a free loopback port; wait for READY."""
    command = [
        sys.executable,
        "-m",
        "tests.support.fhir_server",
        "--host",
        host,
        "--port",
        "0",
        # name=value: a generated secret may start with "-", which argparse would take
        # for an option of its own
        f"--client-id={client_id}",
        f"--client-secret={client_secret}",
        "--token-ttl",
        str(token_ttl),
        f"--reject-codes={','.join(reject_codes)}",
    ]
    if state_file is not None:
        command += ["--state-file", str(state_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    port = read_ready_port(process, timeout=startup_timeout, what="the FHIR test server")
    return FhirServerProcess(process, host, port, client_id, client_secret)
