"""FhirTarget logic over httpx.MockTransport: counting, bisecting, retries, Retry-After, tokens."""

from __future__ import annotations

import json
import logging
import re
import types
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
from batchbridge.connectors.targets.fhir.snapshot import TENANT_TAG_SYSTEM
from batchbridge.connectors.targets.fhir.wire import next_link
from batchbridge.connectors.targets.registry import open_fhir_target, open_target
from batchbridge.demo.scenario import LAB_TARGET_COLUMNS
from batchbridge.errors import ConfigError, TargetError, TransientTargetError
from batchbridge.validations.base import ROW_COLUMN, FhirIdentity
from batchbridge.validations.schemas.lab_results import LAB_RESULTS
from batchbridge.validations.schemas.patient_roster import SCHEMA as PATIENT_ROSTER
from tests.support.fhir_server import (
    FhirFailure,
    ServerState,
    operation_outcome,
    read_resource,
    run_transaction,
    search,
    update_by_id,
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
        # Hooks a test sets: run before each PUT by id (another writer), or on a read.
        self.before_put: Callable[[str, str], None] | None = None
        self.on_read: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.drop_tags = False  # a server that throws meta.tag away

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
                bundle = json.loads(req.content)
                if self.drop_tags:
                    for entry in bundle["entry"]:
                        entry["resource"].pop("meta", None)
                return httpx.Response(200, json=run_transaction(self.state, bundle))
            parts = req.url.path.removeprefix("/fhir/").split("/")
            if len(parts) == 2 and req.method == "GET":
                resource = read_resource(self.state, parts[0], parts[1])
                if self.on_read is not None:
                    resource = self.on_read(resource)
                return httpx.Response(200, json=resource, headers=etag(resource))
            if len(parts) == 2 and req.method == "PUT":
                if self.before_put is not None:
                    self.before_put(parts[0], parts[1])
                body = json.loads(req.content)
                if_match = req.headers.get("If-Match")
                status, stored = update_by_id(self.state, parts[0], parts[1], body, if_match)
                return httpx.Response(status, json=stored, headers=etag(stored))
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

    def puts(self) -> list[httpx.Request]:
        return [c for c in self.calls if c.method == "PUT"]


def etag(resource: dict[str, Any]) -> dict[str, str]:
    return {"ETag": f'W/"{resource["meta"]["versionId"]}"'}


def make_target(fake: FakeFhir, **kwargs: Any) -> tuple[FhirTarget, list[float]]:
    sleeps: list[float] = []
    options: dict[str, Any] = {
        "bundle_size": 10,
        # The transaction protocol alone; the search before each Bundle has tests of its own.
        "compare_before_write": False,
        "max_attempts": 3,
        "max_retry_after": 5.0,
        "transport": fake.transport(),
        "sleep": sleeps.append,
        "retry_initial_wait": 0.01,
        "retry_max_wait": 0.02,
    }
    options.update(kwargs)
    schema = options.pop("schema", LAB_RESULTS)
    identity = options.pop("identity", IDENTITY)
    columns = options.pop("columns", COLUMNS)
    target = FhirTarget("fhir", BASE, schema, identity, columns, **options)
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


def test_compared_first_a_rerun_sends_no_bundle_and_counts_every_row_unchanged() -> None:
    fake = FakeFhir()
    target, _ = make_target(fake, compare_before_write=True)
    rows = lab_rows(25)
    target.load(request(rows))
    sent = len(fake.transactions())

    again = target.load(request(rows, "L2"))

    assert (again.rows_inserted, again.rows_updated, again.rows_unchanged) == (0, 0, 25)
    assert again.rows_confirmed == 25
    assert len(fake.transactions()) == sent == 3


def test_compared_first_only_changed_rows_travel() -> None:
    fake = FakeFhir()
    target, _ = make_target(fake, compare_before_write=True)
    rows = lab_rows(12)
    target.load(request(rows))
    sent = len(fake.transactions())
    corrected = rows.with_columns(
        pl.when(pl.col(ROW_COLUMN) == 3)
        .then(pl.lit("C"))
        .otherwise(pl.col("result_status"))
        .alias("result_status")
    )

    result = target.load(request(corrected, "L2"))

    assert (result.rows_inserted, result.rows_updated, result.rows_unchanged) == (0, 1, 11)
    bundles = [json.loads(t.content) for t in fake.transactions()[sent:]]
    puts = [e for b in bundles for e in b["entry"] if e["request"]["method"] == "PUT"]
    assert len(puts) == 1


def test_compared_first_a_resource_without_our_tenant_tag_is_written_again() -> None:
    fake = FakeFhir()
    target, _ = make_target(fake, compare_before_write=True)
    rows = lab_rows(4)
    target.load(request(rows))
    for resource in fake.state.store.resources["Observation"].values():
        resource["meta"].pop("tag", None)

    result = target.load(request(rows, "L2"))

    assert result.rows_unchanged + result.rows_updated == 4
    assert all(r["meta"].get("tag") for r in fake.state.store.resources["Observation"].values())


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


def auth() -> ClientCredentials:
    return ClientCredentials(TOKEN_URL, "c id", SecretStr(SECRET), target="fhir")


def frozen_token_clock(monkeypatch: pytest.MonkeyPatch, start: float) -> list[float]:
    """The clock authlib's OAuth2Token reads expiry by, set by the test (`now[0]`)."""
    now = [start]
    clock = types.SimpleNamespace(time=lambda: now[0])
    monkeypatch.setattr("authlib.oauth2.rfc6749.wrappers.time", clock)
    monkeypatch.setattr("batchbridge.connectors.targets.fhir.auth.time", clock)
    return now


def test_the_token_is_fetched_once_and_reused_until_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = frozen_token_clock(monkeypatch, 1_000_000.0)
    fake = FakeFhir()
    credentials = auth()
    target, _ = make_target(fake, auth=credentials)

    target.load(request(lab_rows(25)))
    assert fake.tokens_issued == 1
    now[0] += 600.0  # expires_in 600: renewed a little early
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


def test_a_token_is_renewed_shortly_before_it_expires_not_earlier(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = frozen_token_clock(monkeypatch, 5_000.0)
    fake = FakeFhir()
    credentials = auth()

    with httpx.Client(transport=fake.transport()) as client:
        first = credentials.token(client)
        now[0] += 569  # expires_in 600, renewed 30 s early
        assert credentials.token(client) == first
        now[0] += 2
        assert credentials.token(client) != first
        fake.planned = [httpx.Response(200, json={"access_token": "t9", "token_type": "Bearer"})]
        now[0] += 600
        assert credentials.token(client) == "t9"
        now[0] += 269  # no expires_in: trusted for 300 s
        assert credentials.token(client) == "t9"
        now[0] += 2
        assert credentials.token(client) != "t9"
    assert credentials.fetches == fake.tokens_issued + 1 == 4


def test_the_scope_is_asked_for_and_an_oauth_error_keeps_only_its_code() -> None:
    fake = FakeFhir()
    fake.planned = [
        httpx.Response(
            200, json={"error": "invalid_scope", "error_description": f"no {PHI} for {SECRET}"}
        )
    ]
    credentials = ClientCredentials(
        TOKEN_URL, "cid", SecretStr(SECRET), target="fhir", scope="system/Patient.write"
    )
    with httpx.Client(transport=fake.transport()) as client, pytest.raises(TargetError) as caught:
        credentials.token(client)

    assert str(caught.value).endswith("refused the client credentials (HTTP 200, invalid_scope)")
    assert caught.value.reason == "target_auth_failed"
    assert fake.calls[0].content == b"grant_type=client_credentials&scope=system%2FPatient.write"
    assert fake.calls[0].headers["Accept"] == "application/json"


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="<html>welcome</html>"),
        httpx.Response(200, json={"access_token": "t", "token_type": "mac"}),
        httpx.Response(200, json={"token_type": "Bearer"}),
    ],
)
def test_an_answer_without_a_bearer_token_is_refused(answer: httpx.Response) -> None:
    fake = FakeFhir()
    fake.planned = [answer]
    with httpx.Client(transport=fake.transport()) as client, pytest.raises(TargetError) as caught:
        auth().token(client)
    assert "holds no bearer access_token" in str(caught.value)


