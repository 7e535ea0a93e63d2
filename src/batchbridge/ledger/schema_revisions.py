"""Which schema revision a ledger is at, and which ones this code knows, without Alembic.

Read commands open the ledger on every start: when it is at the newest revision (the
usual case) nothing of Alembic (about 0.1 s of imports) needs to load. The revisions are
read from the packaged migration scripts' `revision` / `down_revision` lines.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from sqlalchemy import Engine, inspect, text

VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"
_ASSIGNMENT = re.compile(r'^(revision|down_revision)\s*=\s*(?:"([^"]*)"|None)\s*$', re.M)


@cache
def known_revisions() -> dict[str, str | None]:
    """Every packaged revision and the one it follows (None for the first)."""
    found: dict[str, str | None] = {}
    for script in sorted(VERSIONS_DIR.glob("*.py")):
        values = {name: value or None for name, value in _ASSIGNMENT.findall(script.read_text())}
        revision = values.get("revision")
        if revision:
            found[revision] = values.get("down_revision")
    return found


def head_revision() -> str:
    """The newest packaged revision: the one no other revision follows."""
    revisions = known_revisions()
    followed = {parent for parent in revisions.values() if parent}
    (head,) = [revision for revision in revisions if revision not in followed]
    return head


def current_revisions(engine: Engine) -> set[str]:
    """The revisions the ledger's alembic_version table records (empty: none yet)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return set()
        rows = connection.execute(text("SELECT version_num FROM alembic_version"))
        return {str(row[0]) for row in rows}
