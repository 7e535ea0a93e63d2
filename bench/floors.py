"""The floors of a run's parts, measured on the bench's own data: gpg, psql COPY, raw upsert SQL.

Each floor is the fastest a well-known tool does the same work on the same bytes in the
same run (absolute seconds swing 3x between machines here, so the bench reports the
pipeline's stages as ratios to these):

- decrypt: `gpg --decrypt` of the bench's ciphertext (our key and the pinned partner key
  imported once beforehand), plaintext to /dev/null, signature verified by gpg;
- COPY: `psql \\copy` of the rows the first run loaded (read back from the warehouse as
  CSV) into an empty table shaped like the target;
- upsert: COPY into a temp table, then one `INSERT ... ON CONFLICT (tenant, key) DO UPDATE
  ... WHERE (...) IS DISTINCT FROM (...)`, committed: into an empty table (the first
  load) and again into the full one (the rerun, nothing changes).

Each is the best of `runs` tries. The fetch floor (OpenSSH `sftp`) comes from
bench/fetch_floor.py, the validate and transform floors from bench/stage_floors.py.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from batchbridge.connectors.pgp.home import gpg_env, isolated_gpg_args, throwaway_home

FLOOR_TABLE = "bench_floor"


@dataclass(frozen=True)
class Floors:
    """Best-of seconds of each part's floor (None: not measured)."""

    decrypt_s: float | None = None
    copy_s: float | None = None
    upsert_first_s: float | None = None
    upsert_rerun_s: float | None = None
    fetch_s: float | None = None
    fetch_connect_s: float | None = None  # OpenSSH sftp get of an empty file
    validate_s: float | None = None
    transform_s: float | None = None
    hmac_s: float | None = None  # our pseudonymize (the transform's HMAC part), for reference
    distinct_mrns: int | None = None

    def total(self, upsert_s: float | None) -> float | None:
        """The sum of every stage's floor with `upsert_s` as the load's (None: one is missing)."""
        parts = (self.fetch_s, self.decrypt_s, self.validate_s, self.transform_s, upsert_s)
        return None if any(part is None for part in parts) else sum(p or 0.0 for p in parts)


def best_of(runs: int, work: Callable[[], object]) -> float:
    """The fastest of `runs` timed calls of `work`."""
    best = float("inf")
    for _ in range(max(1, runs)):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


@dataclass(frozen=True)
class DecryptKeys:
    """Our private key (and its passphrase) and the partner's pinned public key, armored."""

    private_key: str
    passphrase: str | None
    partner_key: str

    @classmethod
    def from_secrets(cls, folder: Path) -> DecryptKeys:
        """The keys the lab scenario wrote into its secrets folder."""
        return cls(
            private_key=(folder / "pgp_private.asc").read_text(),
            passphrase=(folder / "pgp_passphrase").read_text().strip(),
            partner_key=(folder / "partner_public.asc").read_text(),
        )


@contextmanager
def _decrypt_command(keys: DecryptKeys, output: str) -> Iterator[tuple[list[str], Path]]:
    """`gpg --decrypt` arguments (ciphertext path last, to be added) in a home with `keys`."""
    gpg = "gpg"
    with throwaway_home("bbfloor-", None) as home:
        for armored in (keys.partner_key, keys.private_key):
            subprocess.run(
                [*isolated_gpg_args(gpg, home), "--import"],
                input=armored.encode(),
                env=gpg_env(home),
                capture_output=True,
                check=True,
            )
        args = [*isolated_gpg_args(gpg, home), "--pinentry-mode", "loopback", "--trust-model"]
        args += ["always", "--status-fd", "2"]
        if keys.passphrase is not None:
            args += ["--passphrase", keys.passphrase]
        args += ["--output", output, "--decrypt"]
        yield args, home


def gpg_floor(ciphertext: Path, keys: DecryptKeys, runs: int) -> float:
    """Seconds `gpg --decrypt` takes for `ciphertext` (keys imported once, not timed)."""
    with _decrypt_command(keys, os.devnull) as (args, home):

        def decrypt() -> None:
            done = subprocess.run(
                [*args, str(ciphertext)], env=gpg_env(home), capture_output=True, check=False
            )
            if done.returncode != 0 or b"[GNUPG:] GOODSIG" not in done.stderr:
                raise RuntimeError(f"gpg floor: decrypt failed (exit {done.returncode})")

        return best_of(runs, decrypt)


