"""`batchbridge report ID`: a run's stored report with its files' balances now, or one file's."""

from __future__ import annotations

from typing import Annotated

import typer

from batchbridge.cli.output import print_json
from batchbridge.cli.params import ConfigDirOption, JsonOption
from batchbridge.cli.steward_session import steward_service
from batchbridge.cli.steward_views import render_balance
from batchbridge.config.stewards import required_role
from batchbridge.errors import IdLookupError, StewardError
from batchbridge.ledger.quarantine_store import FileBalance
from batchbridge.ledger.run_report import RunReport, render_text
from batchbridge.ledger.runs_query import ID_TEXT, resolve
from batchbridge.steward.release_report import (
    RELEASE_REPORT_KIND,
    ReleaseRun,
    render_release_run,
)
from batchbridge.steward.service import StewardService


def full_id(service: StewardService, ident: str) -> str:
    """The run or file id `ident` (a full id or a unique prefix) names among the actor's tenants.

    A prefix matching several runs and/or files is refused with the candidates
    (IdLookupError, exit 2). One matching nothing, or not an id at all, is returned as
    given: the lookup then fails as any unknown id does (and is audited when it names
    another tenant's run).
    """
    tenants = service.directory.tenants(service.actor, required_role("report"))
    try:
        with service.store.session() as session:
            return resolve(session, ident, tenants=tenants).id
    except IdLookupError as exc:
        if exc.reason == "id_ambiguous":
            raise
        return ident.strip()


def report_command(
    ident: Annotated[
        str,
        typer.Argument(
            help="A run id or a ledger file id, or a unique prefix of one (>= 4 hex digits).",
            metavar="ID",
        ),
    ],
    config_dir: ConfigDirOption = None,
    as_json: JsonOption = False,
) -> int:
    """A run's report with its files' balances now, or one file's balance."""
    with steward_service(config_dir) as service:
        ident = full_id(service, ident)
        found = service.run_report(ident)
        if found is None:
            try:
                balance = service.file_balance(ident)
            except StewardError:
                # Echoed only when it looks like an id: a mistyped one may be pasted data.
                named = f" {ident}" if ID_TEXT.fullmatch(ident.lower()) else " with that id"
                raise StewardError(
                    f"no run or file{named} among your tenants' runs and files"
                ) from None
            if as_json:
                print_json(balance.to_dict())
            else:
                print(render_balance(balance))
            return 0
    if as_json:
        print_json(found)
        return 0
    stored = found["report"]
    if stored.get("kind") == RELEASE_REPORT_KIND:
        print("\n".join(render_release_run(ReleaseRun.from_dict(stored))))
    elif stored:
        print(render_text(RunReport.from_dict(stored)))
    else:
        print(f"run {ident}: {found['status']} (no report stored yet)")
    if found["balances"]:
        print("\nbalance now (read = first run + after fix + still quarantined + discarded):")
        for entry in found["balances"]:
            print(
                render_balance(FileBalance(**{k: v for k, v in entry.items() if k != "balanced"}))
            )
    return 0
