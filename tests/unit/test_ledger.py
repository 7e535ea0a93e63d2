"""Ledger store: claims, reruns, quarantine replacement, encryption binding."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from batchbridge.ledger.crypto import (
    EncryptedRow,
    QuarantineDecryptError,
    RowCipher,
    row_associated_data,
)
from batchbridge.ledger.models import FileState, QuarantinedRow, QuarantineStatus
from batchbridge.ledger.store import LedgerStore, QuarantineEntry


@pytest.fixture
def store(tmp_path: Path) -> LedgerStore:
    return LedgerStore.from_url(f"sqlite:///{tmp_path / 'ledger.db'}")


def _claim(store: LedgerStore, run_id: str, *, force: bool = False) -> str | None:
    claim = store.claim_file(
        run_id=run_id, tenant="t", feed="f", name="a.pgp", size=10, force=force
    )
    return None if claim is None else claim.file_id


def test_done_file_is_skipped_unless_forced(store: LedgerStore) -> None:
    run = store.start_run(tenant="t", feed="f", flow_run_id=None)
    file_id = _claim(store, run)
    assert file_id is not None
    store.advance_file(file_id, FileState.RECONCILED)
    assert store.is_done(tenant="t", feed="f", name="a.pgp", size=10)
    assert _claim(store, run) is None
    assert _claim(store, run, force=True) == file_id


def test_failed_file_is_reclaimed_as_rerun(store: LedgerStore) -> None:
    run = store.start_run(tenant="t", feed="f", flow_run_id=None)
    file_id = _claim(store, run)
    assert file_id is not None
    store.fail_file(file_id, stage="decrypt", reason="signature_invalid", message="x")
    claim = store.claim_file(run_id=run, tenant="t", feed="f", name="a.pgp", size=10, force=False)
    assert claim is not None and claim.file_id == file_id and claim.is_rerun
    row = store.get_file(file_id)
    assert row.state == FileState.DISCOVERED and row.attempts == 2 and row.failure_reason is None


def test_quarantine_rerun_replaces_but_keeps_settled_rows(store: LedgerStore) -> None:
    cipher = RowCipher(SecretStr("k" * 32))
    run = store.start_run(tenant="t", feed="f", flow_run_id=None)
    file_id = _claim(store, run)
    assert file_id is not None

    def entries() -> list[QuarantineEntry]:
        return [
            QuarantineEntry(n, ["c:r"], cipher.encrypt({"c": "v"}, row_associated_data(file_id, n)))
            for n in (1, 2)
        ]

    assert (
        store.save_quarantine(tenant="t", feed="f", file_id=file_id, run_id=run, entries=entries())
        == 2
    )
    with store.session() as s:
        row = s.query(QuarantinedRow).filter_by(file_id=file_id, row_number=1).one()
        row.status = QuarantineStatus.RELEASED
    assert (
        store.save_quarantine(tenant="t", feed="f", file_id=file_id, run_id=run, entries=entries())
        == 2
    )
    assert store.count_quarantined(file_id, QuarantineStatus.RELEASED) == 1


def test_cipher_round_trip_and_binding() -> None:
    cipher = RowCipher(SecretStr("a-long-enough-secret"))
    first = cipher.encrypt({"name": "ZEBULON"}, row_associated_data("file", 1))
    assert b"ZEBULON" not in first.ciphertext
    assert cipher.decrypt(first, row_associated_data("file", 1)) == {"name": "ZEBULON"}
    with pytest.raises(QuarantineDecryptError):
        cipher.decrypt(first, row_associated_data("file", 2))
    other = RowCipher(SecretStr("another-long-secret"))
    with pytest.raises(QuarantineDecryptError, match="key"):
        other.decrypt(first, row_associated_data("file", 1))
    tampered = EncryptedRow(first.key_id, first.nonce, first.ciphertext[:-1] + b"\x00")
    with pytest.raises(QuarantineDecryptError):
        cipher.decrypt(tampered, row_associated_data("file", 1))


def test_migrations_match_models(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from batchbridge.ledger.models import Base

    store = LedgerStore.from_url(f"sqlite:///{tmp_path / 'm.db'}")
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_packaged_revisions_match_alembics_own_view() -> None:
    from alembic.script import ScriptDirectory

    from batchbridge.ledger.migrate import alembic_config
    from batchbridge.ledger.schema_revisions import head_revision, known_revisions

    scripts = ScriptDirectory.from_config(alembic_config())
    assert head_revision() == scripts.get_current_head()
    assert known_revisions() == {s.revision: s.down_revision for s in scripts.walk_revisions()}