def decrypt_plaintext(ciphertext: Path, keys: DecryptKeys) -> bytes:
    """The plaintext of `ciphertext`, in memory (for the validate and transform floors)."""
    with _decrypt_command(keys, "-") as (args, home):
        done = subprocess.run(
            [*args, str(ciphertext)], env=gpg_env(home), capture_output=True, check=False
        )
    if done.returncode != 0 or b"[GNUPG:] GOODSIG" not in done.stderr:
        raise RuntimeError(f"decrypting the bench file failed (exit {done.returncode})")
    return done.stdout


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def warehouse_csv(url: str, table: str, tenant: str) -> tuple[list[str], bytes]:
    """The tenant's rows of `table` as CSV (no header), and its column names in order."""
    with psycopg.connect(_libpq(url)) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(sql.Identifier(table)))
        columns = [d.name for d in cur.description or []]
        query = sql.SQL("COPY (SELECT * FROM {} WHERE tenant = {}) TO STDOUT (FORMAT csv)")
        chunks: list[bytes] = []
        with cur.copy(query.format(sql.Identifier(table), sql.Literal(tenant))) as copy:
            for block in copy:
                chunks.append(bytes(block))
    return columns, b"".join(chunks)


def copy_floor(psql: Path, url: str, like: str, data: bytes, runs: int) -> float:
    """Seconds `psql \\copy` takes to load `data` (CSV) into a fresh table like `like`."""
    with tempfile.NamedTemporaryFile(prefix="bbfloor-", suffix=".csv") as handle:
        # Synthetic bench rows, no patient: psql reads them from a file like an operator would.
        handle.write(data)
        handle.flush()

        def copy_once() -> None:
            with psycopg.connect(_libpq(url), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(FLOOR_TABLE)))
                conn.execute(
                    sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                        sql.Identifier(FLOOR_TABLE), sql.Identifier(like)
                    )
                )
            started = time.perf_counter()
            subprocess.run(
                [str(psql), _libpq(url), "-q", "-v", "ON_ERROR_STOP=1", "-c",
                 f"\\copy {FLOOR_TABLE} FROM '{handle.name}' WITH (FORMAT csv)"],
                check=True,
                capture_output=True,
            )  # fmt: skip
            timings.append(time.perf_counter() - started)

        timings: list[float] = []
        for _ in range(max(1, runs)):
            copy_once()
    return min(timings)


def upsert_floor(
    url: str, like: str, columns: list[str], keys: list[str], data: bytes, runs: int
) -> tuple[float, float]:
    """Seconds of COPY -> temp table -> one INSERT ... ON CONFLICT: first load, then rerun."""
    target = sql.Identifier(FLOOR_TABLE)
    names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    rest = [c for c in columns if c not in keys]
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = excluded.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in rest
    )
    mine = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in rest)
    theirs = sql.SQL(", ").join(sql.SQL("excluded.{}").format(sql.Identifier(c)) for c in rest)
    upsert = sql.SQL(
        "INSERT INTO {target} AS t ({names}) SELECT {names} FROM bench_stage "
        "ON CONFLICT ({keys}) DO UPDATE SET {assignments} "
        "WHERE ({mine}) IS DISTINCT FROM ({theirs})"
    ).format(
        target=target,
        names=names,
        keys=sql.SQL(", ").join(sql.Identifier(k) for k in keys),
        assignments=assignments,
        mine=mine,
        theirs=theirs,
    )

    def load(conn: psycopg.Connection) -> float:
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "CREATE TEMP TABLE bench_stage (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP"
                ).format(target)
            )
            with cur.copy("COPY bench_stage FROM STDIN (FORMAT csv)") as copy:
                view = memoryview(data)
                for start in range(0, len(data), 1 << 20):
                    copy.write(view[start : start + (1 << 20)])
            cur.execute(upsert)
        return time.perf_counter() - started

    firsts: list[float] = []
    reruns: list[float] = []
    for _ in range(max(1, runs)):
        with psycopg.connect(_libpq(url), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target))
            conn.execute(
                sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                    target, sql.Identifier(like)
                )
            )
            firsts.append(load(conn))
            reruns.append(load(conn))
            conn.execute(sql.SQL("DROP TABLE {}").format(target))
    return min(firsts), min(reruns)
