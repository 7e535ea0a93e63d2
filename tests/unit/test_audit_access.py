"""Audit hash chain, steward directory and roles, quarantine key ring."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import delete, select, update

from batchbridge.config.stewards import (
    Role,
    StewardDirectory,
    current_actor,
    is_allowed,
    load_directory,
)
from batchbridge.errors import AccessDeniedError, ConfigError
from batchbridge.ledger.audit import append_event, verify_chain
from batchbridge.ledger.crypto import (
    QuarantineDecryptError,
    QuarantineKeyring,
    RowCipher,
    row_associated_data,
)
from batchbridge.ledger.models import AuditEvent
from batchbridge.ledger.store import LedgerStore


@pytest.fixture
def store(tmp_path: Path) -> LedgerStore:
    return LedgerStore.from_url(f"sqlite:///{tmp_path / 'ledger.db'}")


def _append(store: LedgerStore, n: int) -> None:
    for i in range(n):
        with store.session() as s:
            append_event(
                s,
                actor="dana@example.org",
                action="reveal",
                tenant="acme_lab",
                object_type="quarantined_row",
                object_ids=[i],
                reason="checking the DOB",
                details={"columns": ["patient_dob"]},
            )


def test_intact_chain_verifies(store: LedgerStore) -> None:
    _append(store, 4)
    with store.session() as s:
        report = verify_chain(s)
    assert report.ok and report.events == 4


def test_empty_log_verifies(store: LedgerStore) -> None:
    with store.session() as s:
        assert verify_chain(s).ok


def test_edited_event_is_detected(store: LedgerStore) -> None:
    _append(store, 3)
    with store.session() as s:
        s.execute(update(AuditEvent).where(AuditEvent.id == 2).values(actor="someone-else"))
    with store.session() as s:
        report = verify_chain(s)
    assert not report.ok and any("event 2" in p and "edited" in p for p in report.problems)


def test_deleted_event_is_detected(store: LedgerStore) -> None:
    _append(store, 3)
    with store.session() as s:
        s.execute(delete(AuditEvent).where(AuditEvent.id == 2))
    with store.session() as s:
        report = verify_chain(s)
    assert any("event 3" in p for p in report.problems)


def test_deleted_tail_is_detected(store: LedgerStore) -> None:
    _append(store, 3)
    with store.session() as s:
        s.execute(delete(AuditEvent).where(AuditEvent.id == 3))
    with store.session() as s:
        report = verify_chain(s)
    assert any("head" in p for p in report.problems)


def test_inserted_event_is_detected(store: LedgerStore) -> None:
    _append(store, 2)
    with store.session() as s:
        first = s.scalars(select(AuditEvent).order_by(AuditEvent.id)).first()
        assert first is not None
        s.add(
            AuditEvent(
                at=first.at,
                actor="intruder",
                action="reveal",
                tenant="acme_lab",
                object_type="quarantined_row",
                object_ids=["9"],
                reason=None,
                details=None,
                prev_hash=first.hash,
                hash=first.hash,
            )
        )
    with store.session() as s:
        assert not verify_chain(s).ok


def test_directory_roles(tmp_path: Path) -> None:
    path = tmp_path / "stewards.yaml"
    path.write_text(
        "stewards:\n  dana@x.org:\n    acme_lab: steward\n  omar@x.org:\n    acme_lab: viewer\n",
        encoding="utf-8",
    )
    directory = load_directory(path)
    assert directory.role("dana@x.org", "acme_lab") == Role.STEWARD
    assert is_allowed(directory, "dana@x.org", "acme_lab", "reveal")
    assert not is_allowed(directory, "omar@x.org", "acme_lab", "reveal")
    assert is_allowed(directory, "omar@x.org", "acme_lab", "list")
    assert not is_allowed(directory, "dana@x.org", "globex", "list")
    assert not is_allowed(directory, "dana@x.org", "acme_lab", "rotate_keys")
    assert directory.tenants("dana@x.org") == ["acme_lab"]


def test_directory_rejects_unknown_roles(tmp_path: Path) -> None:
    path = tmp_path / "stewards.yaml"
    path.write_text("stewards:\n  dana@x.org:\n    acme_lab: superuser\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"stewards\.yaml"):
        load_directory(path)


def test_missing_directory_means_nobody(tmp_path: Path) -> None:
    assert load_directory(tmp_path / "none.yaml") == StewardDirectory()


def test_shipped_directory_loads() -> None:
    shipped = Path(__file__).resolve().parents[2] / "deployments" / "stewards.yaml"
    assert load_directory(shipped).stewards


def test_shared_accounts_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHBRIDGE_ACTOR", "root")
    with pytest.raises(AccessDeniedError, match="shared account"):
        current_actor()
    monkeypatch.setenv("BATCHBRIDGE_ACTOR", "dana@x.org")
    assert current_actor() == "dana@x.org"


def test_keyring_reads_old_rows_and_writes_new() -> None:
    old = RowCipher(SecretStr("the-old-quarantine-key"))
    new = RowCipher(SecretStr("the-new-quarantine-key"))
    aad = row_associated_data("file", 3)
    before = old.encrypt({"c": "v"}, aad)
    ring = QuarantineKeyring(new, [old])
    assert ring.decrypt(before, aad) == {"c": "v"}
    after = ring.encrypt({"c": "v"}, aad)
    assert after.key_id == new.key_id != before.key_id
    with pytest.raises(QuarantineDecryptError, match="quarantine_previous_keys"):
        QuarantineKeyring(new).decrypt(before, aad)
