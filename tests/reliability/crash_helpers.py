"""Crash-suite machinery: a lab feed per worker, CLI runs in subprocesses, ledger/target checks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import yaml
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from batchbridge.crashpoints import CRASH_AT_ENV, CRASH_TESTING_ENV, CRASH_TRACE_ENV
from batchbridge.demo.lab_data import expected_quarantined, generate_lab_rows
from batchbridge.demo.scenario import (
    LAB_TARGET_COLUMNS,
    LabFeedScenario,
    build_lab_scenario,
    lab_file_name,
)
from batchbridge.ledger.audit import verify_chain
from tests.support.postgres import PostgresServer
from tests.support.sshd import SshdServer

FILE_DATE = date(2026, 11, 20)
CANARIES = ("Zebulonquix", "Orvillecanary")
STEWARD = "dana.steward@acme-health.example"
UNMAPPED_CODE = "ZZ-NOT-IN-MAP"  # lab_data plants it for "unmapped_code"; the fix maps it
# Two targets, so that a kill can land between the first target's commit and the second's.
TABLES = {"warehouse": "lab_result", "slim": "lab_result_slim"}
SLIM_COLUMNS = ["loinc_code", "result_value", "result_unit", "result_status"]
# A load rewrites these on every write and a run gives new ids: not part of a row's content.
LINEAGE = frozenset({"load_id", "file_id", "loaded_at"})
CLI_TIMEOUT = 300


@dataclass(frozen=True)
class FileSpec:
    """One partner file of a data set: rows, seed, planted bad rows, record-id prefix."""

    seq: int
    rows: int
    seed: int
    bad_rows: dict[str, int]

    @property
    def name(self) -> str:
        return lab_file_name(FILE_DATE, seq=self.seq)

    @property
    def quarantined(self) -> int:
        return expected_quarantined(self.bad_rows)

    def frame(self) -> pl.DataFrame:
        """The file's rows; record ids prefixed so that the two files' keys never collide."""
        rows = generate_lab_rows(
            self.rows,
            seed=self.seed,
            file_date=FILE_DATE,
            bad_rows=self.bad_rows,
            canary_names=list(CANARIES),
        )
        return rows.with_columns((pl.lit(f"F{self.seq}-") + pl.col("record_id")).alias("record_id"))


def data_set(seed: int) -> tuple[FileSpec, ...]:
    """Two files whose sizes and planted rows vary with the seed (always some unmapped)."""
    return (
        FileSpec(
            seq=1,
            rows=60 + 37 * (seed % 5),
            seed=seed * 10 + 1,
            bad_rows={"unmapped_code": 2 + seed % 2, "bad_npi": 1, "missing_last_name": 1},
        ),
        FileSpec(
            seq=2,
            rows=90 + 53 * (seed % 3),
            seed=seed * 10 + 2,
            bad_rows={"unmapped_code": 1, "duplicate_id": 1, "bad_dob": 1 + seed % 2},
        ),
    )


@dataclass
class CliRun:
    """One `batchbridge` subprocess: what it printed and how it ended."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def killed(self) -> bool:
        return self.returncode == -9

    def json(self) -> Any:
        """The JSON document the command printed (None when there is none)."""
        start = self.stdout.find("{")
        if start < 0:
            return None
        try:
            return json.loads(self.stdout[start:])
        except json.JSONDecodeError:
            return None

    @property
    def has_traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.stdout + self.stderr


@dataclass
class Snapshot:
    """Everything the checks compare: target rows, ledger rows, remote folders."""

    target: dict[str, dict[str, str]]  # table -> record_id -> content hash
    target_text: str  # every target row, for the canary scan
    files: list[dict[str, Any]]
    quarantine: dict[str, dict[int, dict[str, Any]]]  # file name -> row number -> row facts
    loads: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    audit: list[dict[str, Any]]
    audit_problems: list[str]
    ledger_text: str  # reports, failure messages, audit events: for the canary scan
    inbox: list[str]
    processed: list[str]
    staging: dict[str, bytes]

    def file(self, name: str) -> dict[str, Any] | None:
        found = [f for f in self.files if f["name"] == name]
        return found[0] if found else None


