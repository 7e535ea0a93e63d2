"""The steward service's workbench queries: queue pages, fix preview, bulk selections, history."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from batchbridge.config.stewards import Role, StewardDirectory
from batchbridge.errors import AccessDeniedError, QuarantineRowNotFoundError, StewardError
from batchbridge.ledger.models import AuditEvent, QuarantinedRow, QuarantineEdit
from batchbridge.ledger.store import LedgerStore
from batchbridge.steward.release import release_rows
from batchbridge.steward.rule_words import RULE_WORDS, rule_words
from batchbridge.steward.service import StewardService
from batchbridge.validations.base import ValidationContext
from batchbridge.validations.schemas import lab_results, patient_roster
from tests.support.steward import LocalLabFeed
from tests.unit.steward_cli_helpers import CANARIES, DANA, EVE, FILE_DATE, KIM

OMAR = "omar.viewer@acme-health.example"
DIRECTORY = StewardDirectory(
    stewards={
        DANA: {"acme_lab": Role.STEWARD},
        OMAR: {"acme_lab": Role.VIEWER},
        KIM: {"acme_lab": Role.ADMIN},
        EVE: {"globex": Role.STEWARD},
    }
)


@pytest.fixture
def store(lab: LocalLabFeed) -> Iterator[LedgerStore]:
    ledger = LedgerStore.from_url(lab.settings.database_url)
    yield ledger
    ledger.engine.dispose()


def _as(store: LedgerStore, lab: LocalLabFeed, actor: str) -> StewardService:
    return StewardService(store, config_dir=lab.config_dir, directory=DIRECTORY, actor=actor)


@pytest.fixture
def dana(store: LedgerStore, lab: LocalLabFeed) -> StewardService:
    return _as(store, lab, DANA)


def _events(store: LedgerStore) -> list[AuditEvent]:
    with store.session() as s:
        return list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def _row_id(service: StewardService, reason: str) -> int:
    return service.queue(reason=reason).rows[0].id


def test_queue_pages_count_reasons_and_audit_each_look(
    dana: StewardService, store: LedgerStore
) -> None:
    whole = dana.queue()
    assert whole.total == 3 and len(whole.rows) == 3
    assert whole.reason_counts == {
        "local_test_code:unmapped_code": 2,
        "patient_last_name:required": 1,
    }
    first, second = dana.queue(limit=2), dana.queue(offset=2, limit=2)
    assert [r.id for r in first.rows + second.rows] == [r.id for r in whole.rows]
    assert (first.total, second.total, len(second.rows)) == (3, 3, 1)
    assert second.reason_counts == whole.reason_counts  # counts cover the whole selection
    assert dana.queue(reason="unmapped_code").total == 2
    assert dana.queue(reason="unmapped_code").reason_counts == {"local_test_code:unmapped_code": 2}
    assert dana.queue(status="released").total == 0
    assert dana.queue(older_than=timedelta(days=1)).total == 0
    assert dana.queue(newer_than=timedelta(days=1)).total == 3
    with pytest.raises(StewardError, match="a page holds"):
        dana.queue(limit=0)
    event = _events(store)[-1]
    assert event.action == "list" and event.actor == DANA
    assert event.details == {
        "filters": {"status": "quarantined", "newer_than_s": 86400, "offset": 0, "limit": 50},
        "matched": 3,
    }
    assert repr(whole).lower().count(CANARIES[0].lower()) == 0


def test_queue_is_the_persons_tenants_only_and_search_is_audited(
    dana: StewardService, store: LedgerStore, lab: LocalLabFeed
) -> None:
    eve = _as(store, lab, EVE)
    assert eve.queue().total == 0
    with pytest.raises(AccessDeniedError):
        eve.queue(tenant="acme_lab")
    row_id = _row_id(dana, "patient_last_name:required")
    record = dana.reveal(row_id, why="ticket 1: which record").values["record_id"]
    assert record is not None
    found = dana.queue(record_id=record, status=None)
    assert [r.id for r in found.rows] == [row_id]
    search = [e for e in _events(store) if e.action == "search"][-1]
    assert record not in str(search.details) and search.object_ids == [str(row_id)]
    assert eve.queue(record_id=record, status=None).total == 0
    assert dana.queue_choices().feeds == ["lab_results"]
    assert eve.queue_choices().feeds == []


def test_preview_passes_a_good_fix_and_names_the_rule_otherwise(
    dana: StewardService, store: LedgerStore, lab: LocalLabFeed
) -> None:
    row_id = _row_id(dana, "patient_last_name:required")
    with store.session() as s:
        nonce = s.get_one(QuarantinedRow, row_id).nonce
    before = len(_events(store))
    still = dana.preview_fix(row_id, {"patient_last_name": "  "})
    assert not still.passes and still.reasons == ["patient_last_name:required"]
    worse = dana.preview_fix(row_id, {"patient_last_name": "Okafor", "ordering_provider_npi": "1"})
    assert worse.reasons == ["ordering_provider_npi:npi_luhn"]
    good = dana.preview_fix(row_id, {"patient_last_name": "Okafor"})
    assert good.passes and good.changed == ["patient_last_name"]
    # Nothing saved, nothing audited (a preview reveals no value).
    with store.session() as s:
        assert s.get_one(QuarantinedRow, row_id).nonce == nonce
        assert list(s.scalars(select(QuarantineEdit))) == []
    assert len(_events(store)) == before
    with pytest.raises(StewardError, match="unknown column"):
        dana.preview_fix(row_id, {"surname": "x"})
    with pytest.raises(AccessDeniedError, match="viewer"):
        _as(store, lab, OMAR).preview_fix(row_id, {"patient_last_name": "Okafor"})
    with pytest.raises(QuarantineRowNotFoundError):
        _as(store, lab, EVE).preview_fix(row_id, {"patient_last_name": "Okafor"})
    assert _events(store)[-1].details == {"attempted": "fix"}


def test_preview_reads_todays_mapping_table(dana: StewardService, lab: LocalLabFeed) -> None:
    row_id = _row_id(dana, "unmapped_code")
    assert dana.preview_fix(row_id, {}).reasons == ["local_test_code:unmapped_code"]
    lab.add_mapping("ZZ-NOT-IN-MAP", "2345-7", "Glucose", False)
    assert dana.preview_fix(row_id, {}).passes


def test_fix_from_the_web_is_recorded_as_such(dana: StewardService, store: LedgerStore) -> None:
    row_id = _row_id(dana, "patient_last_name:required")
    assert dana.fix(row_id, {"patient_last_name": "Okafor"}, why="t-2", source="web") == [
        "patient_last_name"
    ]
    with store.session() as s:
        assert [e.source for e in s.scalars(select(QuarantineEdit))] == ["web"]
    assert dana.queue(status="fixed").total == 1


def test_bulk_selection_counts_and_bulk_discard_settles_at_once(
    dana: StewardService, store: LedgerStore, lab: LocalLabFeed
) -> None:
    chosen = dana.bulk_selection("release", feed="lab_results", reason="unmapped_code")
    assert chosen.total == 2 and chosen.not_ready == 0
    assert chosen.by_reason == {"local_test_code:unmapped_code": 2}
    assert list(chosen.by_file.values()) == [2]
    assert _events(store)[-1].details == {
        "filters": {"feed": "lab_results", "reason": "unmapped_code"},
        "matched": 2,
        "for": "release",
    }
    with pytest.raises(StewardError, match="needs a feed or a file"):
        dana.bulk_selection("release")
    with pytest.raises(StewardError, match="no such feed"):
        dana.bulk_selection("discard", feed="nope")
    with pytest.raises(AccessDeniedError):
        _as(store, lab, OMAR).bulk_selection("discard", feed="lab_results")
    with pytest.raises(StewardError, match="reason"):
        dana.bulk_discard(feed="lab_results", why=" ")
    discarded = dana.bulk_discard(feed="lab_results", reason="unmapped_code", why="test rows")
    assert discarded == chosen.ids
    event = _events(store)[-1]
    assert (event.action, event.reason, event.object_ids) == (
        "discard",
        "test rows",
        [str(i) for i in chosen.ids],
    )
    assert dana.queue(status="discarded").total == 2
    assert dana.bulk_discard(feed="lab_results", reason="unmapped_code", why="again") == []
    file_id = dana.queue().rows[0].file_id
    assert dana.file_balance(file_id).discarded == 2


def test_row_history_and_the_admin_audit_log(
    dana: StewardService, store: LedgerStore, lab: LocalLabFeed
) -> None:
    row_id = _row_id(dana, "patient_last_name:required")
    dana.reveal(row_id, why="ticket 7")
    dana.fix(row_id, {"patient_last_name": "Okafor"}, why="ticket 7: from the clinic")
    release_rows(dana, ids=[row_id], why="ticket 7")
    history = dana.row_history(row_id)
    assert [e.action for e in history] == ["release", "fix", "reveal"]
    assert history[1].reason == "ticket 7: from the clinic"
    assert all(e.actor == DANA for e in history)
    with pytest.raises(QuarantineRowNotFoundError):
        _as(store, lab, EVE).row_history(row_id)

    with pytest.raises(AccessDeniedError, match="admin"):
        dana.audit_events()
    kim = _as(store, lab, KIM)
    page = kim.audit_events(row_id=row_id)
    # EVE's refused look at the row is an acme_lab event too.
    assert [(e.action, e.actor) for e in page.entries][:4] == [
        ("access_denied", EVE),
        ("release", DANA),
        ("fix", DANA),
        ("reveal", DANA),
    ]
    assert {e.action for e in kim.audit_events(actor=DANA, action="fix").entries} == {"fix"}
    assert [e.action for e in kim.audit_events(actor=EVE).entries] == ["access_denied"]
    assert kim.audit_events(actor="nobody@example.org").total == 0
    assert kim.audit_events(since=datetime(2999, 1, 1, tzinfo=UTC)).total == 0
    look = _events(store)[-1]
    assert (look.action, look.object_type, look.actor) == ("report", "audit_log", KIM)
    assert kim.verify_audit_chain().ok
    with pytest.raises(AccessDeniedError):
        _as(store, lab, OMAR).verify_audit_chain()


def test_recent_runs_are_the_persons_tenants_only(
    dana: StewardService, store: LedgerStore, lab: LocalLabFeed
) -> None:
    runs = dana.recent_runs()
    assert len(runs) == 1 and runs[0].feed == "lab_results"
    assert runs[0].counts["rows_quarantined"] == 3
    assert _as(store, lab, EVE).recent_runs() == []


def test_every_rule_of_the_shipped_schemas_has_words(tmp_path: Path) -> None:
    ctx = ValidationContext(tenant="t", file_date=FILE_DATE, timezone="UTC")
    reasons = list(lab_results.reason_names(ctx))
    reasons += [
        f"{column}:{rule}"
        for column, rules in patient_roster._rules(ctx, []).items()
        for rule, _ in rules
    ]
    assert {r.partition(":")[2] for r in reasons} <= set(RULE_WORDS)
    assert rule_words("patient_sex:one_of") == "patient_sex must be M, F, O or U"
    assert rule_words("local_test_code:unmapped_code").startswith(
        "local_test_code is not in the feed's mapping table"
    )
    assert rule_words("x:brand_new") == "x fails the rule brand_new"
