"""The FHIR target's health probe: the server speaks R4 and runs a transaction for us.

1. `GET /metadata`: a CapabilityStatement for FHIR 4.0.x.
2. `POST` a transaction Bundle holding one search, `Patient?_summary=count` (a count, no
   resource): our token, its scope and the transaction endpoint all work. Nothing is
   written (a clinical server is no place for canary rows); an empty transaction would
   do as well on HAPI, but Medplum refuses a Bundle without entries.
"""

from __future__ import annotations

import json
import re

from batchbridge.connectors.targets.fhir.wire import HttpCall, issue_code, json_or_none
from batchbridge.errors import TargetError

PROBE_SEARCH = "Patient?_summary=count"
"""The one entry of the probe's transaction: a search that answers a count only."""


def probe_server(call: HttpCall, base_url: str, target: str) -> str:
    """Run the probe (see the module docstring); the server's FHIR version."""
    response = call("capability statement", "GET", f"{base_url}/metadata")
    body = json_or_none(response)
    version = body.get("fhirVersion") if isinstance(body, dict) else None
    if response.status_code != 200 or not (
        isinstance(body, dict)
        and body.get("resourceType") == "CapabilityStatement"
        and isinstance(version, str)
        and version.startswith("4.0")
    ):
        raise TargetError(
            f"target {target}: /metadata answered HTTP {response.status_code} "
            "without a FHIR R4 (4.0.x) CapabilityStatement"
        )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "GET", "url": PROBE_SEARCH}}],
    }
    content = json.dumps(bundle, separators=(",", ":")).encode()
    answer = call("probe transaction", "POST", base_url, content=content)
    found = json_or_none(answer)
    entries = found.get("entry") if isinstance(found, dict) else None
    status = None
    if isinstance(entries, list) and len(entries) == 1 and isinstance(entries[0], dict):
        response_part = entries[0].get("response")
        text = response_part.get("status") if isinstance(response_part, dict) else None
        status = re.match(r"^\s*(\d{3})\b", text) if isinstance(text, str) else None
    if (
        answer.status_code != 200
        or not isinstance(found, dict)
        or found.get("type") != "transaction-response"
        or status is None
        or status.group(1) != "200"
    ):
        raise TargetError(
            f"target {target}: a transaction holding one search (nothing written) was "
            f"answered HTTP {answer.status_code} ({issue_code(answer)})"
        )
    return version
