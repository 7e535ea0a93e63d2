"""`batchbridge demo` keeps an earlier demo's steward work unless --fresh; a new file each run."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from batchbridge.cli.demo import steward_commands
from batchbridge.demo.keys import generate_ed25519, write_secret_file
from batchbridge.demo.scenario import SftpEndpoint, lab_file_name, reopen_lab_scenario
from batchbridge.demo.workdir import (
    MARKER,
    NEEDED_TO_KEEP,
    DemoStart,
    Start,
    client_key,
    next_demo_file,
    plan_demo_start,
    prepare_workdir,
    renumber_records,
)
from batchbridge.errors import ConfigError
from tests.unit.feed_helpers import pgp_key

DAY = date(2026, 11, 20)


def earlier_demo(workdir: Path, *, marker: bool = True) -> Path:
    """A workdir laid out as a finished demo leaves it (contents are stand-ins)."""
    for part in NEEDED_TO_KEEP:
        path = workdir / part
        if "." in path.name or path.parent.name == "secrets":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x", encoding="utf-8")
        else:
            path.mkdir(parents=True, exist_ok=True)
    (workdir / "ledger.db").write_bytes(b"ledger")
    if marker:
        (workdir / MARKER).write_text("demo\n", encoding="utf-8")
    return workdir


def test_a_new_or_empty_workdir_starts_new(tmp_path: Path) -> None:
    assert plan_demo_start(tmp_path / "nothing", fresh=False).action is Start.NEW
    assert plan_demo_start(tmp_path, fresh=True).action is Start.NEW


def test_an_earlier_demo_is_kept_unless_fresh(tmp_path: Path) -> None:
    workdir = earlier_demo(tmp_path / "demo")
    keep = plan_demo_start(workdir, fresh=False)
    assert keep.action is Start.KEEP and "--fresh" in keep.reason
    prepare_workdir(workdir, keep)
    assert (workdir / "ledger.db").read_bytes() == b"ledger"  # nothing deleted

    wipe = plan_demo_start(workdir, fresh=True)
    assert wipe.action is Start.WIPE
    prepare_workdir(workdir, wipe)
    assert [p.name for p in workdir.iterdir()] == [MARKER]


def test_a_demo_made_before_the_marker_is_recognised(tmp_path: Path) -> None:
    workdir = earlier_demo(tmp_path / "demo", marker=False)
    assert plan_demo_start(workdir, fresh=False).action is Start.KEEP


def test_an_incomplete_demo_starts_over_saying_what_is_missing(tmp_path: Path) -> None:
    workdir = earlier_demo(tmp_path / "demo")
    (workdir / "secrets" / "quarantine_key").unlink()
    start = plan_demo_start(workdir, fresh=False)
    assert start.action is Start.WIPE and "secrets/quarantine_key" in start.reason


@pytest.mark.parametrize("fresh", [False, True])
def test_a_folder_that_is_not_a_demo_is_never_touched(tmp_path: Path, fresh: bool) -> None:
    (tmp_path / "thesis.tex").write_text("years of work", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a batchbridge demo"):
        plan_demo_start(tmp_path, fresh=fresh)
    with pytest.raises(ConfigError, match="not deleting"):
        prepare_workdir(tmp_path, DemoStart(Start.WIPE, "asked to"))
    assert (tmp_path / "thesis.tex").exists()


def test_each_run_drops_a_file_the_ledger_has_not_seen(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    assert next_demo_file(drop, DAY) == (lab_file_name(DAY), 1)
    drop.mkdir()
    (drop / lab_file_name(DAY)).write_bytes(b"")
    assert next_demo_file(drop, DAY) == (lab_file_name(DAY, 2), 2)
    (drop / lab_file_name(DAY, 2)).write_bytes(b"")
    later = date(2026, 11, 21)
    assert next_demo_file(drop, later) == (lab_file_name(later, 3), 3)
    (drop / lab_file_name(DAY, 3)).write_bytes(b"")  # a name taken out of turn is skipped
    assert next_demo_file(drop, DAY) == (lab_file_name(DAY, 4), 4)


def test_later_files_bring_their_own_record_ids() -> None:
    frame = pl.DataFrame({"record_id": ["R000000001", "R000000001", "R000000002"]})
    assert renumber_records(frame, 1).equals(frame)
    assert renumber_records(frame, 3)["record_id"].to_list() == [
        "R3-000000001",
        "R3-000000001",  # a planted duplicate stays a duplicate
        "R3-000000002",
    ]


def test_a_kept_demo_logs_in_with_its_stored_key(tmp_path: Path) -> None:
    pair = generate_ed25519()
    (tmp_path / "secrets").mkdir()
    write_secret_file(tmp_path / "secrets" / "sftp_key", pair.private_openssh)
    keep = plan_demo_start(earlier_demo(tmp_path / "other"), fresh=False)
    assert client_key(tmp_path, keep) == pair
    new = plan_demo_start(tmp_path / "none", fresh=False)
    assert client_key(tmp_path, new) != pair


def test_reopen_rewrites_only_where_the_server_is(tmp_path: Path) -> None:
    ours, partner = pgp_key(passphrase="pw"), pgp_key()
    secrets_dir, feeds = tmp_path / "secrets", tmp_path / "feeds"
    secrets_dir.mkdir()
    feeds.mkdir()
    (secrets_dir / "pgp_private.asc").write_text(str(ours))
    (secrets_dir / "partner_public.asc").write_text(str(partner.pubkey))
    source = {"kind": "sftp", "host": "127.0.0.1", "port": 1, "username": "u", "remote_dir": "/r"}
    source |= {"host_keys": ["ssh-ed25519 OLD"], "private_key": "file:../secrets/sftp_key"}
    before: dict[str, Any] = {
        "feed": "lab_results",
        "source": source,
        "quarantine_key": "file:../secrets/quarantine_key",
    }
    (feeds / "lab_results.yaml").write_text(yaml.safe_dump(before))
    endpoint = SftpEndpoint(
        host="127.0.0.1",
        port=40022,
        username="batchbridge",
        host_key_line="ssh-ed25519 NEW",
        client_private_key="unused",
        remote_dir="/outbound/results",
        drop_dir=tmp_path / "drop",
    )
    scenario = reopen_lab_scenario(tmp_path, endpoint)
    after = yaml.safe_load((feeds / "lab_results.yaml").read_text())
    assert after["source"] == {
        **source,
        "port": 40022,
        "username": "batchbridge",
        "remote_dir": "/outbound/results",
        "host_keys": ["ssh-ed25519 NEW"],
    }
    assert after["quarantine_key"] == before["quarantine_key"]
    assert scenario.our_fpr == str(ours.fingerprint).replace(" ", "")
    assert scenario.partner_fpr == str(partner.fingerprint).replace(" ", "")
    assert (tmp_path / "drop").is_dir()


def test_steward_commands_work_from_the_repository_root(tmp_path: Path) -> None:
    workdir, script = tmp_path / "var" / "demo", tmp_path / ".venv" / "bin" / "batchbridge"
    text = "\n".join(steward_commands(workdir, workdir / "feeds", tmp_path, script))
    assert f"  cd {tmp_path}\n" in text
    assert "export BATCHBRIDGE_DATABASE_URL=sqlite:///var/demo/ledger.db " in text
    assert "BATCHBRIDGE_ACTOR=demo.steward@example.org" in text
    assert ".venv/bin/batchbridge quarantine list --config-dir var/demo/feeds" in text
    # A workdir elsewhere: absolute paths, which work from anywhere.
    elsewhere = "\n".join(steward_commands(workdir, workdir / "feeds", tmp_path / "x", script))
    assert f"sqlite:///{workdir / 'ledger.db'}" in elsewhere and "  cd " not in elsewhere
    assert f"{script} audit verify --config-dir {workdir / 'feeds'}" in elsewhere