def test_a_token_endpoint_that_cannot_be_reached_is_transient() -> None:
    fake = FakeFhir()
    fake.planned = [httpx.ConnectError(f"refused {TOKEN_URL}")]
    with (
        httpx.Client(transport=fake.transport()) as client,
        pytest.raises(TransientTargetError) as caught,
    ):
        auth().token(client)
    assert str(caught.value) == "target fhir: token endpoint at 127.0.0.1: ConnectError"


def test_confirmation_follows_next_links_with_their_query() -> None:
    seen: list[str] = []
    resources = [r for r in LAB_RESULTS.fhir_resources(lab_rows(2), IDENTITY) if r.row]

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(str(req.url))
        page = req.url.params.get("page", "1")
        value = f"R000{page}"
        body: dict[str, Any] = {
            "resourceType": "Bundle",
            "entry": [{"resource": {"identifier": [{"system": IDENTITY.identifier_system,
                                                    "value": value}]}}],
        }  # fmt: skip
        if page == "1":
            body["link"] = [{"relation": "next", "url": f"{BASE}?_getpages=abc&page=2"}]
        return httpx.Response(200, json=body)

    target = FhirTarget(
        "fhir", BASE, LAB_RESULTS, IDENTITY, COLUMNS, transport=httpx.MockTransport(handler)
    )
    assert target.count_present(resources) == 2
    assert seen[1] == f"{BASE}?_getpages=abc&page=2"


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


