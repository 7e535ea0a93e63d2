"""FhirTarget logic over httpx.MockTransport: counting, bisecting, retries, Retry-After, tokens."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from pydantic import SecretStr

from batchbridge.config import load_feed
from batchbridge.connectors.targets.base import LoadRequest
from batchbridge.connectors.targets.fhir import ClientCredentials, FhirTarget, check_fhir_url
from batchbridge.connectors.targets.registry import open_fhir_target, open_target
from batchbridge.demo.scenario import LAB_TARGET_COLUMNS
from batchbridge.errors import ConfigError, TargetError, TransientTargetError
from batchbridge.validations.base import ROW_COLUMN, FhirIdentity
from batchbridge.validations.schemas.lab_results import LAB_RESULTS
from tests.support.fhir_server import (
    FhirFailure,
    ServerState,
    operation_outcome,
    run_transaction,
    search,
)
from tests.unit.feed_helpers import write_feed

BASE = "http://127.0.0.1:8080/fhir"
TOKEN_URL = "http://127.0.0.1:8080/token"
IDENTITY = FhirIdentity("urn:batchbridge:acme_lab:lab_results", "urn:batchbridge:patient-key")
COLUMNS = ["patient_key", "loinc_code", "result_value", "result_value_numeric", "result_status"]
SECRET = "s3cret-client-secret"
PHI = "SECRET-DOE-JANE"


def lab_rows(n: int, *, codes: dict[int, str] | None = None) -> pl.DataFrame:
    """`n` transformed lab rows; `codes` puts a LOINC code on chosen rows (1-based)."""
    codes = codes or {}
    return pl.DataFrame(
        {
            "record_id": [f"R{i:04d}" for i in range(1, n + 1)],
            "patient_key": [f"pk{i % 3}" for i in range(1, n + 1)],
            "loinc_code": [codes.get(i, "2345-7") for i in range(1, n + 1)],
            # A value the server quotes back in its diagnostics: must never reach our errors.
            "result_value": [PHI] * n,
            "result_value_numeric": [None] * n,
            "result_status": ["F"] * n,
            ROW_COLUMN: list(range(1, n + 1)),
        },
        schema_overrides={"result_value_numeric": pl.Float64, ROW_COLUMN: pl.UInt32},
    )


def request(rows: pl.DataFrame, load_id: str = "L1") -> LoadRequest:
    return LoadRequest(
        tenant="acme_lab", natural_key=("record_id",), load_id=load_id, file_id="F1", rows=rows
    )


class FakeFhir:
    """The test server's transaction and search logic behind a MockTransport, plus faults."""

    def __init__(self, *, reject_codes: set[str] | None = None) -> None:
        self.state = ServerState(
            client_id="cid",
            client_secret=SECRET,
            token_ttl=3600,
            reject_codes=set(reject_codes or ()),
            state_file=None,
        )
        self.calls: list[httpx.Request] = []
        self.planned: list[httpx.Response | Exception] = []
        self.valid_tokens: set[str] = set()
        self.tokens_issued = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, req: httpx.Request) -> httpx.Response:
        self.calls.append(req)
        if self.planned:
            planned = self.planned.pop(0)
            if isinstance(planned, Exception):
                raise planned
            return planned
        if req.url.path == "/token":
            self.tokens_issued += 1
            token = f"tok{self.tokens_issued}"
            self.valid_tokens.add(token)
            return httpx.Response(
                200, json={"access_token": token, "token_type": "Bearer", "expires_in": 600}
            )
        if self.valid_tokens and (
            req.headers.get("Authorization", "").removeprefix("Bearer ") not in self.valid_tokens
        ):
            return httpx.Response(401, json=operation_outcome("login", "bad token"))
        try:
            if req.method == "POST" and req.url.path == "/fhir":
                return httpx.Response(
                    200, json=run_transaction(self.state, json.loads(req.content))
                )
            if req.method == "GET" and req.url.path == "/fhir/metadata":
                return httpx.Response(
                    200, json={"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}
                )
            if req.method == "GET":
                kind = req.url.path.rsplit("/", 1)[1]
                return httpx.Response(200, json=search(self.state, kind, req.url.query.decode()))
        except FhirFailure as failure:
            body = operation_outcome(failure.code, failure.diagnostics)
            return httpx.Response(failure.status, json=body)
        return httpx.Response(404)

    def transactions(self) -> list[httpx.Request]:
        return [c for c in self.calls if c.method == "POST" and c.url.path == "/fhir"]


def make_target(fake: FakeFhir, **kwargs: Any) -> tuple[FhirTarget, list[float]]:
    sleeps: list[float] = []
    options: dict[str, Any] = {
        "bundle_size": 10,
        "max_attempts": 3,
        "max_retry_after": 5.0,
        "transport": fake.transport(),
        "sleep": sleeps.append,
        "retry_initial_wait": 0.01,
        "retry_max_wait": 0.02,
    }
    options.update(kwargs)
    target = FhirTarget("fhir", BASE, LAB_RESULTS, IDENTITY, COLUMNS, **options)
    return target, sleeps


def test_first_load_inserts_rerun_is_unchanged_and_nothing_is_duplicated() -> None:
    fake = FakeFhir()
    target, _ = make_target(fake)
    rows = lab_rows(25)

    first = target.load(request(rows))
    second = target.load(request(rows, "L2"))

    assert (first.rows_inserted, first.rows_updated, first.rows_unchanged) == (25, 0, 0)
    assert first.rows_confirmed == 25
    assert (second.rows_inserted, second.rows_updated, second.rows_unchanged) == (0, 0, 25)
    assert second.rows_confirmed == 25
    assert len(fake.state.store.resources["Observation"]) == 25
    assert len(fake.state.store.resources["Patient"]) == 3
    assert len(fake.transactions()) == 6  # 3 bundles of at most 10 rows, twice


def test_bundles_carry_conditional_creates_and_updates_by_identifier() -> None:
    fake = FakeFhir()
    target, _ = make_target(fake)
    target.load(request(lab_rows(4)))

    bundle = json.loads(fake.transactions()[0].content)
    assert fake.transactions()[0].headers["Content-Type"] == "application/fhir+json"
    assert bundle["type"] == "transaction"
    requests = [entry["request"] for entry in bundle["entry"]]
    assert requests[:3] == [
        {
            "method": "POST",
            "url": "Patient",
            "ifNoneExist": f"identifier=urn:batchbridge:patient-key|pk{k}",
        }
        for k in (1, 2, 0)
    ]
    assert requests[3] == {
        "method": "PUT",
        "url": "Observation?identifier=urn:batchbridge:acme_lab:lab_results|R0001",
    }


def test_a_changed_row_counts_as_updated() -> None:
    fake = FakeFhir()
    target, _ = make_target(fake)
    target.load(request(lab_rows(5)))
    changed = lab_rows(5).with_columns(
        pl.when(pl.col(ROW_COLUMN) <= 2)
        .then(pl.lit("C"))
        .otherwise(pl.lit("F"))
        .alias("result_status")
    )

    result = target.load(request(changed, "L2"))

    assert (result.rows_inserted, result.rows_updated, result.rows_unchanged) == (0, 2, 3)


def test_a_server_without_a_no_change_signal_has_200s_counted_as_updated() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.method == "POST":
            n = len(json.loads(req.content)["entry"])
            entries = [{"response": {"status": "200 OK"}} for _ in range(n)]
            return httpx.Response(200, json={"type": "transaction-response", "entry": entries})
        ids = [{"system": IDENTITY.identifier_system, "value": f"R{i:04d}"} for i in (1, 2)]
        return httpx.Response(200, json={"entry": [{"resource": {"identifier": ids}}]})

    target = FhirTarget(
        "fhir", BASE, LAB_RESULTS, IDENTITY, COLUMNS, transport=httpx.MockTransport(handler)
    )
    result = target.load(request(lab_rows(2)))

    assert (result.rows_updated, result.rows_unchanged, result.rows_confirmed) == (2, 0, 2)


def test_refused_rows_are_isolated_by_bisection_and_counted_without_diagnostics() -> None:
    fake = FakeFhir(reject_codes={"9999-9"})
    target, sleeps = make_target(fake)
    rows = lab_rows(23, codes={4: "9999-9", 5: "9999-9", 17: "9999-9"})

    result = target.load(request(rows))

    assert [(r.row, r.reason) for r in result.rejections] == [
        (4, "http_422:code-invalid"),
        (5, "http_422:code-invalid"),
        (17, "http_422:code-invalid"),
    ]
    assert result.rows_rejected == 3
    assert result.rows_inserted == 20
    total = result.rows_inserted + result.rows_updated + result.rows_unchanged
    assert total + result.rows_rejected == 23
    assert result.rows_confirmed == 20
    assert len(fake.state.store.resources["Observation"]) == 20
    assert sleeps == []  # a 4xx is never retried
    # 3 bundles + bisection of the two refused ones: bounded, nowhere near one per row.
    assert len(fake.transactions()) <= 3 + 2 * 2 * 4
    assert PHI not in repr(result)


def test_a_previously_loaded_row_that_is_now_refused_is_not_confirmed() -> None:
    fake = FakeFhir()
    target, _ = make_target(fake)
    target.load(request(lab_rows(3)))
    fake.state.reject_codes = {"9999-9"}

    result = target.load(request(lab_rows(3, codes={2: "9999-9"}), "L2"))

    # Row 2's older version is on the server, but this load did not confirm it.
    assert (result.rows_unchanged, result.rows_rejected, result.rows_confirmed) == (2, 1, 2)


def test_a_row_missing_a_required_element_is_rejected_as_required() -> None:
    fake = FakeFhir()
    target, _ = make_target(fake)
    rows = lab_rows(3).with_columns(
        pl.when(pl.col(ROW_COLUMN) == 2)
        .then(None)
        .otherwise(pl.col("result_status"))
        .alias("result_status")
    )

    result = target.load(request(rows))

    assert [(r.row, r.reason) for r in result.rejections] == [(2, "http_422:required")]


def test_non_row_4xx_fails_the_load_without_bisecting() -> None:
    fake = FakeFhir()
    fake.planned = [httpx.Response(404, json=operation_outcome("not-found", PHI))]
    target, _ = make_target(fake)

    with pytest.raises(TargetError, match="HTTP 404 \\(not-found\\); not retried") as caught:
        target.load(request(lab_rows(5)))

    assert len(fake.calls) == 1
    assert PHI not in str(caught.value)


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_wait_what_retry_after_asks_then_succeed(status: int) -> None:
    fake = FakeFhir()
    busy = httpx.Response(status, headers={"Retry-After": "2"})
    fake.planned = [busy, busy]
    target, sleeps = make_target(fake)

    result = target.load(request(lab_rows(3)))

    assert sleeps == [2.0, 2.0]
    assert result.rows_inserted == 3


def test_retry_after_as_an_http_date_and_the_cap() -> None:
    fake = FakeFhir()
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    fake.planned = [
        httpx.Response(503, headers={"Retry-After": soon}),
        httpx.Response(429, headers={"Retry-After": "3600"}),
    ]
    target, sleeps = make_target(fake, max_retry_after=5.0)

    target.load(request(lab_rows(1)))

    assert 1.0 <= sleeps[0] <= 3.0
    assert sleeps[1] == 5.0  # capped by max_retry_after


def test_connection_errors_and_502_504_back_off_then_succeed() -> None:
    fake = FakeFhir()
    fake.planned = [httpx.ConnectError("refused"), httpx.Response(502), httpx.Response(504)]
    target, sleeps = make_target(fake, max_attempts=4)

    result = target.load(request(lab_rows(2)))

    assert result.rows_inserted == 2
    assert len(sleeps) == 3
    assert all(0 < s <= 0.05 for s in sleeps)


def test_giving_up_after_max_attempts_is_a_transient_target_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeFhir()
    fake.planned = [httpx.Response(503, text=PHI)] * 3
    target, sleeps = make_target(fake, max_attempts=3)

    with caplog.at_level(logging.WARNING), pytest.raises(TransientTargetError) as caught:
        target.load(request(lab_rows(2)))

    assert "HTTP 503" in str(caught.value)
    assert "gave up after 3 attempts" in str(caught.value)
    assert len(sleeps) == 2
    assert PHI not in str(caught.value) + caplog.text


def test_500_is_not_retried() -> None:
    fake = FakeFhir()
    fake.planned = [httpx.Response(500, json=operation_outcome("exception", PHI))]
    target, sleeps = make_target(fake)

    with pytest.raises(TargetError, match="HTTP 500"):
        target.load(request(lab_rows(2)))
    assert sleeps == []


# -- tokens -----------------------------------------------------------------------------------


def auth(clock: Callable[[], float] = lambda: 0.0) -> ClientCredentials:
    return ClientCredentials(TOKEN_URL, "c id", SecretStr(SECRET), target="fhir", clock=clock)


def test_the_token_is_fetched_once_and_reused_until_it_expires() -> None:
    now = [0.0]
    fake = FakeFhir()
    credentials = auth(lambda: now[0])
    target, _ = make_target(fake, auth=credentials)

    target.load(request(lab_rows(25)))
    assert fake.tokens_issued == 1
    now[0] = 600.0  # expires_in 600: renewed a little early
    target.load(request(lab_rows(25), "L2"))
    assert fake.tokens_issued == 2

    token_call = next(c for c in fake.calls if c.url.path == "/token")
    assert token_call.headers["Authorization"] == "Basic YytpZDpzM2NyZXQtY2xpZW50LXNlY3JldA=="
    assert token_call.content == b"grant_type=client_credentials"
    bearer = [c.headers["Authorization"] for c in fake.calls if c.url.path != "/token"]
    assert set(bearer) == {"Bearer tok1", "Bearer tok2"}


def test_a_401_fetches_one_fresh_token_and_repeats_the_request() -> None:
    fake = FakeFhir()
    target, _ = make_target(fake, auth=auth())
    target.load(request(lab_rows(2)))
    fake.valid_tokens = {"nothing-valid-yet"}  # the server forgot tok1

    result = target.load(request(lab_rows(2), "L2"))

    assert result.rows_unchanged == 2
    assert fake.tokens_issued == 2


def test_a_401_with_a_fresh_token_is_an_auth_error() -> None:
    fake = FakeFhir()
    token = httpx.Response(200, json={"access_token": "t", "token_type": "bearer"})
    refused = httpx.Response(401, json=operation_outcome("login", PHI))
    fake.planned = [token, refused, token, refused]
    target, sleeps = make_target(fake, auth=auth())

    with pytest.raises(TargetError, match="HTTP 401") as caught:
        target.load(request(lab_rows(2)))

    assert caught.value.reason == "target_auth_failed"
    assert [c.url.path for c in fake.calls] == ["/token", "/fhir", "/token", "/fhir"]
    assert sleeps == []
    assert PHI not in str(caught.value)


def test_refused_client_credentials_name_the_oauth_error_never_the_secret() -> None:
    fake = FakeFhir()
    fake.planned = [
        httpx.Response(
            401, json={"error": "invalid_client", "error_description": f"bad secret {SECRET}"}
        )
    ]
    target, sleeps = make_target(fake, auth=auth())

    with pytest.raises(TargetError) as caught:
        target.load(request(lab_rows(2)))

    message = str(caught.value)
    assert "refused the client credentials (HTTP 401, invalid_client)" in message
    assert SECRET not in message
    assert "bad secret" not in message
    assert caught.value.reason == "target_auth_failed"
    assert sleeps == []
    assert SECRET not in repr(target) + repr(target.auth)


def test_a_busy_token_endpoint_is_retried() -> None:
    fake = FakeFhir()
    fake.planned = [httpx.Response(503, headers={"Retry-After": "1"})]
    target, sleeps = make_target(fake, auth=auth())

    assert target.load(request(lab_rows(1))).rows_inserted == 1
    assert sleeps == [1.0]


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://fhir.example/r4", True),
        ("http://127.0.0.1:9/fhir", True),
        ("http://localhost/fhir", True),
        ("http://[::1]:8080/fhir", True),
        ("http://fhir.example/r4", False),
        ("ftp://fhir.example/r4", False),
        ("not a url", False),
    ],
)
def test_https_only_except_loopback(url: str, ok: bool) -> None:
    if ok:
        assert check_fhir_url(url, "base_url", "fhir").host
    else:
        with pytest.raises(ConfigError, match="base_url"):
            check_fhir_url(url, "base_url", "fhir")


