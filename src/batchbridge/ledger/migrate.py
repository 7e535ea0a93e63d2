"""Open or create a ledger database and bring it to the newest schema with Alembic.

Two ways in: `create_ledger_engine(url)` makes the ledger when there is none (the
nightly run, the demo); `create_ledger_engine(url, create=False)` opens only a ledger
that exists and raises LedgerNotFoundError otherwise, creating nothing (read commands).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL, Engine, create_engine, event, inspect, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError
from sqlalchemy.pool import NullPool

from batchbridge.errors import ConfigError, LedgerNotFoundError
from batchbridge.ledger.locks import migration_lock
from batchbridge.ledger.schema_revisions import current_revisions, head_revision, known_revisions

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

_SECRET_QUERY_WORDS = ("pass", "secret", "token")
"""Query parameters whose values are hidden in messages (`?password=…`, `sslpassword=…`)."""


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (no alembic.ini needed)."""
    # Alembic loads only when a ledger is created or behind the newest schema: a ledger
    # already at head is opened without it (see schema_revisions).
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_to_head(engine: Engine) -> None:
    """Apply every pending migration; safe to call on every start, and from two at once."""
    from alembic import command  # only when migrating (see alembic_config)

    config = alembic_config()
    with migration_lock(engine), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def masked_url(url: str) -> str:
    """The ledger URL fit for a message: its password, and password-like query values, as ***."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "(a database URL that does not parse)"
    hidden = {
        key: "***"
        for key in parsed.query
        if any(word in key.lower() for word in _SECRET_QUERY_WORDS)
    }
    shown = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    return shown.replace("%2A%2A%2A", "***")  # the query's *** comes back URL-quoted


def _sqlite_file(parsed: URL) -> Path | None:
    """The file a SQLite URL names; None for an in-memory database."""
    database = parsed.database or ""
    if database.startswith("file:"):  # sqlite:///file:path?uri=true
        if parsed.query.get("mode") == "memory":
            return None
        database = database.removeprefix("file:")
    return None if database in ("", ":memory:") else Path(database)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the report read while a load writes; the busy timeout rides out short locks.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _require_ledger_tables(url: str, shown: str) -> None:
    # Its own engine, without the WAL pragma: a file that is no ledger stays unwritten.
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            found = inspect(connection).has_table("alembic_version")
    except DatabaseError as exc:
        # A file that is not SQLite; a PostgreSQL that cannot be reached stays as it is
        # (OperationalError): that is no proof that the ledger is missing.
        if engine.dialect.name != "sqlite" or isinstance(exc, OperationalError):
            raise
        raise LedgerNotFoundError(
            f"no ledger at {shown}: the file is not a SQLite database"
        ) from None
    finally:
        engine.dispose()
    if not found:
        raise LedgerNotFoundError(
            f"no ledger at {shown}: the database holds no ledger tables "
            "(a run creates them; check BATCHBRIDGE_DATABASE_URL)"
        )


def _at_head(engine: Engine, shown: str) -> bool:
    """Whether the ledger is at the newest schema; ConfigError when it is past what we know."""
    current = current_revisions(engine)
    unknown = sorted(current - set(known_revisions()))
    if unknown:
        raise ConfigError(
            f"the ledger at {shown} is at schema revision {', '.join(unknown)}, newer than "
            f"this batchbridge knows (newest: {head_revision()}): upgrade batchbridge",
            reason="ledger_schema_newer",
        )
    return current == {head_revision()}


def create_ledger_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for the ledger URL (SQLite file or PostgreSQL), schema migrated to head.

    With `create=False` the ledger must exist already: a missing SQLite file (nothing is
    created, not even its folder) or a database without the ledger's tables raises
    LedgerNotFoundError naming the URL, password masked. A ledger that exists but is
    behind the newest schema is migrated either way, as the nightly run does on start.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        # Not shown: a URL that does not parse cannot have its password masked.
        raise ConfigError(
            "the ledger URL does not parse as a database URL (BATCHBRIDGE_DATABASE_URL)"
        ) from None
    shown = masked_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if not create and path is None:
            raise LedgerNotFoundError(f"no ledger at {shown}: an in-memory database is empty")
        if not create and path is not None and not path.is_file():
            # Checked before connecting: connecting to a missing SQLite file creates it.
            raise LedgerNotFoundError(
                f"no ledger at {shown}: the file does not exist (a run creates it; "
                "check BATCHBRIDGE_DATABASE_URL or BATCHBRIDGE_VAR_DIR)"
            )
        if create and path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not create:
            _require_ledger_tables(url, shown)
        engine = create_engine(url, future=True, pool_pre_ping=True)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        try:
            if not _at_head(engine, shown):
                upgrade_to_head(engine)
        except BaseException:
            engine.dispose()
            raise
    except OperationalError as exc:
        # The driver's text is not shown: it may hold the host's reply verbatim.
        raise ConfigError(
            f"cannot reach the ledger at {shown} ({type(exc.orig).__name__}): is the "
            "database up, and are BATCHBRIDGE_DATABASE_URL's host, port and login right?",
            reason="ledger_unreachable",
        ) from None
    return engine