class CrashLab:
    """One lab_results feed (keys, YAMLs, encrypted files) that many cycles reuse in turn.

    Each cycle gets a fresh database (ledger and warehouse), a fresh inbox holding the
    same ciphertexts, and a fresh staging folder; sshd, PostgreSQL and the Prefect API
    are shared. `feeds_fixed/` is the same feed with the unmapped code added to its
    mapping: the steward's fix that a release then loads.
    """

    def __init__(
        self,
        root: Path,
        *,
        sshd: SshdServer,
        postgres: PostgresServer,
        prefect_api_url: str,
        seed: int,
    ) -> None:
        self.root = root
        self.postgres = postgres
        self.prefect_api_url = prefect_api_url
        self.seed = seed
        self.files = data_set(seed)
        self.sshd_root = sshd.root
        # Where the partner keyring writes the files once; each cycle gets copies.
        partner_out = root / "partner-out"
        endpoint = sshd.endpoint(partner_out)
        targets = [
            {
                "name": "warehouse",
                "kind": "postgres",
                "url": "env:BB_TEST_WAREHOUSE_URL",
                "table": TABLES["warehouse"],
                "columns": LAB_TARGET_COLUMNS,
            },
            {
                "name": "slim",
                "kind": "postgres",
                "url": "env:BB_TEST_WAREHOUSE_URL",
                "table": TABLES["slim"],
                "columns": SLIM_COLUMNS,
            },
        ]
        self.scenario: LabFeedScenario = build_lab_scenario(
            root / "lab", endpoint, targets=targets, processed_dir="processed"
        )
        self.ciphertexts = root / "ciphertexts"
        self.ciphertexts.mkdir()
        try:
            for spec in self.files:
                dropped = self.scenario.drop_file(spec.name, spec.frame())
                shutil.move(dropped, self.ciphertexts / spec.name)
        finally:
            self.scenario.close()
        self.fixed_config_dir = self._write_fixed_feed()
        self.stewards_file = root / "stewards.yaml"
        self.stewards_file.write_text(
            f"stewards:\n  {STEWARD}:\n    acme_lab: steward\n", encoding="utf-8"
        )

    def _write_fixed_feed(self) -> Path:
        lab = self.scenario.root
        mapping = lab / "mappings" / "acme_lab_loinc.csv"
        fixed_mapping = lab / "mappings_fixed" / "acme_lab_loinc.csv"
        fixed_mapping.parent.mkdir()
        fixed_mapping.write_text(
            mapping.read_text(encoding="utf-8")
            + f"{UNMAPPED_CODE},2345-7,Glucose [Mass/volume] in Serum or Plasma,false\n",
            encoding="utf-8",
        )
        feed = yaml.safe_load(self.scenario.feed_path.read_text(encoding="utf-8"))
        feed["mappings"] = {"local_test_code": "../mappings_fixed/acme_lab_loinc.csv"}
        fixed_dir = lab / "feeds_fixed"
        fixed_dir.mkdir()
        (fixed_dir / "lab_results.yaml").write_text(yaml.safe_dump(feed), encoding="utf-8")
        return fixed_dir

    def new_cycle(self, tag: str, template: str | None = None) -> Cycle:
        """A fresh database (optionally a copy of `template`), inbox, feed YAML and staging.

        Every cycle has its own inbox (and a feed YAML pointing at it), so cycles of one
        lab can run side by side.
        """
        name = f"crash_{tag}_{uuid.uuid4().hex[:10]}"
        if template is None:
            url = self.postgres.create_database(name)
        else:
            url = self._clone_database(template, name)
        drop_dir = self.sshd_root / name
        drop_dir.mkdir()
        if template is None:
            for path in self.ciphertexts.iterdir():
                shutil.copy2(path, drop_dir / path.name)
        # A sibling of feeds/: the YAML's ../secrets and ../mappings references still hold.
        config_dir = self.scenario.root / f"feeds_{name}"
        config_dir.mkdir()
        feed = yaml.safe_load(self.scenario.feed_path.read_text(encoding="utf-8"))
        feed["source"]["remote_dir"] = str(drop_dir)
        (config_dir / "lab_results.yaml").write_text(yaml.safe_dump(feed), encoding="utf-8")
        staging = self.root / "staging" / name
        staging.parent.mkdir(exist_ok=True)
        return Cycle(
            lab=self,
            db_name=name,
            url=url,
            staging=staging,
            drop_dir=drop_dir,
            config_dir=config_dir,
        )

    def _clone_database(self, template: str, name: str) -> str:
        # The template must have no sessions: a CLI that just exited may still have a
        # backend on its way out, and parallel clones of one template collide. Retry.
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.postgres.dsn, autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                return self.postgres.url_for(name)
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@dataclass
class Cycle:
    """One database and inbox: a kill, the reruns, and what they left behind."""

    lab: CrashLab
    db_name: str
    url: str
    staging: Path
    drop_dir: Path
    config_dir: Path
    runs: list[CliRun] = field(default_factory=list)

    @property
    def dsn(self) -> str:
        return self.lab.postgres.dsn_for(self.db_name)

    def env(self, crash_at: str | None = None, trace: Path | None = None) -> dict[str, str]:
        """The environment of a CLI run against this cycle's database."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in (CRASH_AT_ENV, CRASH_TESTING_ENV, CRASH_TRACE_ENV)
        }
        env.update(
            {
                "PREFECT_API_URL": self.lab.prefect_api_url,
                "BATCHBRIDGE_DATABASE_URL": self.url,
                "BB_TEST_WAREHOUSE_URL": self.url,
                "BATCHBRIDGE_STAGING_DIR": str(self.staging),
                "BATCHBRIDGE_ACTOR": STEWARD,
                "BATCHBRIDGE_STEWARDS_FILE": str(self.lab.stewards_file),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            }
        )
        if crash_at is not None or trace is not None:
            env[CRASH_TESTING_ENV] = "1"
        if crash_at is not None:
            env[CRASH_AT_ENV] = crash_at
        if trace is not None:
            env[CRASH_TRACE_ENV] = str(trace)
        return env

    def cli(
        self, args: list[str], *, crash_at: str | None = None, trace: Path | None = None
    ) -> CliRun:
        """Run `batchbridge ARGS` in a subprocess and keep what it printed."""
        command = [sys.executable, "-m", "batchbridge.cli", *args]
        started = time.perf_counter()
        proc = subprocess.run(
            command,
            env=self.env(crash_at, trace),
            capture_output=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        run = CliRun(
            args=args,
            returncode=proc.returncode,
            stdout=proc.stdout.decode("utf-8", "replace"),
            stderr=proc.stderr.decode("utf-8", "replace"),
            seconds=round(time.perf_counter() - started, 2),
        )
        self.runs.append(run)
        return run

    def nightly(self, *, crash_at: str | None = None, trace: Path | None = None) -> CliRun:
        """`batchbridge run lab_results --json`."""
        return self.cli(
            ["run", "lab_results", "--config-dir", str(self.config_dir), "--json"],
            crash_at=crash_at,
            trace=trace,
        )

    def release(self, *, crash_at: str | None = None, trace: Path | None = None) -> CliRun:
        """`batchbridge quarantine release --feed lab_results --json` with the fixed mapping."""
        return self.cli(
            [
                "quarantine",
                "release",
                "--feed",
                "lab_results",
                "--config-dir",
                str(self.lab.fixed_config_dir),
                "--json",
            ],
            crash_at=crash_at,
            trace=trace,
        )

    def snapshot(self) -> Snapshot:
        """Read the target tables, the ledger, the inbox and the staging folder."""
        with psycopg.connect(self.dsn) as conn:
            target, target_text = _target_rows(conn)
            files = _dicts(
                conn,
                "SELECT id, name, size, sha256, state, rows_read, rows_declared, rows_valid, "
                "rows_quarantined, last_run_id, failure_message FROM files ORDER BY name",
            )
            names = {f["id"]: f["name"] for f in files}
            quarantine: dict[str, dict[int, dict[str, Any]]] = {}
            for row in _dicts(
                conn,
                "SELECT id, file_id, row_number, status, reasons, released_load_id "
                "FROM quarantined_rows",
            ):
                by_row = quarantine.setdefault(names[row["file_id"]], {})
                by_row[row["row_number"]] = row
            loads = _dicts(conn, "SELECT * FROM loads ORDER BY finished_at")
            for load in loads:
                load["file_name"] = names[load["file_id"]]
            runs = _dicts(conn, "SELECT id, status, report FROM runs ORDER BY started_at")
            audit = _dicts(
                conn, "SELECT action, object_ids, reason, details FROM audit_events ORDER BY id"
            )
        audit_problems = self._verify_audit_chain() if audit else []
        ledger_text = json.dumps(
            {"runs": runs, "files": files, "audit": audit}, default=str, sort_keys=True
        )
        drop = self.drop_dir
        processed = drop / "processed"
        return Snapshot(
            target=target,
            target_text=target_text,
            files=files,
            quarantine=quarantine,
            loads=loads,
            runs=runs,
            audit=audit,
            audit_problems=audit_problems,
            ledger_text=ledger_text,
            inbox=sorted(p.name for p in drop.iterdir() if p.is_file()),
            processed=sorted(p.name for p in processed.iterdir()) if processed.is_dir() else [],
            staging={str(p): p.read_bytes() for p in self.staging.rglob("*") if p.is_file()}
            if self.staging.exists()
            else {},
        )

    def _verify_audit_chain(self) -> list[str]:
        """The hash chain of the audit log, as `batchbridge audit verify` checks it."""
        engine = create_engine(self.url)
        try:
            with Session(engine) as session:
                return list(verify_chain(session).problems)
        finally:
            engine.dispose()

    def drop(self) -> None:
        """Drop the cycle's database and remove its folders."""
        self.lab.postgres.drop_database(self.db_name)
        for folder in (self.staging, self.drop_dir, self.config_dir):
            shutil.rmtree(folder, ignore_errors=True)