# -- full snapshots ---------------------------------------------------------------------------

ROSTER_IDENTITY = FhirIdentity(
    "urn:batchbridge:riverside:patient_roster", IDENTITY.patient_identifier_system
)
ROSTER_COLUMNS = ["patient_key", "given", "family", "gender"]


def roster_rows(*members: str, family: str = "Doe") -> pl.DataFrame:
    """Transformed roster rows, one per member id."""
    return pl.DataFrame(
        {
            "member_id": list(members),
            "patient_key": [f"pk-{m}" for m in members],
            "given": ["Jo"] * len(members),
            "family": [family] * len(members),
            "gender": ["female"] * len(members),
            ROW_COLUMN: list(range(1, len(members) + 1)),
        },
        schema_overrides={ROW_COLUMN: pl.UInt32},
    )


def roster_target(fake: FakeFhir, identity: FhirIdentity = ROSTER_IDENTITY) -> FhirTarget:
    target, _ = make_target(fake, schema=PATIENT_ROSTER, identity=identity, columns=ROSTER_COLUMNS)
    return target


def full(
    rows: pl.DataFrame, *, tenant: str = "riverside", kept: list[str] | None = None
) -> LoadRequest:
    return LoadRequest(
        tenant=tenant,
        natural_key=("member_id",),
        load_id="L",
        file_id="F",
        rows=rows,
        full_snapshot=True,
        kept_keys=pl.DataFrame({"member_id": kept or []}, schema={"member_id": pl.String}),
    )


def patients(fake: FakeFhir) -> dict[str, dict[str, Any]]:
    """Patients by the first identifier value."""
    return {
        str(p["identifier"][0]["value"]): p
        for p in fake.state.store.resources.get("Patient", {}).values()
    }


def test_every_resource_written_carries_the_tenant_tag() -> None:
    fake = FakeFhir()
    target, _ = make_target(fake)
    target.load(request(lab_rows(2)))

    tag = {"system": TENANT_TAG_SYSTEM, "code": "acme_lab"}
    for kind in ("Observation", "Patient"):
        assert all(r["meta"]["tag"] == [tag] for r in fake.state.store.resources[kind].values())


def test_a_full_roster_marks_absent_patients_inactive_and_keeps_everything_else() -> None:
    fake = FakeFhir()
    target = roster_target(fake)
    first = target.load(full(roster_rows("M1", "M2", "M3", "M4", "M5")))
    assert (first.rows_inserted, first.rows_inactivated) == (5, 0)
    # Something else on the server added to M5's record: it must survive the inactivation.
    m5 = fake.state.store.find("Patient", ROSTER_IDENTITY.identifier_system, "M5")[0]
    stored = fake.state.store.resources["Patient"][m5]
    fake.state.store.put("Patient", m5, {**stored, "telecom": [{"system": "phone", "value": "1"}]})

    # M4 was quarantined in this file: still a member. M5 left.
    second = target.load(full(roster_rows("M1", "M2", "M3"), kept=[" M4 "]))

    assert (second.rows_unchanged, second.rows_inactivated, second.rows_confirmed) == (3, 1, 3)
    after = patients(fake)
    assert {m for m, p in after.items() if p["active"] is False} == {"M5"}
    assert after["M5"]["telecom"] == [{"system": "phone", "value": "1"}]
    assert after["M5"]["name"] == [{"family": "Doe", "given": ["Jo"]}]
    assert len(after) == 5  # nobody deleted
    (put,) = fake.puts()
    assert put.url.path == f"/fhir/Patient/{m5}"
    assert put.headers["If-Match"] == 'W/"2"'
    searches = [c for c in fake.calls if c.method == "GET" and "_tag" in c.url.params]
    assert searches and all(
        (c.url.params["identifier"], c.url.params["_tag"], c.url.params["_elements"])
        == (f"{ROSTER_IDENTITY.identifier_system}|", f"{TENANT_TAG_SYSTEM}|riverside",
            "identifier,active")
        for c in searches
    )  # fmt: skip


