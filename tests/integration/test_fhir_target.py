"""FhirTarget against the FHIR test server process: idempotence, retries, rejections, OAuth2,
full snapshots."""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pydantic import SecretStr

from batchbridge.config import load_feed
from batchbridge.connectors.targets.base import LoadRequest, LoadResult
from batchbridge.connectors.targets.fhir import ClientCredentials, FhirTarget
from batchbridge.connectors.targets.registry import open_target
from batchbridge.demo.lab_data import LAB_TESTS
from batchbridge.demo.scenario import LAB_TARGET_COLUMNS
from batchbridge.errors import TargetError, TransientTargetError
from batchbridge.validations.base import (
    ROW_COLUMN,
    FhirIdentity,
)
from batchbridge.validations.schemas.lab_results import LAB_RESULTS
from batchbridge.validations.schemas.patient_roster import SCHEMA as PATIENT_ROSTER
from tests.support.fhir_rows import IDENTITY, request
from tests.support.fhir_rows import lab_rows as transformed_lab_rows
from tests.support.fhir_server import FhirServerProcess, start_fhir_server
from tests.support.medplum_fhir import FhirTenant
from tests.unit.feed_helpers import write_feed

pytestmark = pytest.mark.integration

CANARY = "Quillon-Fhircanary"
GLUCOSE = next(t for t in LAB_TESTS if t.code == "GLU")


def lab_rows(n: int = 120, *, seed: int = 11) -> pl.DataFrame:
    """Transformed lab_results rows, canaries included."""
    return transformed_lab_rows(n, seed=seed, canary_names=[CANARY])


