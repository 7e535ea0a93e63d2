"""Give people a steward role for a new tenant in stewards.yaml, keeping the file's comments.

The file is edited as text (block style, `stewards: {person: {tenant: role}}`): new
lines are appended to the `stewards:` block or to a person's entry; nothing else moves.
An entry that exists is never changed. The result must load with the steward
directory's own loader and hold exactly the old entries plus the new ones, or nothing
is written.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from batchbridge.config.stewards import SHARED_ACCOUNTS, Role, StewardDirectory, load_directory
from batchbridge.errors import ConfigError

ROLE_NAMES: tuple[str, ...] = tuple(role.name.lower() for role in Role)
DEFAULT_ROLE = "steward"
NEW_FILE_HEADER = (
    "# Data stewards: person (SSO identity or OS login) -> tenant -> role.\n"
    "# Roles: viewer (list, show masked), steward (reveal, fix, export, import, release,\n"
    "# discard), admin (also rotate quarantine keys). Shared accounts are never stewards.\n"
)

_STEWARDS_KEY = re.compile(r"^stewards:[ \t]*(?:#.*)?$")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$")


@dataclass(frozen=True)
class StewardGrant:
    """A person and the role they should hold for the new tenant."""

    person: str
    role: str = DEFAULT_ROLE


@dataclass(frozen=True)
class StewardsEdit:
    """What adding the grants changes: the new text (None: nothing to write) and why."""

    path: Path
    tenant: str
    before: str | None
    text: str | None
    added: list[StewardGrant] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)
    """(person, role held already): existing entries are never overwritten."""


def parse_grant(value: str) -> StewardGrant:
    """`PERSON[:ROLE]` (role viewer, steward or admin; steward when left out)."""
    person, sep, role = value.strip().rpartition(":")
    if not sep:
        person, role = value.strip(), DEFAULT_ROLE
    role = role.strip().lower()
    person = person.strip()
    if role not in ROLE_NAMES:
        raise ConfigError(f"--steward: unknown role {role!r} (choose from {', '.join(ROLE_NAMES)})")
    if not person or any(ch.isspace() for ch in person):
        raise ConfigError("--steward: give a person's identity, e.g. dana@example.org:steward")
    if person.lower() in SHARED_ACCOUNTS:
        raise ConfigError(f"--steward: {person!r} is a shared account, not a person")
    return StewardGrant(person, role)


def _key(text: str) -> str:
    plain = _PLAIN_KEY.match(text) is not None
    if plain and yaml.safe_load(f"{text}: x") == {text: "x"}:
        return text
    return json.dumps(text)  # a JSON string is a valid YAML scalar


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _cannot_edit(path: Path, why: str) -> ConfigError:
    return ConfigError(f"{path.name}: {why}; cannot add stewards automatically (add them by hand)")


def _add_one(text: str, path: Path, tenant: str, grant: StewardGrant, known: bool) -> str:
    """`text` with `grant` for `tenant` added; `known`: the person has an entry already."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start = next((i for i, line in enumerate(lines) if _STEWARDS_KEY.match(line.rstrip())), None)
    if start is None:
        if "stewards" in (yaml.safe_load(text) or {}):
            raise _cannot_edit(path, "`stewards:` is not a block mapping")
        lines.append("stewards:\n")
        start = len(lines) - 1
    end, last = start + 1, start
    while end < len(lines) and not (_is_content(lines[end]) and _indent(lines[end]) == 0):
        if _is_content(lines[end]):
            last = end
        end += 1
    block = [i for i in range(start + 1, last + 1) if _is_content(lines[i])]
    person_indent = _indent(lines[block[0]]) if block else 2
    deeper = [i for i in block if _indent(lines[i]) > person_indent]
    tenant_indent = _indent(lines[deeper[0]]) if deeper else person_indent + 2
    tenant_line = f"{' ' * tenant_indent}{tenant}: {grant.role}\n"
    if not known:
        new = [f"{' ' * person_indent}{_key(grant.person)}:\n", tenant_line]
        return "".join([*lines[: last + 1], *new, *lines[last + 1 :]])
    for i in block:
        if _indent(lines[i]) != person_indent:
            continue
        parsed = yaml.safe_load(lines[i].strip())
        if not isinstance(parsed, dict) or grant.person not in parsed:
            continue
        if parsed[grant.person] is not None:
            raise _cannot_edit(path, f"the entry of {grant.person} is not in block style")
        entry_end = i
        for j in range(i + 1, last + 1):
            if _is_content(lines[j]) and _indent(lines[j]) <= person_indent:
                break
            if _is_content(lines[j]):
                entry_end = j
        return "".join([*lines[: entry_end + 1], tenant_line, *lines[entry_end + 1 :]])
    raise _cannot_edit(path, f"the entry of {grant.person} was not found as a block key")