def _dicts(conn: psycopg.Connection[Any], query: str) -> list[dict[str, Any]]:
    exists = conn.execute("SELECT to_regclass('files')").fetchone()
    if exists is None or exists[0] is None:
        return []  # the kill came before the ledger was even migrated
    cur = conn.execute(query)
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _target_rows(conn: psycopg.Connection[Any]) -> tuple[dict[str, dict[str, str]], str]:
    rows: dict[str, dict[str, str]] = {}
    texts: list[str] = []
    for table in TABLES.values():
        found: dict[str, str] = {}
        exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        if exists is not None and exists[0] is not None:
            cur = conn.execute(f"SELECT * FROM {table}")  # noqa: S608 - fixed test table names
            names = [d.name for d in cur.description or []]
            for values in cur.fetchall():
                row = dict(zip(names, values, strict=True))
                texts.append(repr(row))
                content = {k: v for k, v in row.items() if k not in LINEAGE}
                digest = hashlib.sha256(repr(sorted(content.items())).encode()).hexdigest()
                key = str(row["record_id"])
                # Impossible with the primary key; counted as doubled should it ever happen.
                found[key if key not in found else f"{key}#dup{len(found)}"] = digest
        rows[table] = found
    return rows, "\n".join(texts)


@dataclass
class Verdict:
    """What one cycle's checks found."""

    lost: int = 0
    doubled: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problems.append(text)


