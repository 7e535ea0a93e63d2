"""`batchbridge demo`: a synthetic partner file over a local SFTP server into SQLite, twice."""

from __future__ import annotations

import os
import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated

import typer

from batchbridge.cli.output import print_json
from batchbridge.cli.run import run_feed_once
from batchbridge.ledger.run_report import render_text
from batchbridge.settings import load_settings

DEMO_STEWARD = "demo.steward@example.org"

DEMO_BAD_ROWS = {
    "bad_npi": 4,
    "bad_dob": 3,
    "unmapped_code": 5,
    "missing_last_name": 2,
    "duplicate_id": 2,
    "collected_after_resulted": 2,
    "non_numeric_value": 2,
}


def _run_and_print(config_dir: Path, *, as_json: bool) -> int:
    report, status = run_feed_once(
        "lab_results", load_settings(config_dir), files=None, force=False
    )
    if as_json:
        print_json(report.to_dict())
    else:
        print(render_text(report))
    return 0 if status == "succeeded" else 9


def demo_command(
    rows: Annotated[int, typer.Option("--rows", help="Rows in the synthetic file.", min=1)] = 2000,
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Folder for everything the demo makes.")
    ] = Path("var/demo"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")] = False,
) -> int:
    """End-to-end demo on embedded defaults: local SFTP server, SQLite, Prefect."""
    return run_demo(rows=rows, workdir=workdir, as_json=as_json)


def run_demo(*, rows: int, workdir: Path, as_json: bool) -> int:
    """Set up everything under `workdir`, run the flow, then run it again to show idempotency."""
    # The demo's synthetic world (gpg keys, Polars-made rows, an SFTP server) loads only here.
    from batchbridge.testing.keys import generate_ed25519
    from batchbridge.testing.lab_data import generate_lab_rows
    from batchbridge.testing.scenario import (
        SftpEndpoint,
        build_lab_scenario,
        lab_file_name,
        sqlite_target,
    )
    from batchbridge.testing.sftp_server import start_sftp_server

    workdir = workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    client_key = generate_ed25519()
    sftp_root = workdir / "partner-sftp"
    server = start_sftp_server(sftp_root, client_key.public_line)
    try:
        endpoint = SftpEndpoint(
            host=server.host,
            port=server.port,
            username=server.username,
            host_key_line=server.host_key_line,
            client_private_key=client_key.private_openssh,
            remote_dir="/outbound/results",
            drop_dir=sftp_root / "outbound" / "results",
        )
        scenario = build_lab_scenario(
            workdir, endpoint, targets=[sqlite_target(workdir / "warehouse.db")]
        )
        os.environ["BATCHBRIDGE_DATABASE_URL"] = f"sqlite:///{workdir / 'ledger.db'}"
        os.environ["BATCHBRIDGE_STAGING_DIR"] = str(workdir / "staging")
        file_date = date.today() - timedelta(days=1)
        frame = generate_lab_rows(rows, seed=7, file_date=file_date, bad_rows=DEMO_BAD_ROWS)
        name = lab_file_name(file_date)
        scenario.drop_file(name, frame)
        scenario.close()
        print(
            f"demo: partner file {name} ({rows} rows, signed + encrypted by gpg) on "
            f"sftp://{server.host}:{server.port}{endpoint.remote_dir}"
        )
        print(f"demo: feed config {scenario.feed_path}\n")
        print("== first run: every valid row loaded, invalid rows quarantined")
        first = _run_and_print(scenario.config_dir, as_json=as_json)
        print("\n== second run: the same file is already done, nothing is doubled")
        second = _run_and_print(scenario.config_dir, as_json=as_json)
        print(f"\ndemo: warehouse {workdir / 'warehouse.db'}, ledger {workdir / 'ledger.db'}")
        (workdir / "stewards.yaml").write_text(
            f"stewards:\n  {DEMO_STEWARD}:\n    acme_lab: admin\n", encoding="utf-8"
        )
        env = (
            f"BATCHBRIDGE_DATABASE_URL=sqlite:///{workdir / 'ledger.db'} "
            f"BATCHBRIDGE_ACTOR={DEMO_STEWARD}"
        )
        print(
            "demo: look at the quarantined rows as a data steward (every view is audited):\n"
            f"  {env} .venv/bin/batchbridge quarantine list --config-dir {scenario.config_dir}\n"
            f"  {env} .venv/bin/batchbridge quarantine show ID --config-dir {scenario.config_dir}"
        )
        return first or second
    finally:
        server.stop()
