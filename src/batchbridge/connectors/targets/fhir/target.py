"""FHIR R4 target: rows as resources in transaction Bundles, idempotent by identifier.

How a load goes:
- The feed's schema (`SupportsFhir`, handed in by the target registry) turns the rows
  (only the target's `columns`) into one resource per row plus supporting resources
  (Patient stubs).
- Rows go in `transaction` Bundles of `bundle_size`. Each Bundle also carries the
  supporting resources its rows refer to, as conditional creates (`POST` with
  `ifNoneExist: identifier=<system>|<value>`); each row is a conditional update
  (`PUT <Type>?identifier=<system>|<value>`). Sending a Bundle again (a rerun, or a
  retry after a timeout whose answer was lost) therefore never duplicates anything.
- Before each Bundle, rows the server already holds as they are are found by a search
  (unchanged.py, `compare_before_write`) and not sent: a rerun writes no new versions.
- Counts come from the transaction-response: `201` inserted; `200` updated, or
  unchanged when the entry's outcome carries HAPI's storage response code
  `SUCCESSFUL_UPDATE_NO_CHANGE`; rows found unchanged before sending count unchanged.
- A transaction is atomic, so one invalid row fails its Bundle with a 4xx. The Bundle
  is then bisected until the refused rows stand alone; each becomes a RowRejection
  `http_<status>:<issue code>` (never the diagnostics: servers quote values there).
- After the load, the accepted rows' identifiers are searched for (`_elements=identifier`)
  and counted: `rows_confirmed`.
- Every resource written carries the tenant tag (`meta.tag`, snapshot.TENANT_TAG_SYSTEM).
  A full snapshot then marks the tenant's resources under our identifier system that the
  file lacks `active: false` (snapshot.py: paged search, read, conditional PUT on the
  version; never a delete): `rows_inactivated`.
- Retries (the connectors' retry layer) only on connection errors, timeouts, 429, 502,
  503 and 504, waiting what Retry-After asks (capped) or backing off; never on other
  statuses.
- OAuth2 client credentials (auth.py, through authlib): a bearer token cached until
  shortly before it expires and fetched again once when the server answers 401.
- The health probe (probe.py) reads /metadata and runs a transaction holding one
  count-only search: nothing is written.

Errors name the target, the step, status codes, counts and row numbers; never a value,
a response body, the token or the client secret.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import polars as pl
from pydantic import SecretStr

from batchbridge.config import FhirTargetConfig
from batchbridge.connectors.lifecycle import ClosedOnExit
from batchbridge.connectors.retry import RetryPolicy, call_with_retries
from batchbridge.connectors.secrets import resolve_secret
from batchbridge.connectors.targets.base import LoadRequest, LoadResult
from batchbridge.connectors.targets.fhir.auth import ClientCredentials
from batchbridge.connectors.targets.fhir.bundle import (
    BundlePlan,
    Outcome,
    Refused,
    RowUnit,
    Tally,
    plan_bundles,
    read_outcomes,
    send_bisecting,
    transaction_entries,
)
from batchbridge.connectors.targets.fhir.confirm import count_present
from batchbridge.connectors.targets.fhir.probe import probe_server
from batchbridge.connectors.targets.fhir.snapshot import (
    inactivate_absent,
    plan_snapshot,
    with_tenant_tag,
)
from batchbridge.connectors.targets.fhir.unchanged import find_unchanged
from batchbridge.connectors.targets.fhir.wire import (
    FHIR_JSON,
    RETRY_STATUSES,
    TransientHttpError,
    check_fhir_url,
    issue_code,
    json_or_none,
)
from batchbridge.connectors.targets.rows import check_load_request
from batchbridge.connectors.webhook import parse_retry_after
from batchbridge.errors import ConfigError, TargetError, TransientTargetError
from batchbridge.validations.base import ROW_COLUMN, FhirIdentity, FhirResource, SupportsFhir

logger = logging.getLogger(__name__)

# A transaction refused for its content: some entry is invalid, so bisecting finds it.
# Other 4xx (401, 403, 404, 405, 413, 415…) are about the request, not a row.
_ROW_STATUSES = frozenset({400, 409, 412, 422})
_RESERVED = frozenset({ROW_COLUMN})


class FhirTarget(ClosedOnExit):
    """Loads rows into a FHIR R4 server as resources, idempotently on their identifiers.

    See the module docstring for the protocol. `transport` (e.g. httpx.MockTransport)
    and `sleep` are for tests. The target is safe to share between threads.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        schema: SupportsFhir,
        identity: FhirIdentity,
        columns: Sequence[str],
        *,
        auth: ClientCredentials | None = None,
        bundle_size: int = 200,
        compare_before_write: bool = True,
        max_attempts: int = 5,
        max_retry_after: float = 60.0,
        timeout_seconds: float = 30.0,
        retry_initial_wait: float = 0.5,
        retry_max_wait: float = 10.0,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.base_url = str(check_fhir_url(base_url, "base_url", name)).rstrip("/")
        self.schema = schema
        self.identity = identity
        self.columns = tuple(dict.fromkeys(columns))
        reserved = sorted(_RESERVED.intersection(self.columns))
        if reserved:
            raise ConfigError(f"target {name}: columns {reserved} are reserved")
        if max_attempts < 1 or bundle_size < 1:
            raise ConfigError(f"target {name}: max_attempts and bundle_size must be at least 1")
        self.auth = auth
        self.bundle_size = bundle_size
        self.compare_before_write = compare_before_write
        self.retry_policy = RetryPolicy(
            max_attempts=max_attempts,
            initial_wait=retry_initial_wait,
            max_wait=retry_max_wait,
            max_retry_after=max_retry_after,
        )
        self._sleep = sleep
        self._client = httpx.Client(
            timeout=timeout_seconds,
            verify=verify,
            transport=transport,
            follow_redirects=False,
            headers={"Accept": FHIR_JSON, "User-Agent": "batchbridge"},
        )

    def __repr__(self) -> str:
        return f"FhirTarget(name={self.name!r}, host={httpx.URL(self.base_url).host!r})"

    def close(self) -> None:
        """Release the HTTP connection pool."""
        if self.auth is not None:
            self.auth.close()
        self._client.close()

    @property
    def max_attempts(self) -> int:
        return self.retry_policy.max_attempts

    # -- public API -------------------------------------------------------------------------

    def load(self, request: LoadRequest) -> LoadResult:
        """Send `request.rows` as conditional updates in transaction Bundles; count and confirm."""
        checked = check_load_request(self.name, request, self.columns, _RESERVED)
        frame = checked.frame
        plan = plan_bundles(
            self.name,
            (
                with_tenant_tag(item, request.tenant)
                for item in self.schema.fhir_resources(frame, self.identity)
            ),
            frame.get_column(ROW_COLUMN).to_list(),
        )
        units = plan.units
        snapshot = None
        if request.full_snapshot:
            # Checked before anything is sent: a load that cannot be a snapshot writes nothing.
            resources = [unit.resource for unit in units]
            snapshot = plan_snapshot(
                self.name,
                request,
                keys=checked.keys,
                frame=frame,
                resources=resources,
                shared_system=self.identity.patient_identifier_system,
            )
        tally = Tally()
        orphans = plan.orphans  # supporting resources no row refers to: with the first send
        for number, start in enumerate(range(0, len(units), self.bundle_size), start=1):
            chunk = units[start : start + self.bundle_size]
            if self.compare_before_write:
                same = find_unchanged(
                    plan, chunk, call=self._call, base_url=self.base_url, target=self.name
                )
                tally.unchanged += len(same)
                chunk = [unit for unit in chunk if unit.row not in same]
            if chunk:
                send = functools.partial(self._transaction, plan, orphans=orphans, bundle=number)
                send_bisecting(chunk, send, tally, target=self.name, bundle=number)
                orphans = ()
        if orphans:
            try:
                self._transaction(plan, [], orphans, bundle=1)
            except Refused as refusal:
                raise TargetError(f"target {self.name}: supporting resources refused") from refusal
        refused = {rejection.row for rejection in tally.rejections}
        confirmed = self.count_present([u.resource for u in units if u.row not in refused])
        inactivated = 0
        if snapshot is not None:
            inactivated = inactivate_absent(
                snapshot,
                refused_rows=refused,
                call=self._call,
                base_url=self.base_url,
                target=self.name,
            )
        return LoadResult(
            target=self.name,
            load_id=request.load_id,
            rows_inserted=tally.inserted,
            rows_updated=tally.updated,
            rows_unchanged=tally.unchanged,
            rows_rejected=len(tally.rejections),
            rows_confirmed=confirmed,
            rows_inactivated=inactivated,
            rejections=tuple(sorted(tally.rejections, key=lambda r: r.row)),
        )

    def count_present(self, resources: Sequence[FhirResource]) -> int:
        """How many of `resources` the server holds, found by their identifiers."""
        return count_present(resources, call=self._call, base_url=self.base_url, target=self.name)

    def check_writable(self, tenant: str) -> datetime:
        """Prove the server speaks FHIR R4 and runs a transaction for us; write nothing.

        See probe.py: GET /metadata, then a transaction holding one count-only search.
        """
        checked_at = datetime.now(UTC)
        probe_server(self._call, self.base_url, self.name)
        return checked_at

    def probe_health(self, tenant: str) -> str:
        """The health check's probe (`check_writable`), and what it did in words."""
        version = probe_server(self._call, self.base_url, self.name)
        token = " with a bearer token from the token endpoint" if self.auth is not None else ""
        return (
            f"read the FHIR {version} CapabilityStatement of {httpx.URL(self.base_url).host} "
            f"and ran a transaction holding one count-only search{token}; nothing written"
        )

    # -- HTTP -------------------------------------------------------------------------------

    def _transaction(
        self, plan: BundlePlan, units: Sequence[RowUnit], orphans: Sequence[str], *, bundle: int
    ) -> list[Outcome]:
        """POST one transaction; the outcome of each unit, or Refused for a row's fault."""
        entries, offset = transaction_entries(plan, units, orphans)
        body = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        content = json.dumps(body, separators=(",", ":")).encode()
        what = f"bundle {bundle} ({len(units)} rows)"
        response = self._call(what, "POST", self.base_url, content=content)
        status = response.status_code
        if status in _ROW_STATUSES:
            raise Refused(status, issue_code(response))
        if status == 413:
            raise TargetError(
                f"target {self.name}: {what}: HTTP 413, the bundle is too large; lower bundle_size"
            )
        if not 200 <= status < 300:
            raise TargetError(
                f"target {self.name}: {what}: HTTP {status} ({issue_code(response)}); not retried"
            )
        where = f"target {self.name}: {what}"
        return read_outcomes(json_or_none(response), len(entries), offset, where)

    def _call(
        self,
        what: str,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request, retried on transient failures only; other answers are returned."""
        return call_with_retries(
            lambda: self._attempt(
                what, method, url, content=content, params=params, extra=headers or {}
            ),
            policy=self.retry_policy,
            transient=TransientTargetError,
            log=logger,
            sleep=self._sleep,
        )

    def _attempt(
        self,
        what: str,
        method: str,
        url: str,
        *,
        content: bytes | None,
        params: Mapping[str, str] | None,
        extra: Mapping[str, str],
    ) -> httpx.Response:
        where = f"target {self.name}: {what}"
        headers = {"Content-Type": FHIR_JSON} if content is not None else {}
        headers.update(extra)
        for refreshed in (False, True):
            token = self.auth.token(self._client) if self.auth is not None else None
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            try:
                response = self._client.request(
                    method, url, content=content, params=params, headers=headers
                )
            except httpx.TransportError as exc:
                # The class names the problem; its text may quote the URL.
                raise TransientHttpError(f"{where}: {type(exc).__name__}") from None
            status = response.status_code
            if status == 401 and token is not None and self.auth is not None and not refreshed:
                self.auth.invalidate(token)  # expired or revoked early: one fresh token
                continue
            if status == 401:
                raise TargetError(
                    f"{where}: HTTP 401, the server refused "
                    + (
                        "the fresh bearer token" if token is not None else "an unauthenticated call"
                    ),
                    reason="target_auth_failed",
                )
            if status in RETRY_STATUSES:
                raise TransientHttpError(
                    f"{where}: HTTP {status}",
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                )
            return response
        raise AssertionError("unreachable")  # pragma: no cover


def build_fhir_target(
    config: FhirTargetConfig,
    schema: SupportsFhir,
    *,
    natural_key: Sequence[str],
    base_dir: Path,
) -> FhirTarget:
    """The FHIR target `config` describes, writing what `schema` makes of the rows.

    The schema is resolved by the caller (the target registry), so this package never
    looks schemas up itself. A schema that needs a column the target does not receive
    fails here, on no rows, not at night.
    """
    auth_fields = (config.token_url, config.client_id, config.client_secret)
    auth: ClientCredentials | None = None
    if any(value is not None for value in auth_fields):
        if config.token_url is None or config.client_id is None or config.client_secret is None:
            raise ConfigError(
                f"target {config.name}: token_url, client_id and client_secret go together"
            )
        auth = ClientCredentials(
            config.token_url,
            config.client_id,
            # A file written by `echo` ends in a newline that is no part of the secret.
            SecretStr(
                resolve_secret(config.client_secret, base_dir=base_dir)
                .get_secret_value()
                .rstrip("\r\n")
            ),
            target=config.name,
            scope=config.scope,
        )
    identity = FhirIdentity(
        identifier_system=config.identifier_system,
        patient_identifier_system=config.patient_identifier_system,
    )
    columns = dict.fromkeys([*natural_key, *config.columns, ROW_COLUMN])
    list(schema.fhir_resources(pl.DataFrame(schema=dict.fromkeys(columns, pl.String)), identity))
    return FhirTarget(
        name=config.name,
        base_url=config.base_url,
        schema=schema,
        identity=identity,
        columns=config.columns,
        auth=auth,
        bundle_size=config.bundle_size,
        compare_before_write=config.compare_before_write,
        max_attempts=config.max_attempts,
        max_retry_after=config.max_retry_after_seconds,
        timeout_seconds=config.timeout_seconds,
    )