def test_full_snapshots_load_as_upserts_and_inactivate_nobody(
    caplog: pytest.LogCaptureFixture,
) -> None:
    target, _ = make_target(FakeFhir())
    snapshot = LoadRequest(
        tenant="t",
        natural_key=("record_id",),
        load_id="L",
        file_id="F",
        rows=lab_rows(1),
        full_snapshot=True,
    )
    result = target.load(snapshot)
    assert result.rows_inactivated == 0 and result.rows_confirmed == 1
    assert "not marked inactive" in caplog.text


def test_a_next_link_to_another_server_is_not_followed() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        link = [{"relation": "next", "url": "https://elsewhere.example/fhir/Observation"}]
        return httpx.Response(200, json={"resourceType": "Bundle", "link": link})

    target = FhirTarget(
        "fhir", BASE, LAB_RESULTS, IDENTITY, COLUMNS, transport=httpx.MockTransport(handler)
    )
    resources = [r for r in LAB_RESULTS.fhir_resources(lab_rows(1), IDENTITY) if r.row]
    with pytest.raises(TargetError, match="another server"):
        target.count_present(resources)


def test_check_writable_reads_metadata_and_posts_an_empty_transaction() -> None:
    fake = FakeFhir()
    target, _ = make_target(fake, auth=auth())

    assert isinstance(target.check_writable("acme_lab"), datetime)
    bodies = [json.loads(c.content) for c in fake.transactions()]
    assert bodies == [{"resourceType": "Bundle", "type": "transaction", "entry": []}]
    assert fake.state.store.resources == {}