def check_against(
    got: Snapshot,
    ref: Snapshot,
    *,
    release: bool,
    remote: bool = True,
    verdict: Verdict | None = None,
) -> Verdict:
    """Compare a crashed-and-rerun cycle with the clean reference run of the same data."""
    verdict = verdict or Verdict()
    for table, expected in ref.target.items():
        rows = got.target.get(table, {})
        missing = expected.keys() - rows.keys()
        extra = rows.keys() - expected.keys()
        verdict.lost += len(missing)
        verdict.doubled += len(extra)
        if missing or extra:
            verdict.problem(f"{table}: {len(missing)} key(s) missing, {len(extra)} unexpected")
        changed = [k for k in expected.keys() & rows.keys() if expected[k] != rows[k]]
        if changed:
            verdict.problem(f"{table}: {len(changed)} row(s) differ from the clean run")
    names = [f["name"] for f in ref.files]
    for name in names:
        entries = [f for f in got.files if f["name"] == name]
        ref_file = ref.file(name)
        assert ref_file is not None
        if len(entries) != 1:
            verdict.problem(f"{name}: {len(entries)} ledger rows (expected 1)")
            if len(entries) > 1:
                verdict.doubled += (len(entries) - 1) * (ref_file["rows_read"] or 0)
            continue
        entry = entries[0]
        if entry["state"] != "reconciled":
            verdict.problem(f"{name}: ledger state {entry['state']} (expected reconciled)")
        for column in ("sha256", "rows_read", "rows_declared", "rows_valid", "rows_quarantined"):
            if entry[column] != ref_file[column]:
                verdict.problem(f"{name}: {column} {entry[column]} != {ref_file[column]}")
        _check_quarantine(got, ref, name, verdict)
        _check_loads(got, entry, verdict, release=release)
        if release:
            _check_balance(got, entry, verdict)
    if release:
        _check_release_audit(got, verdict)
    if remote and (got.processed != ref.processed or got.inbox != ref.inbox):
        verdict.problem(
            f"remote folders: inbox {got.inbox}, processed {got.processed} "
            f"(expected inbox {ref.inbox}, processed {ref.processed})"
        )
    return verdict


