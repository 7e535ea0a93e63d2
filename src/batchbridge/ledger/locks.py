"""One run per feed at a time: a lock that dies with its holder (advisory lock or flock)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text


def lock_key(tenant: str, feed: str) -> int:
    """A stable signed 64-bit key for PostgreSQL's advisory locks."""
    digest = hashlib.sha256(f"batchbridge-feed:{tenant}/{feed}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def feed_lock(
    engine: Engine, *, tenant: str, feed: str, wait_seconds: float = 0.0
) -> Iterator[bool]:
    """Hold the feed's lock for the block; yields False when another run holds it.

    The lock is released when the block ends or the holding process dies (kill -9
    included), so a crashed run never blocks the next one: PostgreSQL drops a session's
    advisory locks with its connection, and the kernel drops flock()s with the process.
    """
    deadline = time.monotonic() + wait_seconds
    if engine.dialect.name == "postgresql":
        key = lock_key(tenant, feed)
        with engine.connect() as conn:
            while True:
                got = bool(
                    conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
                )
                conn.commit()
                if got or time.monotonic() >= deadline:
                    break
                time.sleep(0.5)
            try:
                yield got
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
        return
    path = _lock_file(engine, tenant, feed)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
            except BlockingIOError:
                got = False
            if got or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        try:
            yield got
        finally:
            if got:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _lock_file(engine: Engine, tenant: str, feed: str) -> Path:
    # SQLite ledgers live on one machine: a lock file beside the database is enough.
    database = engine.url.database
    folder = Path(database).resolve().parent if database and database != ":memory:" else None
    folder = folder or Path(tempfile.gettempdir())
    return folder / f".batchbridge-{tenant}-{feed}.lock"


MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"batchbridge-ledger-migration").digest()[:8], "big", signed=True
)


@contextmanager
def migration_lock(engine: Engine, *, wait_seconds: float = 300.0) -> Iterator[None]:
    """Hold the ledger's schema lock: two processes starting on a new ledger at once must
    not both create its tables (the second waits, then finds them made)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            # SET takes no bind parameters; an int rendered into the text is safe.
            conn.execute(text(f"SET lock_timeout = {int(wait_seconds * 1000)}"))
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                conn.commit()
        return
    path = _lock_file(engine, "ledger", "schema")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait_seconds
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
