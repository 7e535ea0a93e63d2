"""`batchbridge demo`: synthetic partner files over local SFTP into SQLite, kept between runs."""

from __future__ import annotations

import os
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated

import typer

from batchbridge.cli.output import print_json, wants_progress
from batchbridge.cli.run import run_feed_once
from batchbridge.config.settings import load_settings
from batchbridge.ledger.run_report import render_text

DEMO_STEWARD = "demo.steward@example.org"
DEMO_SEED = 7
# `steward serve` reads the local login's users beside the feeds folder by default.
WEB_USERS_FILE = "web-users.yaml"
WORKBENCH_PORT = 8765

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
        "lab_results",
        load_settings(config_dir),
        files=None,
        force=False,
        show_progress=wants_progress(quiet=False, as_json=as_json),
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
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Delete the earlier demo in the workdir (ledger, quarantine, audit log, "
            "keys) and start over. Without it, the earlier demo is kept and a new file added.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")] = False,
) -> int:
    """End-to-end demo on embedded defaults: local SFTP server, SQLite, Prefect."""
    return run_demo(rows=rows, workdir=workdir, as_json=as_json, fresh=fresh)


def run_demo(*, rows: int, workdir: Path, as_json: bool, fresh: bool = False) -> int:
    """Set up (or carry on) everything under `workdir`, drop a new partner file, run twice."""
    # The demo's synthetic world (gpg keys, Polars-made rows, an SFTP server) loads only here.
    from batchbridge.demo.lab_data import generate_lab_rows
    from batchbridge.demo.scenario import (
        SftpEndpoint,
        build_lab_scenario,
        reopen_lab_scenario,
        sqlite_target,
    )
    from batchbridge.demo.sftp_server import start_sftp_server
    from batchbridge.demo.workdir import (
        Start,
        client_key,
        next_demo_file,
        plan_demo_start,
        prepare_workdir,
        renumber_records,
    )

    workdir = workdir.resolve()
    start = plan_demo_start(workdir, fresh=fresh)
    print(f"demo: {workdir}: {start.reason}")
    prepare_workdir(workdir, start)
    login = client_key(workdir, start)
    sftp_root = workdir / "partner-sftp"
    server = start_sftp_server(sftp_root, login.public_line)
    try:
        endpoint = SftpEndpoint(
            host=server.host,
            port=server.port,
            username=server.username,
            host_key_line=server.host_key_line,
            client_private_key=login.private_openssh,
            remote_dir="/outbound/results",
            drop_dir=sftp_root / "outbound" / "results",
        )
        if start.action is Start.KEEP:
            scenario = reopen_lab_scenario(workdir, endpoint)
        else:
            scenario = build_lab_scenario(
                workdir, endpoint, targets=[sqlite_target(workdir / "warehouse.db")]
            )
        ledger_url = f"sqlite:///{workdir / 'ledger.db'}"
        os.environ["BATCHBRIDGE_DATABASE_URL"] = ledger_url
        os.environ["BATCHBRIDGE_STAGING_DIR"] = str(workdir / "staging")
        file_date = date.today() - timedelta(days=1)
        name, seq = next_demo_file(endpoint.drop_dir, file_date)
        frame = generate_lab_rows(
            rows, seed=DEMO_SEED + seq - 1, file_date=file_date, bad_rows=DEMO_BAD_ROWS
        )
        scenario.drop_file(name, renumber_records(frame, seq))
        scenario.close()
        print(
            f"demo: partner file {name} ({rows} rows, signed + encrypted by gpg) on "
            f"sftp://{server.host}:{server.port}{endpoint.remote_dir}"
        )
        print(f"demo: feed config {scenario.feed_path}\n")
        if seq == 1:
            print("== first run: every valid row loaded, invalid rows quarantined")
        else:
            print(f"== first run: only the new file {name}; the earlier ones are done")
        first = _run_and_print(scenario.config_dir, as_json=as_json)
        done = "the same file is" if seq == 1 else "every file is"
        print(f"\n== second run: {done} already done, nothing is doubled")
        second = _run_and_print(scenario.config_dir, as_json=as_json)
        print(f"\ndemo: warehouse {workdir / 'warehouse.db'}, ledger {workdir / 'ledger.db'}")
        stewards = workdir / "stewards.yaml"
        if not stewards.exists():  # a kept demo's stewards.yaml may have been edited
            stewards.write_text(
                f"stewards:\n  {DEMO_STEWARD}:\n    acme_lab: admin\n", encoding="utf-8"
            )
        for line in _quarantine_lines(ledger_url):
            print(line)
        for line in steward_commands(workdir, scenario.config_dir, Path.cwd(), cli_script()):
            print(line)
        password = demo_login(workdir / WEB_USERS_FILE)
        for line in workbench_lines(scenario.config_dir, Path.cwd(), cli_script(), password):
            print(line)
        return first or second
    finally:
        server.stop()