def _check_quarantine(got: Snapshot, ref: Snapshot, name: str, verdict: Verdict) -> None:
    expected = ref.quarantine.get(name, {})
    rows = got.quarantine.get(name, {})
    missing = expected.keys() - rows.keys()
    extra = rows.keys() - expected.keys()
    verdict.lost += len(missing)
    verdict.doubled += len(extra)
    if missing or extra:
        verdict.problem(f"{name}: quarantine rows {len(missing)} missing, {len(extra)} unexpected")
    for number in expected.keys() & rows.keys():
        want, have = expected[number], rows[number]
        if (want["status"], want["reasons"]) != (have["status"], have["reasons"]):
            verdict.problem(
                f"{name} row {number}: quarantine {have['status']} {have['reasons']} "
                f"(expected {want['status']} {want['reasons']})"
            )
        if have["status"] == "released":
            load_ids = {load["id"] for load in got.loads}
            if have["released_load_id"] not in load_ids:
                verdict.problem(f"{name} row {number}: released by an unrecorded load")


def _check_loads(got: Snapshot, entry: dict[str, Any], verdict: Verdict, *, release: bool) -> None:
    """Loads of the run that reconciled the file confirm every valid row, once per target."""
    loads = [load for load in got.loads if load["file_id"] == entry["id"]]
    valid = entry["rows_valid"]
    last_run = [load for load in loads if load["run_id"] == entry["last_run_id"]]
    per_target = Counter(load["target"] for load in last_run)
    for target in TABLES:
        if per_target[target] != 1:
            verdict.problem(
                f"{entry['name']}: {per_target[target]} load(s) into {target} by the "
                "reconciling run (expected 1)"
            )
        for load in last_run:
            if load["target"] != target:
                continue
            accounted = (
                load["rows_inserted"]
                + load["rows_updated"]
                + load["rows_unchanged"]
                + load["rows_rejected"]
            )
            if accounted != valid or load["rows_confirmed"] != valid - load["rows_rejected"]:
                verdict.problem(
                    f"{entry['name']}: load into {target} accounts {accounted}, confirms "
                    f"{load['rows_confirmed']}, valid {valid}"
                )
        # Every key is inserted exactly once over all loads; more means a row was written
        # twice (deleted and inserted again), which the primary key alone would not show.
        inserted = sum(load["rows_inserted"] for load in loads if load["target"] == target)
        released = sum(
            1
            for row in got.quarantine.get(entry["name"], {}).values()
            if row["status"] == "released"
        )
        ceiling = valid + (released if release else 0)
        if inserted > ceiling:
            verdict.doubled += inserted - ceiling
            verdict.problem(
                f"{entry['name']}: {inserted} rows inserted into {target}, max {ceiling}"
            )