def _load_text(text: str) -> StewardDirectory:
    with tempfile.TemporaryDirectory(prefix="bb-stewards-") as scratch:
        probe = Path(scratch) / "stewards.yaml"
        probe.write_text(text, encoding="utf-8")
        return load_directory(probe)


def plan_stewards_edit(path: Path, tenant: str, grants: list[StewardGrant]) -> StewardsEdit:
    """The edit giving each grant's person its role for `tenant`; ConfigError if unsafe.

    Checked before anything is written: the edited text loads as a steward directory
    holding exactly the entries it held plus the added ones.
    """
    persons = [grant.person for grant in grants]
    twice = sorted({p for p in persons if persons.count(p) > 1})
    if twice:
        raise ConfigError(f"--steward: {', '.join(twice)} given more than once")
    before = path.read_text(encoding="utf-8") if path.is_file() else None
    current = load_directory(path)
    text = before if before is not None else NEW_FILE_HEADER
    added: list[StewardGrant] = []
    kept: list[tuple[str, str]] = []
    for grant in grants:
        held = current.role(grant.person, tenant)
        if held is not None:
            kept.append((grant.person, held.name.lower()))
            continue
        text = _add_one(text, path, tenant, grant, grant.person in current.stewards)
        added.append(grant)
    if not added:
        return StewardsEdit(path, tenant, before, None, added, kept)
    expected = {person: dict(tenants) for person, tenants in current.stewards.items()}
    for grant in added:
        expected.setdefault(grant.person, {})[tenant] = Role[grant.role.upper()]
    if _load_text(text).stewards != expected:
        raise _cannot_edit(path, "the edited file would not hold exactly the intended entries")
    return StewardsEdit(path, tenant, before, text, added, kept)


def write_stewards_edit(edit: StewardsEdit) -> None:
    """Write a planned edit atomically, keeping the file's mode; refuse if it changed since."""
    if edit.text is None:
        return
    path = edit.path
    now = path.read_text(encoding="utf-8") if path.is_file() else None
    if now != edit.before:
        raise ConfigError(f"{path} changed while onboarding; nothing written to it, run again")
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(edit.text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    load_directory(path)  # what is on disk loads


def manual_steward_lines(path: Path, tenant: str) -> list[str]:
    """The step that gives someone a role for `tenant` by hand, for the CLI to print."""
    holders = sorted(
        (person, tenants[tenant].name.lower())
        for person, tenants in load_directory(path).stewards.items()
        if tenant in tenants
    )
    lines: list[str] = []
    if holders:
        who = ", ".join(f"{person} ({role})" for person, role in holders)
        lines.append(f"data stewards of tenant {tenant} already in {path}: {who}")
    else:
        lines.append(f"data stewards: nobody holds a role for tenant {tenant} yet.")
    lines += [
        f"  to let someone review its quarantined rows, add to {path}",
        "  under `stewards:` (a person listed already gets only the tenant line):",
        "    PERSON@EXAMPLE.ORG:",
        f"      {tenant}: steward      # viewer | steward | admin",
    ]
    return lines