def _quarantine_lines(ledger_url: str) -> list[str]:
    """Rows still waiting for a steward, per file: counts and names only."""
    # The ledger's SQLAlchemy models load only at the end of a demo.
    from sqlalchemy import func, select

    from batchbridge.ledger.models import LedgerFile, QuarantinedRow, QuarantineStatus
    from batchbridge.ledger.store import LedgerStore

    store = LedgerStore.from_url(ledger_url)
    try:
        with store.session() as session:
            counts = session.execute(
                select(LedgerFile.name, func.count(QuarantinedRow.id))
                .join(LedgerFile, LedgerFile.id == QuarantinedRow.file_id)
                .where(QuarantinedRow.status == QuarantineStatus.QUARANTINED)
                .group_by(LedgerFile.name)
                .order_by(LedgerFile.name)
            ).all()
    finally:
        store.engine.dispose()
    lines = ["demo: quarantined rows waiting for a data steward:"]
    lines += [f"  {count:>5}  {name}" for name, count in counts] or ["  none"]
    return lines


def steward_commands(workdir: Path, config_dir: Path, cwd: Path, script: Path) -> list[str]:
    """The steward commands to try: paths relative to `cwd` when inside it, else absolute.

    `make demo` runs from the repository root, so the commands work from there.
    """

    def shown(path: Path) -> str:
        try:
            return str(path.relative_to(cwd))
        except ValueError:
            return str(path)

    paths = [shown(path) for path in (workdir / "ledger.db", config_dir, script)]
    relative = [path for path in paths if not Path(path).is_absolute()]
    cli = f"{paths[2]} {{}} --config-dir {paths[1]}"
    return [
        "demo: look at the quarantined rows as a data steward (every view is audited):",
        *([f"  cd {cwd}"] if relative else []),
        f"  export BATCHBRIDGE_DATABASE_URL=sqlite:///{paths[0]} BATCHBRIDGE_ACTOR={DEMO_STEWARD}",
        "  " + cli.format("quarantine list"),
        "  " + cli.format("quarantine show ID"),
        "  " + cli.format('quarantine show ID --reveal --why "demo"'),
        "  " + cli.format('quarantine fix ID --set patient_last_name=Doe --why "demo"'),
        "  " + cli.format('quarantine release ID --why "demo"'),
        "  " + cli.format("audit verify"),
        "  (the next `batchbridge demo` keeps all this and adds a file; --fresh starts over)",
    ]


def demo_login(users_file: Path) -> str:
    """A new password for the demo steward's local login; only its argon2 hash is written.

    A new one each demo run, since the hash cannot be turned back into the password to
    print again; other people someone added to the file are kept.
    """
    # argon2 and YAML load only here, at the end of a demo.
    import secrets

    import yaml

    from batchbridge.web.auth.local import hash_password

    password = secrets.token_urlsafe(12)
    users: dict[str, str] = {}
    if users_file.exists():
        users = dict(
            (yaml.safe_load(users_file.read_text(encoding="utf-8")) or {}).get("users") or {}
        )
    users[DEMO_STEWARD] = hash_password(password)
    users_file.write_text(yaml.safe_dump({"users": users}, sort_keys=False), encoding="utf-8")
    users_file.chmod(0o600)
    return password


def workbench_lines(config_dir: Path, cwd: Path, script: Path, password: str) -> list[str]:
    """How to open the steward workbench on the demo: the command, the URL, the login.

    The demo does not start it: `make demo` ends when its runs are done, and a server in
    the foreground would never end it (nor belong in its output). The password is printed
    here once and written nowhere else (the users file holds its hash).
    """

    def shown(path: Path) -> str:
        try:
            return str(path.relative_to(cwd))
        except ValueError:
            return str(path)

    return [
        "demo: the same work in the browser, as the steward workbench (local login, this "
        "machine only; with the export above):",
        f"  {shown(script)} steward serve --port {WORKBENCH_PORT} --config-dir {shown(config_dir)}",
        f"  open http://127.0.0.1:{WORKBENCH_PORT}/ and sign in as {DEMO_STEWARD}",
        f"  password: {password}   (new on every demo run; only its hash is kept, in "
        f"{shown(config_dir.parent / WEB_USERS_FILE)})",
    ]


def cli_script() -> Path:
    """The `batchbridge` script of the Python running this (`.venv/bin/batchbridge`)."""
    script = Path(sys.executable).parent / "batchbridge"
    return script if script.exists() else Path("batchbridge")