def test_a_returning_member_is_active_again_and_a_rerun_changes_nothing() -> None:
    fake = FakeFhir()
    target = roster_target(fake)
    target.load(full(roster_rows("M1", "M2", "M3")))
    assert target.load(full(roster_rows("M1", "M2"))).rows_inactivated == 1

    back = target.load(full(roster_rows("M1", "M2", "M3")))
    again = target.load(full(roster_rows("M1", "M2", "M3")))

    assert (back.rows_updated, back.rows_unchanged, back.rows_inactivated) == (1, 2, 0)
    assert (again.rows_updated, again.rows_unchanged, again.rows_inactivated) == (0, 3, 0)
    assert all(p["active"] is True for p in patients(fake).values())


def test_search_pages_are_followed_before_anything_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("batchbridge.connectors.targets.fhir.snapshot.SNAPSHOT_PAGE", 2)
    fake = FakeFhir()
    target = roster_target(fake)
    members = [f"M{i}" for i in range(1, 8)]
    target.load(full(roster_rows(*members)))
    fake.calls.clear()

    result = target.load(full(roster_rows("M2", "M6")))

    assert result.rows_inactivated == 5
    pages = [c for c in fake.calls if c.method == "GET" and "_tag" in c.url.params]
    assert len(pages) == 4  # 7 patients, 2 a page; relative next links resolved
    assert [c.url.params.get("_offset") for c in pages] == [None, "2", "4", "6"]
    last_page = fake.calls.index(pages[-1])
    assert all(fake.calls.index(put) > last_page for put in fake.puts())
    assert {m for m, p in patients(fake).items() if not p["active"]} == {
        "M1", "M3", "M4", "M5", "M7"
    }  # fmt: skip


def test_another_tenants_patients_are_never_touched() -> None:
    fake = FakeFhir()
    target = roster_target(fake)
    # Another tenant misconfigured with the same identifier system, on the same server,
    # and a Patient under that system that no feed of ours wrote (no tenant tag).
    target.load(full(roster_rows("B1", "B2"), tenant="bayside"))
    fake.state.store.put(
        "Patient",
        "foreign",
        {
            "resourceType": "Patient",
            "identifier": [{"system": ROSTER_IDENTITY.identifier_system, "value": "X1"}],
            "active": True,
        },
    )
    target.load(full(roster_rows("M1", "M2", "M3")))

    result = target.load(full(roster_rows("M1")))

    assert result.rows_inactivated == 2
    assert {m: p["active"] for m, p in patients(fake).items()} == {
        "B1": True, "B2": True, "X1": True, "M1": True, "M2": False, "M3": False,
    }  # fmt: skip


def test_a_version_conflict_reads_the_patient_again_and_keeps_the_other_change() -> None:
    fake = FakeFhir()
    target = roster_target(fake)
    target.load(full(roster_rows("M1", "M2")))
    rid = fake.state.store.find("Patient", ROSTER_IDENTITY.identifier_system, "M2")[0]
    raced: list[str] = []

    def another_writer(kind: str, put_rid: str) -> None:
        if not raced:
            raced.append(put_rid)
            current = fake.state.store.resources[kind][put_rid]
            fake.state.store.put(kind, put_rid, {**current, "gender": "other"})

    fake.before_put = another_writer
    result = target.load(full(roster_rows("M1")))

    assert result.rows_inactivated == 1 and raced == [rid]
    assert [c.headers["If-Match"] for c in fake.puts()] == ['W/"1"', 'W/"2"']
    m2 = patients(fake)["M2"]
    assert (m2["active"], m2["gender"]) == (False, "other")