def _check_release_audit(got: Snapshot, verdict: Verdict) -> None:
    """Each released row is in exactly one committed release event; the chain verifies."""
    released = {
        row["id"]
        for rows in got.quarantine.values()
        for row in rows.values()
        if row["status"] == "released"
    }
    audited = Counter(
        row_id
        for event in got.audit
        if event["action"] == "release"
        for row_id in (event["details"] or {}).get("released", [])
    )
    twice = [row_id for row_id, n in audited.items() if n > 1]
    if twice or set(audited) != released:
        verdict.doubled += len(twice)
        verdict.problem(
            f"audit: {len(twice)} row(s) released twice, {len(released - set(audited))} "
            f"released without an event, {len(set(audited) - released)} events for rows "
            "not released"
        )
    if got.audit_problems:
        verdict.problem(f"audit chain: {got.audit_problems}")


def _check_balance(got: Snapshot, entry: dict[str, Any], verdict: Verdict) -> None:
    statuses = Counter(row["status"] for row in got.quarantine.get(entry["name"], {}).values())
    accounted = entry["rows_valid"] + sum(statuses.values())
    if accounted != entry["rows_read"]:
        verdict.problem(
            f"{entry['name']}: read {entry['rows_read']} != first run {entry['rows_valid']} + "
            f"quarantine rows {dict(statuses)}"
        )


def check_final_report(report: Any, names: list[str], verdict: Verdict) -> None:
    """The last rerun's report: succeeded, and every file reconciled and balanced or done."""
    if not isinstance(report, dict):
        verdict.problem("the rerun printed no JSON report")
        return
    # The one note a rerun may carry: it archived a file the killed run had reconciled.
    notes = [n for n in report.get("notes", []) if "moved to the processed folder now" not in n]
    if report.get("status") != "succeeded" or report.get("error") or notes:
        verdict.problem(
            f"rerun report: status {report.get('status')}, error {report.get('error')}, "
            f"notes {notes}"
        )
    seen: dict[str, str] = {name: why for name, why in report.get("skipped", {}).items()}
    for file in report.get("files", []):
        seen[file["name"]] = file["outcome"]
        read, valid, quarantined = file["rows_read"], file["rows_valid"], file["rows_quarantined"]
        if file["outcome"] != "reconciled" or not file["balanced"] or read != valid + quarantined:
            verdict.problem(f"rerun report: {file['name']} {file['outcome']} does not balance")
        for target, counts in file["targets"].items():
            if counts["confirmed"] != valid:
                verdict.problem(f"rerun report: {file['name']} {target} confirmed != valid")
    # A file the killed run archived is not listed any more, so not in the report: its
    # ledger state and the processed folder are checked from the snapshot instead.
    for name in names:
        if seen.get(name, "already_done") not in ("reconciled", "already_done"):
            verdict.problem(f"rerun report: {name} is {seen.get(name)}")


def canary_hits(cycle: Cycle, snapshot: Snapshot) -> list[str]:
    """Where a canary patient name shows up outside the encrypted quarantine payload."""
    texts = {
        "target": snapshot.target_text,
        "ledger": snapshot.ledger_text,
        **{f"run {i} stdout": run.stdout for i, run in enumerate(cycle.runs)},
        **{f"run {i} stderr": run.stderr for i, run in enumerate(cycle.runs)},
    }
    hits = [
        where
        for canary in CANARIES
        for where, text in texts.items()
        if canary.lower() in text.lower()
    ]
    # Staging holds ciphertext only, even when a kill left a partial download behind.
    hits += [
        path
        for canary in CANARIES
        for path, blob in snapshot.staging.items()
        if canary.encode() in blob
    ]
    return hits


def read_trace(path: Path) -> Counter[str]:
    """How often each crash point was reached in a traced run."""
    if not path.exists():
        return Counter()
    return Counter(line for line in path.read_text(encoding="utf-8").splitlines() if line)
