"""The FHIR test server's state: resources with an identifier index, faults, tokens, stats."""

from __future__ import annotations

import json
import os
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class FhirFailure(Exception):
    """An answer that aborts the request: HTTP status, IssueType code, diagnostics."""

    def __init__(self, status: int, code: str, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics


def operation_outcome(code: str, diagnostics: str, severity: str = "error") -> dict[str, Any]:
    """An OperationOutcome with one issue."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# -- token search values ---------------------------------------------------------------------


def split_unescaped(text: str, separator: str) -> list[str]:
    """Split on `separator` where it is not backslash-escaped; unescape the parts."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _raw_split(text: str, separator: str) -> list[str]:
    """Split on unescaped `separator`, keeping escapes (for a second split)."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_tokens(value: str) -> list[tuple[str | None, str | None]]:
    """`s|v,s2|v2` -> [(s, v), (s2, v2)]; `v` -> (None, v); `s|` -> (s, None); `|v` -> ("", v)."""
    tokens: list[tuple[str | None, str | None]] = []
    for item in _raw_split(value, ","):
        parts = split_unescaped(item, "|")
        if len(parts) == 1:
            tokens.append((None, parts[0]))
        elif len(parts) == 2:
            tokens.append((parts[0], parts[1] or None))
        else:
            raise FhirFailure(400, "invalid", f"malformed token {item!r}")
    return tokens


def parse_match_url(url: str) -> tuple[str, str | None, str | None]:
    """`Type?identifier=s|v` (or `identifier=s|v` with the type given apart) -> parts."""
    resource_type, _, query = url.partition("?")
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    if set(params) != {"identifier"} or len(params["identifier"]) != 1:
        raise FhirFailure(400, "invalid", f"unsupported match URL {url!r}")
    tokens = parse_tokens(params["identifier"][0])
    if len(tokens) != 1:
        raise FhirFailure(400, "invalid", f"match URL {url!r} must name one identifier")
    system, value = tokens[0]
    return resource_type, system, value


# -- the store -------------------------------------------------------------------------------


def resource_identifiers(resource: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(system, value) of each identifier of `resource` that has a value."""
    found = []
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("value") is not None:
            found.append((str(identifier.get("system", "")), str(identifier["value"])))
    return found


def resource_content(resource: Mapping[str, Any]) -> dict[str, Any]:
    """What a resource says, without the id and meta the server gives it."""
    return {k: v for k, v in resource.items() if k not in ("id", "meta")}


def resource_tags(resource: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The `meta.tag` codings of a resource (system and code only)."""
    meta = resource.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    return [
        {"system": t.get("system"), "code": t.get("code")}
        for t in tags or []
        if isinstance(t, dict) and t.get("code")
    ]


def merged_tags(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Tags after an update: the old ones and any new ones (HAPI keeps tags across updates)."""
    merged = resource_tags(old) if old is not None else []
    for tag in resource_tags(new):
        if tag not in merged:
            merged.append(tag)
    return merged


@dataclass
class Store:
    """Resources by type and id, and an identifier index; copied for atomic transactions."""

    resources: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    index: dict[tuple[str, str, str], tuple[str, ...]] = field(default_factory=dict)
    next_id: int = 1
    versions_written: int = 0

    def clone(self) -> Store:
        return Store(
            resources={t: dict(by_id) for t, by_id in self.resources.items()},
            index=dict(self.index),
            next_id=self.next_id,
            versions_written=self.versions_written,
        )

    def find(self, resource_type: str, system: str | None, value: str | None) -> list[str]:
        if system is not None and value is not None:
            return list(self.index.get((resource_type, system, value), ()))
        return [
            rid
            for rid, resource in self.resources.get(resource_type, {}).items()
            if any(
                (system is None or s == system) and (value is None or v == value)
                for s, v in resource_identifiers(resource)
            )
        ]

    def put(self, resource_type: str, rid: str, resource: dict[str, Any]) -> dict[str, Any]:
        """Store a new version of `rid` (or its first); returns the stored resource."""
        by_id = self.resources.setdefault(resource_type, {})
        old = by_id.get(rid)
        version = int(old["meta"]["versionId"]) + 1 if old is not None else 1
        meta: dict[str, Any] = {"versionId": str(version), "lastUpdated": _now()}
        tags = merged_tags(old, resource)
        if tags:
            meta["tag"] = tags
        stored = {
            "resourceType": resource_type,
            "id": rid,
            "meta": meta,
            **resource_content(resource),
        }
        if old is not None:
            for system, value in resource_identifiers(old):
                key = (resource_type, system, value)
                self.index[key] = tuple(i for i in self.index.get(key, ()) if i != rid)
        for system, value in resource_identifiers(stored):
            key = (resource_type, system, value)
            if rid not in self.index.get(key, ()):
                self.index[key] = (*self.index.get(key, ()), rid)
        by_id[rid] = stored
        self.versions_written += 1
        return stored

    def new_id(self) -> str:
        rid = str(self.next_id)
        self.next_id += 1
        return rid

    def to_json(self) -> dict[str, Any]:
        return {"resources": self.resources, "next_id": self.next_id}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Store:
        store = cls(next_id=int(data.get("next_id", 1)))
        for resource_type, by_id in dict(data.get("resources", {})).items():
            store.resources[resource_type] = dict(by_id)
            for rid, resource in by_id.items():
                for system, value in resource_identifiers(resource):
                    key = (resource_type, system, value)
                    store.index[key] = (*store.index.get(key, ()), rid)
        return store


@dataclass
class Fault:
    """A planned failure answer for the next requests on a route."""

    status: int
    retry_after: str | None
    times: int
    route: str
    drop: bool


@dataclass
class ServerState:
    """Everything the handlers share, behind one lock."""

    client_id: str
    client_secret: str
    token_ttl: float
    reject_codes: set[str]
    state_file: Path | None
    store: Store = field(default_factory=Store)
    tokens: dict[str, float] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    initial_reject_codes: frozenset[str] = frozenset()

    def bump(self, name: str, by: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + by

    def save(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(self.state_file.suffix + ".tmp")
        tmp.write_text(json.dumps(self.store.to_json()), encoding="utf-8")
        os.replace(tmp, self.state_file)
