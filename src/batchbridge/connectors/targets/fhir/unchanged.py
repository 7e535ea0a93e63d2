"""Rows a FHIR server already holds as they are: found before a Bundle is sent, never rewritten.

Why: a rerun must leave the server as it was and count its rows unchanged. HAPI keeps
the version of an identical update and says `SUCCESSFUL_UPDATE_NO_CHANGE`; Medplum (and
other servers) write a new version for every PUT and say nothing. So before each Bundle
the target asks the server what it holds (`compare_before_write`, on by default):

1. One search for the Bundle's row resources by identifier, and one for the supporting
   resources (Patient stubs) they refer to, so a stored `Patient/<id>` reads back as the
   conditional reference the schema made (`Patient?identifier=<system>|<value>`).
2. A row is unchanged when exactly one stored resource has its identifier and, leaving
   out `id`, `meta` and `text` (the server's own), the two are equal with references
   read that way, and the stored `meta` still carries ours (the tenant tag).
3. Anything else (not found, found twice, a reference to something unknown, a value the
   server normalised) is sent as before: the comparison may only ever save a write.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from batchbridge.connectors.targets.fhir.bundle import BundlePlan, RowUnit, conditional_target
from batchbridge.connectors.targets.fhir.confirm import identifier_values, search_by_identifier
from batchbridge.connectors.targets.fhir.wire import HttpCall

_SERVER_OWNED = frozenset({"id", "meta", "text"})
Reference = tuple[str, str, str]
"""(resource type, identifier system, identifier value) a reference points to."""


def find_unchanged(
    plan: BundlePlan, units: Sequence[RowUnit], *, call: HttpCall, base_url: str, target: str
) -> set[int]:
    """The rows of `units` whose resource the server already holds exactly (see module)."""
    if not units:
        return set()
    known = _supporting_ids(plan, units, call=call, base_url=base_url, target=target)
    stored = _stored_rows(units, call=call, base_url=base_url, target=target)
    unchanged: set[int] = set()
    for unit in units:
        item = unit.resource
        matches = stored.get((str(item.resource.get("resourceType")), item.identifier), [])
        if len(matches) == 1 and _same(item.resource, matches[0], known, base_url):
            unchanged.add(unit.row)
    return unchanged


def _grouped(keys: Sequence[Reference]) -> dict[tuple[str, str], list[str]]:
    groups: dict[tuple[str, str], list[str]] = {}
    for resource_type, system, value in keys:
        values = groups.setdefault((resource_type, system), [])
        if value not in values:
            values.append(value)
    return groups


def _supporting_ids(
    plan: BundlePlan, units: Sequence[RowUnit], *, call: HttpCall, base_url: str, target: str
) -> dict[tuple[str, str], Reference]:
    """(type, server id) -> the reference of each supporting resource the units need."""
    keys: list[Reference] = []
    for url in dict.fromkeys(url for unit in units for url in unit.needs):
        item = plan.supporting[url]
        keys.append(
            (str(item.resource.get("resourceType")), item.identifier_system, item.identifier)
        )
    known: dict[tuple[str, str], Reference] = {}
    for (resource_type, system), values in _grouped(keys).items():
        found = search_by_identifier(
            call, base_url, target, resource_type, system, values, purpose="compare"
        )
        for resource in found:
            for value in identifier_values(resource, system):
                if value in values:
                    known[(resource_type, str(resource.get("id")))] = (resource_type, system, value)
    return known


def _stored_rows(
    units: Sequence[RowUnit], *, call: HttpCall, base_url: str, target: str
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(type, identifier value) -> the stored resources carrying it, for the units' rows."""
    keys = [
        (
            str(u.resource.resource.get("resourceType")),
            u.resource.identifier_system,
            u.resource.identifier,
        )
        for u in units
    ]
    stored: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (resource_type, system), values in _grouped(keys).items():
        found = search_by_identifier(
            call, base_url, target, resource_type, system, values, purpose="compare"
        )
        for resource in found:
            for value in set(identifier_values(resource, system)):
                stored.setdefault((resource_type, value), []).append(resource)
    return stored


def _same(
    ours: Mapping[str, Any],
    theirs: Mapping[str, Any],
    known: Mapping[tuple[str, str], Reference],
    base_url: str,
) -> bool:
    def our_reference(reference: str) -> object:
        return conditional_target(reference) or reference

    def their_reference(reference: str) -> object:
        path = reference.removeprefix(base_url.rstrip("/") + "/")
        resource_type, _, rest = path.partition("/")
        return known.get((resource_type, rest.partition("/")[0]), reference)

    mine = {k: v for k, v in ours.items() if k not in _SERVER_OWNED}
    held = {k: v for k, v in theirs.items() if k not in _SERVER_OWNED}
    if _read(mine, our_reference) != _read(held, their_reference):
        return False
    return _meta_kept(ours.get("meta"), theirs.get("meta"))


def _read(node: Any, resolve: Callable[[str], object]) -> Any:
    """`node` with every `reference` string replaced by what it points to."""
    if isinstance(node, Mapping):
        return {
            key: resolve(value)
            if key == "reference" and isinstance(value, str)
            else _read(value, resolve)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_read(item, resolve) for item in node]
    return node


def _meta_kept(ours: object, theirs: object) -> bool:
    """Whether the stored meta still holds every tag, profile or security label we send."""
    if not isinstance(ours, Mapping):
        return True
    held = theirs if isinstance(theirs, Mapping) else {}
    for key, value in ours.items():
        stored = held.get(key)
        if isinstance(value, list):
            if not isinstance(stored, list) or any(
                _coding_key(entry) not in {_coding_key(s) for s in stored} for entry in value
            ):
                return False
        elif stored != value:
            return False
    return True


def _coding_key(entry: object) -> object:
    if isinstance(entry, Mapping):
        return (entry.get("system"), entry.get("code"))
    return entry