def test_a_server_that_drops_tags_fails_the_snapshot_and_marks_nobody() -> None:
    fake = FakeFhir()
    fake.drop_tags = True
    target = roster_target(fake)

    with pytest.raises(TargetError, match=r"found 0 of the 2 Patient .*nobody was marked"):
        target.load(full(roster_rows("M1", "M2")))
    assert fake.puts() == []


def test_a_subsetted_read_is_never_written_back() -> None:
    fake = FakeFhir()
    target = roster_target(fake)
    target.load(full(roster_rows("M1", "M2")))
    subsetted = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                 "code": "SUBSETTED"}  # fmt: skip

    def subset(resource: dict[str, Any]) -> dict[str, Any]:
        meta = resource["meta"]
        return {**resource, "meta": {**meta, "tag": [*meta["tag"], subsetted]}}

    fake.on_read = subset
    with pytest.raises(TargetError, match="SUBSETTED"):
        target.load(full(roster_rows("M1")))
    assert fake.puts() == []


def test_a_feed_that_cannot_be_a_fhir_snapshot_sends_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeFhir()
    target, _ = make_target(fake)
    lab = LoadRequest(
        tenant="t", natural_key=("record_id",), load_id="L", file_id="F", rows=lab_rows(2),
        full_snapshot=True,
    )  # fmt: skip
    with pytest.raises(TargetError, match="Observation has no `active` element"):
        target.load(lab)
    assert fake.calls == []

    result = roster_target(fake).load(full(roster_rows()))
    assert result.rows_inactivated == 0
    assert "without rows marks nobody inactive" in caplog.text

    shared = FhirIdentity(IDENTITY.patient_identifier_system, IDENTITY.patient_identifier_system)
    with pytest.raises(TargetError, match="identifier_system of its own"):
        roster_target(fake, shared).load(full(roster_rows("M1")))
    assert fake.calls == []


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("/fhir/Patient?_offset=2", "http://127.0.0.1:8080/fhir/Patient?_offset=2"),
        ("http://127.0.0.1:8080/fhir?_getpages=x", "http://127.0.0.1:8080/fhir?_getpages=x"),
        ("https://elsewhere.example/fhir?_getpages=x", None),
        ("http://127.0.0.1:9999/fhir?_getpages=x", None),
    ],
)
def test_next_links_are_resolved_and_kept_on_the_server(link: str, expected: str | None) -> None:
    bundle = {"link": [{"relation": "self", "url": "x"}, {"relation": "next", "url": link}]}
    if expected is None:
        with pytest.raises(TargetError, match="another server"):
            next_link(bundle, BASE, "fhir")
    else:
        assert next_link(bundle, BASE, "fhir") == expected
    assert next_link({"link": []}, BASE, "fhir") is None


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


def test_check_writable_reads_metadata_and_runs_a_transaction_that_writes_nothing() -> None:
    fake = FakeFhir()
    target, _ = make_target(fake, auth=auth())

    assert isinstance(target.check_writable("acme_lab"), datetime)
    bodies = [json.loads(c.content) for c in fake.transactions()]
    search = {"request": {"method": "GET", "url": "Patient?_summary=count"}}
    assert bodies == [{"resourceType": "Bundle", "type": "transaction", "entry": [search]}]
    assert fake.state.store.resources == {}
    assert target.probe_health("acme_lab") == (
        "read the FHIR 4.0.1 CapabilityStatement of 127.0.0.1 and ran a transaction holding "
        "one count-only search with a bearer token from the token endpoint; nothing written"
    )


@pytest.mark.parametrize(
    ("answers", "words"),
    [
        ([httpx.Response(200, json={"resourceType": "CapabilityStatement",
                                    "fhirVersion": "3.0.2"})], "without a FHIR R4"),
        ([None, httpx.Response(400, json=operation_outcome("invalid", PHI))],
         "answered HTTP 400 (invalid)"),
        ([None, httpx.Response(200, json={"type": "transaction-response", "entry": []})],
         "answered HTTP 200"),
    ],
)  # fmt: skip
def test_a_probe_the_server_fails_says_which_step(
    answers: list[httpx.Response | None], words: str
) -> None:
    fake = FakeFhir()
    metadata = {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}
    fake.planned = [a if a is not None else httpx.Response(200, json=metadata) for a in answers]
    target, _ = make_target(fake)
    with pytest.raises(TargetError, match=re.escape(words)) as caught:
        target.probe_health("acme_lab")
    assert PHI not in str(caught.value)


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