def fhir_feed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **target: Any) -> Path:
    monkeypatch.setenv("FHIR_CLIENT_SECRET", SECRET)
    values: dict[str, Any] = {
        "name": "fhir",
        "kind": "fhir",
        "base_url": BASE,
        "token_url": TOKEN_URL,
        "client_id": "cid",
        "client_secret": "env:FHIR_CLIENT_SECRET",
        "identifier_system": IDENTITY.identifier_system,
        "columns": LAB_TARGET_COLUMNS,
    }
    values.update(target)
    values = {k: v for k, v in values.items() if v is not None}
    return write_feed(tmp_path, extra={"targets": [values]})


def test_the_registry_opens_a_fhir_target_from_the_feed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = load_feed("lab_results", fhir_feed(tmp_path, monkeypatch, bundle_size=7))
    target = open_target(loaded, loaded.config.targets[0])

    assert isinstance(target, FhirTarget)
    assert target.bundle_size == 7
    assert target.auth is not None
    assert SECRET not in repr(target) + repr(target.auth)
    target.close()


def test_a_schema_without_fhir_support_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = load_feed("lab_results", fhir_feed(tmp_path, monkeypatch))

    class NoFhir:
        name = "lab_results"
        natural_key = ("record_id",)

    monkeypatch.setattr(
        "batchbridge.connectors.targets.registry.get_schema", lambda _name: NoFhir()
    )
    with pytest.raises(ConfigError, match="cannot express its rows as FHIR"):
        open_fhir_target(loaded, loaded.config.targets[0])  # type: ignore[arg-type]


def test_half_configured_oauth_and_missing_columns_are_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = load_feed("lab_results", fhir_feed(tmp_path / "a", monkeypatch, client_id=None))
    with pytest.raises(ConfigError, match="go together"):
        open_target(loaded, loaded.config.targets[0])

    columns = [c for c in LAB_TARGET_COLUMNS if c != "loinc_code"]
    loaded = load_feed("lab_results", fhir_feed(tmp_path / "b", monkeypatch, columns=columns))
    with pytest.raises(ConfigError, match="loinc_code"):
        open_target(loaded, loaded.config.targets[0])

    loaded = load_feed(
        "lab_results", fhir_feed(tmp_path / "c", monkeypatch, base_url="http://fhir.example/r4")
    )
    with pytest.raises(ConfigError, match="https"):
        open_target(loaded, loaded.config.targets[0])