class RecordingSleep:
    """Sleeps for real (the server's Retry-After is honoured in time) and records each wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(seconds)


_OPEN: list[FhirTarget] = []


@pytest.fixture(autouse=True)
def _close_targets() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def target_for(
    server: FhirServerProcess, *, secret: str | None = None, **kwargs: Any
) -> tuple[FhirTarget, RecordingSleep]:
    """A target for `server` (closed after the test) and the recorder of its retry waits."""
    sleep = RecordingSleep()
    auth = ClientCredentials(
        server.token_url,
        server.client_id,
        SecretStr(secret or server.client_secret),
        target="fhir",
        scope="system/Observation.write system/Patient.write",
    )
    options: dict[str, Any] = {
        "bundle_size": 25,
        "max_attempts": 4,
        "max_retry_after": 5.0,
        "timeout_seconds": 10.0,
        "retry_initial_wait": 0.05,
        "retry_max_wait": 0.2,
        "sleep": sleep,
    }
    options.update(kwargs)
    schema = options.pop("schema", LAB_RESULTS)
    identity = options.pop("identity", IDENTITY)
    columns = options.pop("columns", LAB_TARGET_COLUMNS)
    target = FhirTarget("fhir", server.base_url, schema, identity, columns, auth=auth, **options)
    _OPEN.append(target)
    return target, sleep


def assert_balanced(result: LoadResult, sent: int) -> None:
    changed = result.rows_inserted + result.rows_updated + result.rows_unchanged
    assert changed + result.rows_rejected == sent
    assert result.rows_confirmed == sent - result.rows_rejected


def observation_identifiers(server: FhirServerProcess) -> list[str]:
    return [r["identifier"][0]["value"] for r in server.resources("Observation")]


def test_load_then_rerun_is_idempotent(fhir_server: FhirServerProcess) -> None:
    rows = lab_rows()
    target, _ = target_for(fhir_server)

    first = target.load(request(rows))
    after_first = fhir_server.stats()
    second = target.load(request(rows))
    after_second = fhir_server.stats()
    target.close()

    assert (first.rows_inserted, first.rows_updated, first.rows_unchanged) == (rows.height, 0, 0)
    assert (second.rows_inserted, second.rows_updated, second.rows_unchanged) == (
        0,
        0,
        rows.height,
    )
    assert_balanced(first, rows.height)
    assert_balanced(second, rows.height)
    patients = rows["patient_key"].n_unique()
    assert after_first["resources"] == {"Observation": rows.height, "Patient": patients}
    assert after_second["resources"] == after_first["resources"]
    assert after_second["versions_written"] == after_first["versions_written"]
    identifiers = observation_identifiers(fhir_server)
    assert sorted(identifiers) == sorted(rows["record_id"].to_list())
    assert after_first["tokens_issued"] == 1 == after_second["tokens_issued"]


def test_corrected_rows_update_in_place(fhir_server: FhirServerProcess) -> None:
    rows = lab_rows(40)
    target, _ = target_for(fhir_server)
    target.load(request(rows))
    corrected = rows.with_columns(
        pl.when(pl.col(ROW_COLUMN) <= 5)
        .then(pl.lit("C"))
        .otherwise(pl.col("result_status"))
        .alias("result_status")
    )
    changed = int((corrected["result_status"] != rows["result_status"]).sum())

    result = target.load(request(corrected))

    assert result.rows_updated == changed > 0
    assert result.rows_unchanged == rows.height - changed
    assert fhir_server.stats()["resources"]["Observation"] == rows.height
    statuses = Counter(r["status"] for r in fhir_server.resources("Observation"))
    assert statuses["corrected"] >= changed


def test_429_with_retry_after_and_503_are_retried_then_succeed(
    fhir_server: FhirServerProcess,
) -> None:
    rows = lab_rows(30)
    target, sleep = target_for(fhir_server)
    fhir_server.add_fault(429, retry_after="1", times=2)

    result = target.load(request(rows))

    assert sleep.waits == [1.0, 1.0]
    assert result.rows_inserted == rows.height
    fhir_server.add_fault(503, times=2)
    fhir_server.add_fault(503, drop=True)  # a dropped connection: retried as well

    result = target.load(request(rows))

    assert result.rows_unchanged == rows.height
    assert len(sleep.waits) == 5
    assert all(wait <= 0.4 for wait in sleep.waits[2:])  # backoff, no Retry-After
    assert fhir_server.stats()["faults_served"] == 5


def test_a_server_still_busy_after_max_attempts_fails_transiently(
    fhir_server: FhirServerProcess,
) -> None:
    target, sleep = target_for(fhir_server, max_attempts=2)
    fhir_server.add_fault(503, retry_after="0", times=2)

    with pytest.raises(TransientTargetError, match=r"HTTP 503 \(gave up after 2 attempts\)"):
        target.load(request(lab_rows(10)))
    assert sleep.waits == [0.0]


def test_rows_the_server_refuses_are_rejected_with_reasons_and_the_rest_load(
    fhir_server: FhirServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    rows = lab_rows(150, seed=5)
    # The canary rides in a field the server quotes back in its diagnostics.
    rows = rows.with_columns(
        pl.when(pl.col("loinc_code") == GLUCOSE.loinc_code)
        .then(pl.lit(f"{CANARY} glucose"))
        .otherwise(pl.col("test_name"))
        .alias("test_name")
    )
    refused = set(rows.filter(pl.col("loinc_code") == GLUCOSE.loinc_code)[ROW_COLUMN].to_list())
    assert 0 < len(refused) < rows.height
    fhir_server.set_reject_codes([GLUCOSE.loinc_code])
    target, sleep = target_for(fhir_server, bundle_size=40)

    with caplog.at_level(logging.DEBUG):
        result = target.load(request(rows))

    assert {r.row for r in result.rejections} == refused
    assert {r.reason for r in result.rejections} == {"http_422:code-invalid"}
    assert result.rows_rejected == len(refused)
    assert result.rows_inserted == rows.height - len(refused)
    assert_balanced(result, rows.height)
    assert fhir_server.stats()["resources"]["Observation"] == rows.height - len(refused)
    assert sleep.waits == []  # never retried
    assert CANARY not in repr(result) + caplog.text

    # The terminology is fixed: a rerun loads the refused rows, the others stay unchanged.
    fhir_server.set_reject_codes([])
    rerun = target.load(request(rows))
    assert (rerun.rows_inserted, rerun.rows_unchanged, rerun.rows_rejected) == (
        len(refused),
        rows.height - len(refused),
        0,
    )


def test_an_expired_token_is_refreshed_once(fhir_server: FhirServerProcess) -> None:
    rows = lab_rows(20)
    target, _ = target_for(fhir_server)
    target.load(request(rows))
    fhir_server.expire_tokens()

    result = target.load(request(rows))

    assert result.rows_unchanged == rows.height
    stats = fhir_server.stats()
    assert stats["tokens_issued"] == 2
    assert stats["unauthorized"] == 1


def test_a_wrong_client_secret_is_a_clear_target_error(fhir_server: FhirServerProcess) -> None:
    wrong = f"wrong-{secrets.token_hex(8)}"
    target, sleep = target_for(fhir_server, secret=wrong)

    with pytest.raises(TargetError) as caught:
        target.load(request(lab_rows(5)))

    message = str(caught.value)
    assert "refused the client credentials (HTTP 401, invalid_client)" in message
    assert caught.value.reason == "target_auth_failed"
    assert wrong not in message
    assert fhir_server.client_secret not in message
    assert sleep.waits == []
    assert "resources" not in fhir_server.stats() or not fhir_server.stats()["resources"]


def test_no_canary_in_any_error_of_a_failing_load(
    fhir_server: FhirServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    rows = lab_rows(30).with_columns(pl.lit(CANARY).alias("reference_range"))
    target, _ = target_for(fhir_server, max_attempts=2)
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        fhir_server.add_fault(503, retry_after="0", times=2)
        with pytest.raises(TargetError) as transient:
            target.load(request(rows))
        texts.append(str(transient.value))
        fhir_server.add_fault(500)
        with pytest.raises(TargetError) as failed:
            target.load(request(rows))
        texts.append(str(failed.value))
        fhir_server.add_fault(404, times=1)
        with pytest.raises(TargetError) as missing:
            target.load(request(rows))
        texts.append(str(missing.value))

    assert all(CANARY not in text for text in [*texts, caplog.text])
    assert fhir_server.client_secret not in " ".join(texts) + caplog.text


def test_the_feed_config_opens_a_working_target_and_health_check(
    fhir_server: FhirServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fhir_secret").write_text(fhir_server.client_secret + "\n")
    feeds = write_feed(
        tmp_path,
        extra={
            "targets": [
                {
                    "name": "fhir",
                    "kind": "fhir",
                    "base_url": fhir_server.base_url,
                    "token_url": fhir_server.token_url,
                    "client_id": fhir_server.client_id,
                    "client_secret": f"file:{tmp_path / 'fhir_secret'}",
                    "identifier_system": IDENTITY.identifier_system,
                    "columns": LAB_TARGET_COLUMNS,
                    "bundle_size": 50,
                }
            ]
        },
    )
    loaded = load_feed("lab_results", feeds)
    target = open_target(loaded, loaded.config.targets[0])
    assert isinstance(target, FhirTarget)
    rows = lab_rows(60)

    target.check_writable("acme_lab")
    assert target.probe_health("acme_lab").endswith(
        "one count-only search with a bearer token from the token endpoint; nothing written"
    )
    result = target.load(request(rows))
    target.close()

    assert result.rows_inserted == rows.height
    assert_balanced(result, rows.height)


def test_the_store_survives_a_restart_with_a_state_file(tmp_path: Path) -> None:
    rows = lab_rows(30)
    state = tmp_path / "fhir-state.json"
    kwargs: dict[str, Any] = {
        "client_id": "cid",
        "client_secret": secrets.token_urlsafe(12),
        "state_file": state,
    }
    with start_fhir_server(**kwargs) as server:
        target, _ = target_for(server)
        assert target.load(request(rows)).rows_inserted == rows.height
        target.close()
    with start_fhir_server(**kwargs) as server:
        target, _ = target_for(server)
        result = target.load(request(rows))
        target.close()
        assert result.rows_unchanged == rows.height
        assert server.stats()["resources"]["Observation"] == rows.height


# -- full snapshots -------------------------------------------------------------------------

ROSTER_IDENTITY = FhirIdentity(
    "urn:batchbridge:riverside:patient_roster", IDENTITY.patient_identifier_system
)


def roster_request(*members: str, kept: tuple[str, ...] = ()) -> LoadRequest:
    rows = pl.DataFrame(
        {
            "member_id": list(members),
            "patient_key": [f"pk-{m}" for m in members],
            "given": ["Jo"] * len(members),
            "family": [CANARY] * len(members),
            ROW_COLUMN: list(range(1, len(members) + 1)),
        },
        schema_overrides={ROW_COLUMN: pl.UInt32},
    )
    return LoadRequest(
        tenant="riverside",
        natural_key=("member_id",),
        load_id=secrets.token_hex(4),
        file_id="F1",
        rows=rows,
        full_snapshot=True,
        kept_keys=pl.DataFrame({"member_id": list(kept)}, schema={"member_id": pl.String}),
    )


def test_a_full_roster_pages_and_marks_absent_patients_on_their_version(
    fhir_server: FhirServerProcess,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("batchbridge.connectors.targets.fhir.snapshot.SNAPSHOT_PAGE", 3)
    target, sleep = target_for(
        fhir_server,
        schema=PATIENT_ROSTER,
        identity=ROSTER_IDENTITY,
        columns=["patient_key", "given", "family"],
    )
    members = [f"M{i:02d}" for i in range(1, 11)]
    assert target.load(roster_request(*members)).rows_inserted == 10

    fhir_server.add_fault(503, retry_after="0")  # the server is busy once: retried
    with caplog.at_level(logging.DEBUG):
        second = target.load(roster_request("M02", "M05", kept=("M07",)))

    assert (second.rows_unchanged, second.rows_inactivated) == (2, 7)
    assert sleep.waits == [0.0]
    patients = {p["identifier"][0]["value"]: p for p in fhir_server.resources("Patient")}
    assert len(patients) == 10
    inactive = {m for m, p in patients.items() if p["active"] is False}
    assert inactive == set(members) - {"M02", "M05", "M07"}
    assert {patients[m]["meta"]["versionId"] for m in inactive} == {"2"}
    assert all(patients[m]["name"] == [{"family": CANARY, "given": ["Jo"]}] for m in inactive)
    assert fhir_server.stats()["updates"] == 7
    assert CANARY not in caplog.text

    fhir_server.expire_tokens()
    third = target.load(roster_request(*members))
    assert (third.rows_updated, third.rows_unchanged, third.rows_inactivated) == (7, 3, 0)
    assert all(p["active"] is True for p in fhir_server.resources("Patient"))
    assert fhir_server.stats()["tokens_issued"] == 2


def test_a_full_roster_on_a_real_fhir_server(
    real_fhir: FhirTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on Medplum: its `_tag` and `identifier=<system>|` searches, absolute next
    links, versionId in meta but no ETag on reads, 412 on a stale If-Match, and a PUT
    without meta.tag dropping the tags (why every write sends the tenant tag)."""
    monkeypatch.setattr("batchbridge.connectors.targets.fhir.snapshot.SNAPSHOT_PAGE", 3)
    columns = ["patient_key", "given", "family"]

    def opened(name: str) -> FhirTarget:
        target = FhirTarget(name, real_fhir.base_url, PATIENT_ROSTER, ROSTER_IDENTITY, columns,
                            bundle_size=4, max_attempts=2, sleep=lambda _s: None)  # fmt: skip
        _OPEN.append(target)
        return target

    other = roster_request("B1", "B2")
    assert opened("other").load(replace(other, tenant="bayside")).rows_inserted == 2
    target = opened("fhir")
    members = [f"M{i:02d}" for i in range(1, 8)]
    assert target.load(roster_request(*members)).rows_inserted == 7

    second = target.load(roster_request("M02", "M05", kept=("M07",)))

    assert second.rows_inactivated == 4
    active = {p["identifier"][0]["value"]: p["active"] for p in real_fhir.resources("Patient")}
    assert active == {
        "B1": True, "B2": True, "M01": False, "M02": True, "M03": False, "M04": False,
        "M05": True, "M06": False, "M07": True,
    }  # fmt: skip
    third = target.load(roster_request(*members))
    assert third.rows_inactivated == 0 and third.rows_inserted == 0
    assert all(p["active"] is True for p in real_fhir.resources("Patient"))
