"""PHI canaries: planted patient names never reach logs, reports, Prefect, the ledger or disk."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

import prefect.settings
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort, LogSort, TaskRunSort
from pydantic import BaseModel

from batchbridge.cli.app import main
from batchbridge.connectors.secrets import resolve_secret
from batchbridge.demo.lab_data import generate_lab_rows, render_lab_csv
from batchbridge.demo.scenario import LabFeedScenario, lab_file_name
from batchbridge.ledger.crypto import EncryptedRow, RowCipher, row_associated_data
from batchbridge.ledger.store import LedgerStore
from tests.integration.flow_helpers import target_rows

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]

CANARIES = ["Zebulonquix", "Orvillecanary"]
FILE_DATE = date(2026, 11, 20)
PAGE = 200


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and "gnupg" not in p.parts[-2]]


def _prefect_records() -> str:
    """Everything Prefect's API holds about the runs: flow runs, task runs, logs, artifacts."""
    parts: list[str] = []
    with get_client(sync_client=True) as client:
        readers: list[Callable[[int], Sequence[BaseModel]]] = [
            lambda offset: client.read_flow_runs(
                sort=FlowRunSort.START_TIME_ASC, limit=PAGE, offset=offset
            ),
            lambda offset: client.read_task_runs(
                sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=PAGE, offset=offset
            ),
            lambda offset: client.read_logs(sort=LogSort.TIMESTAMP_ASC, limit=PAGE, offset=offset),
            lambda offset: client.read_artifacts(
                sort=ArtifactSort.CREATED_DESC, limit=PAGE, offset=offset
            ),
        ]
        for read in readers:
            offset = 0
            while page := read(offset):
                parts += [record.model_dump_json() for record in page]
                offset += PAGE
    assert parts, "Prefect returned no records at all"
    return "\n".join(parts)


def _prefect_database_bytes() -> bytes:
    url = prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    path = Path(str(url).split("///", 1)[1])
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_canary_patients_never_leak(
    scenario: LabFeedScenario,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ledger_path = tmp_path / "ledger.db"
    monkeypatch.setenv("BATCHBRIDGE_DATABASE_URL", f"sqlite:///{ledger_path}")
    caplog.set_level(logging.DEBUG)
    rows = generate_lab_rows(
        80,
        seed=5,
        file_date=FILE_DATE,
        bad_rows={"bad_npi": 2, "missing_last_name": 1, "unmapped_code": 1},
        canary_names=CANARIES,
    )
    scenario.drop_file(lab_file_name(FILE_DATE, seq=1), rows)
    # A file that fails whole with canaries in the broken row itself.
    lines = render_lab_csv(rows).splitlines(keepends=True)
    ragged = lines[0] + f"R9,{CANARIES[0]},{CANARIES[1]}\n".encode() + b"".join(lines[1:])
    scenario.drop_file(lab_file_name(FILE_DATE, seq=2), ragged)

    exit_code = main(["run", scenario.feed, "--config-dir", str(scenario.config_dir)])
    json_code = main(
        ["run", scenario.feed, "--config-dir", str(scenario.config_dir), "--force", "--json"]
    )
    assert exit_code == json_code == 9  # the ragged file fails; the good one reconciles
    time.sleep(2)  # Prefect ships logs in batches: let the last batch land

    printed = capsys.readouterr()
    report = json.loads(printed.out[printed.out.index("{") :])
    outcomes = {f["name"]: f["outcome"] for f in report["files"]}
    assert sorted(outcomes.values()) == ["failed", "reconciled"]

    texts = {
        "stdout": printed.out,
        "stderr": printed.err,
        "logs": caplog.text,
        "prefect api": _prefect_records(),
        "warehouse": repr(target_rows(postgres_url)),
    }
    blobs = {
        "prefect database": _prefect_database_bytes(),
        **{str(p): p.read_bytes() for p in _files_under(tmp_path)},
    }
    for canary in CANARIES:
        for where, text in texts.items():
            assert canary.lower() not in text.lower(), f"canary leaked into {where}"
        for where, blob in blobs.items():
            assert canary.encode() not in blob, f"canary leaked into {where}"

    # The canaries were really there: a quarantined row decrypts to one of them.
    store = LedgerStore.from_url(f"sqlite:///{ledger_path}")
    good_file_id = next(f["file_id"] for f in report["files"] if f["outcome"] == "reconciled")
    cipher = RowCipher(
        resolve_secret("file:../secrets/quarantine_key", base_dir=scenario.config_dir)
    )
    opened = [
        cipher.decrypt(
            EncryptedRow(r.key_id, r.nonce, r.ciphertext),
            row_associated_data(good_file_id, r.row_number),
        )
        for r in store.quarantined_rows(good_file_id)
    ]
    store.engine.dispose()
    assert any(row["patient_first_name"] in CANARIES for row in opened)
