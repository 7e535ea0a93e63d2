"""The `batchbridge` entry point: the command tree, and every error turned into one line.

Exit codes are those of the error tree in `batchbridge.errors` (a wrong command line
exits 2, like a wrong configuration). Nothing reaches the terminal as a traceback: an
error batchbridge did not foresee prints its class name only (library messages may
quote the data they choked on); BATCHBRIDGE_DEBUG=1 re-raises it for a developer.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from typing import Annotated

import typer

from batchbridge.cli import (
    alerts,
    audit,
    demo,
    deploy,
    feeds,
    health,
    keys,
    onboard,
    quarantine,
    report,
    run,
    runs,
    server,
    steward_serve,
)
from batchbridge.cli.output import print_error
from batchbridge.cli.prefect_env import set_prefect_defaults
from batchbridge.errors import BatchbridgeError

INTERNAL_ERROR_EXIT = 1
"""An error batchbridge did not foresee (a bug): its class name is printed, not its text."""

INTERRUPTED_EXIT = 130


def package_version() -> str:
    """The installed batchbridge version."""
    # importlib.metadata costs ~30 ms at start-up: only `--version` needs it.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("batchbridge")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        print(f"batchbridge {package_version()}")
        raise typer.Exit()


def exit_code_lines() -> list[str]:
    """Every exit code with what it means, read off the error tree (its one source)."""
    found = {0: "success", 1: "unexpected error (a bug: its class name is printed)"}
    for error in BatchbridgeError.__subclasses__():
        summary = (error.__doc__ or "").strip().splitlines()[0].removeprefix("Raised when ")
        found.setdefault(error.exit_code, summary.rstrip("."))
    found[2] = f"{found[2]}, or a wrong command line"
    return [f"{code}: {what}" for code, what in sorted(found.items())]


app = typer.Typer(
    name="batchbridge",
    help="Nightly PGP-encrypted partner files from SFTP to loaded, reconciled, audited results.",
    epilog="Exit codes: " + "; ".join(exit_code_lines()) + ".",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Nightly PGP-encrypted partner files from SFTP to loaded, reconciled, audited results."""


app.command("run", help="Run one feed once (a Prefect flow run) and print its report.")(
    run.run_feed_command
)
app.add_typer(feeds.app, name="feeds")
app.add_typer(quarantine.app, name="quarantine")
app.add_typer(runs.app, name="runs")
app.command("report", help="A run's report, or a ledger file's balance, by id.")(
    report.report_command
)
app.add_typer(audit.app, name="audit")
app.add_typer(keys.app, name="keys")
app.add_typer(alerts.app, name="alerts")
app.command("health", help="Check that feeds can run tonight (all feeds when no FEED).")(
    health.health_command
)
app.command("deploy", help="Generate deployments/prefect.yaml from the feeds (--apply: deploy).")(
    deploy.deploy_command
)
app.add_typer(onboard.app, name="onboard")
app.add_typer(server.app, name="server")
app.add_typer(steward_serve.app, name="steward")
app.command("demo", help="End-to-end demo on embedded defaults (SFTP, SQLite, Prefect).")(
    demo.demo_command
)


def _quiet_library_warnings() -> None:
    # pgpy and paramiko warn about deprecated cryptography names on import: noise for an
    # operator, and not theirs to act on.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*TripleDES.*")
    warnings.filterwarnings("ignore", module="pgpy")


def _usage_line(exc: typer.TyperException) -> str:
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"error [usage]: {exc.format_message()}{hint}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the error tree's, or 0)."""
    set_prefect_defaults()
    if not sys.warnoptions:
        _quiet_library_warnings()
    command = typer.main.get_command(app)
    try:
        result = command.main(
            args=list(argv) if argv is not None else None,
            prog_name="batchbridge",
            standalone_mode=False,
        )
    except typer.TyperException as exc:
        print(_usage_line(exc), file=sys.stderr)
        return exc.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return INTERRUPTED_EXIT
    except BatchbridgeError as exc:
        print_error(exc)
        return exc.exit_code
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error worth a message.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    except Exception as exc:
        if os.environ.get("BATCHBRIDGE_DEBUG"):
            raise
        print(
            f"error [internal]: unexpected {type(exc).__name__} (a bug: please report it; "
            "BATCHBRIDGE_DEBUG=1 shows the traceback, which may quote data)",
            file=sys.stderr,
        )
        return INTERNAL_ERROR_EXIT
    return result if isinstance(result, int) else 0
