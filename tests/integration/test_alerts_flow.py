"""Alerts end to end: a webhook receiver gets a failed file's and a late file's alert, PHI-free."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
import yaml

from batchbridge.demo.keys import write_secret_file
from batchbridge.demo.lab_data import generate_lab_rows
from batchbridge.demo.scenario import LabFeedScenario, lab_file_name
from batchbridge.flows.arrivals import check_arrivals
from tests.integration.flow_helpers import run_flow
from tests.support.webhook import WebhookReceiver

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]

FILE_DATE = date(2026, 11, 20)
CANARIES = ["Zebulonquix", "Orvillecanary"]
WEBHOOK_ENV = "BB_TEST_ALERT_WEBHOOK_URL"
# A Friday long after any ledger row these tests write: "today" holds no file.
LATE_NOW = "2030-01-04T12:00:00-06:00"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as started:
        yield started


def _edit_feed(scenario: LabFeedScenario, **changes: Any) -> None:
    data = yaml.safe_load(scenario.feed_path.read_text(encoding="utf-8"))
    data.update(changes)
    scenario.feed_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


@pytest.fixture
def alerting(
    scenario: LabFeedScenario, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> LabFeedScenario:
    """The scenario's feed with alerts routed to the receiver (URL in an env secret)."""
    monkeypatch.setenv(WEBHOOK_ENV, receiver.url)
    _edit_feed(
        scenario,
        alerts={
            "webhook": f"env:{WEBHOOK_ENV}",
            "arrival": {"expected_by": "01:30", "days": ["mon", "tue", "wed", "thu", "fri"]},
            "quarantine_rate_threshold": 0.05,
        },
    )
    return scenario


def _latest_artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert artifacts, f"no artifact {key}"
    return str(artifacts[0].data)


def _kinds(bodies: list[Any]) -> list[str]:
    return [body["text"].split("] ", 1)[1].split(" ", 1)[0] for body in bodies]


def test_failed_file_raises_a_phi_free_alert(
    alerting: LabFeedScenario, receiver: WebhookReceiver
) -> None:
    unsigned = lab_file_name(FILE_DATE, seq=1)
    noisy = lab_file_name(FILE_DATE, seq=2)
    rows = generate_lab_rows(
        20,
        seed=5,
        file_date=FILE_DATE,
        bad_rows={"bad_npi": 2, "unmapped_code": 2},
        canary_names=CANARIES,
    )
    alerting.drop_file(unsigned, rows, signer_fpr=None)
    alerting.drop_file(noisy, rows)

    report = run_flow(alerting)

    # Alerting changed nothing about the run: it failed, its report is whole.
    assert report.status == "failed"
    assert {f.name: f.outcome for f in report.files} == {unsigned: "failed", noisy: "reconciled"}
    bodies = receiver.wait_for(2)
    assert [list(body) for body in bodies] == [["text"], ["text"]]
    assert _kinds(bodies) == ["signature_or_decrypt_failed", "quarantine_rate"]
    failed, quarantine = (body["text"] for body in bodies)
    assert failed.startswith(
        f"[CRITICAL] signature_or_decrypt_failed · acme_lab/lab_results: "
        f"{unsigned} failed at decrypt: unsigned"
    )
    assert report.run_id in failed and str(report.files[0].file_id) in failed
    assert quarantine.startswith("[WARNING] quarantine_rate")
    assert "Quarantined 4 of 20 rows (20.0%" in quarantine
    assert "local_test_code:unmapped_code x2" in quarantine
    for text in (failed, quarantine):
        for canary in CANARIES:
            assert canary.lower() not in text.lower()
    # The run's alerts are also recorded on the flow run, with how each was delivered.
    artifact = _latest_artifact("lab-results-alerts")
    assert f"| critical | signature_or_decrypt_failed | {unsigned} failed" in artifact
    assert artifact.count("| webhook | yes |") == 2


def test_late_file_and_expiring_key_raise_alerts(
    alerting: LabFeedScenario, receiver: WebhookReceiver
) -> None:
    # Pin a second partner key that expires in ten days: by LATE_NOW it has expired.
    soon = alerting.partner.generate_key("Acme Lab Next", "next@acme-lab.example", expire="10d")
    secret = alerting.root / "secrets" / "partner_next.asc"
    write_secret_file(secret, alerting.partner.export_public(soon))
    data = yaml.safe_load(alerting.feed_path.read_text(encoding="utf-8"))
    pgp = {
        **data["pgp"],
        "partner_public_keys": [*data["pgp"]["partner_public_keys"], f"file:{secret}"],
    }
    _edit_feed(alerting, pgp=pgp)

    result = check_arrivals(feed=alerting.feed, config_dir=str(alerting.config_dir), now=LATE_NOW)

    assert result["late"] is True and result["files_seen"] == 0
    assert result["alerts"] == 2 and result["alerts_undelivered"] == 0
    bodies = receiver.wait_for(2)
    assert sorted(_kinds(bodies)) == ["file_late", "key_expiring"]
    late = next(b["text"] for b in bodies if "file_late" in b["text"])
    assert late.startswith(
        "[CRITICAL] file_late · acme_lab/lab_results: "
        "file late: expected by 01:30 CST on Fri 2030-01-04"
    )
    expiring = next(b["text"] for b in bodies if "key_expiring" in b["text"])
    assert "partner_key_2 has expired" in expiring and soon in expiring


def test_a_file_on_the_server_is_not_late(
    alerting: LabFeedScenario, receiver: WebhookReceiver
) -> None:
    alerting.drop_file(lab_file_name(FILE_DATE), generate_lab_rows(3, seed=2, file_date=FILE_DATE))

    result = check_arrivals(feed=alerting.feed, config_dir=str(alerting.config_dir), now=LATE_NOW)

    assert result["late"] is False and result["files_seen"] == 1
    assert result["alerts"] == 0 and receiver.requests == []
