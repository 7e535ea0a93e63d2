"""The `batchbridge` command line: run and deploy feeds, steward quarantined rows, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from batchbridge.errors import BatchbridgeError

STEWARD_COMMANDS = frozenset({"quarantine", "report", "audit", "keys"})


def _quiet_prefect_defaults() -> None:
    # No telemetry from an air-gapped healthcare network; set before Prefect is imported.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "batchbridge")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="batchbridge",
        description="Nightly PGP-encrypted partner files from SFTP to loaded, reconciled results.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run one feed once (a Prefect flow run)")
    run.add_argument("feed")
    run.add_argument("--config-dir", type=Path, default=None, help="folder of feed YAMLs")
    run.add_argument("--file", dest="files", action="append", help="only this remote file")
    run.add_argument("--force", action="store_true", help="reprocess files already done")
    run.add_argument("--json", action="store_true", help="print the report as JSON")

    feeds = commands.add_parser("feeds", help="inspect feed configurations")
    feed_commands = feeds.add_subparsers(dest="feeds_command", required=True)
    check = feed_commands.add_parser("check", help="validate a feed without running it")
    check.add_argument("feed")
    check.add_argument("--config-dir", type=Path, default=None)
    listing = feed_commands.add_parser("list", help="list feeds")
    listing.add_argument("--config-dir", type=Path, default=None)

    deploy = commands.add_parser(
        "deploy",
        help="generate deployments/prefect.yaml from the feeds (and deploy it with --apply)",
    )
    deploy.add_argument(
        "--check", action="store_true", help="fail (exit 2) when prefect.yaml is out of date"
    )
    deploy.add_argument(
        "--apply",
        action="store_true",
        help="also create the work pool and per-tenant limits, then `prefect deploy --all`",
    )
    deploy.add_argument("--config-dir", type=Path, default=None, help="folder of feed YAMLs")
    deploy.add_argument("--prefect-file", type=Path, default=None, help="prefect.yaml to write")

    health = commands.add_parser("health", help="check feeds can run tonight (all when no FEED)")
    health.add_argument("feed", nargs="?", default=None)
    health.add_argument("--config-dir", type=Path, default=None)
    health.add_argument("--json", action="store_true")

    demo = commands.add_parser("demo", help="end-to-end demo on embedded defaults")
    demo.add_argument("--rows", type=int, default=2000)
    demo.add_argument("--workdir", type=Path, default=Path("var/demo"))
    demo.add_argument("--json", action="store_true")

    alerts = commands.add_parser("alerts", help="check arrival windows and keys; test alert routes")
    alert_commands = alerts.add_subparsers(dest="alerts_command", required=True)
    arrivals = alert_commands.add_parser(
        "check-arrivals", help="alert when the feed's file is late or a key nears expiry"
    )
    arrivals.add_argument("feed")
    arrivals.add_argument("--config-dir", type=Path, default=None)
    arrivals.add_argument("--now", default=None, help="ISO time with offset instead of the clock")
    arrivals.add_argument("--json", action="store_true")
    probe = alert_commands.add_parser("test", help="post a test alert to the feed's webhook")
    probe.add_argument("feed")
    probe.add_argument("--config-dir", type=Path, default=None)

    from batchbridge.flows.steward_commands import add_steward_commands

    add_steward_commands(commands)

    from batchbridge.flows.onboard import add_onboard_commands

    add_onboard_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit codes follow the error tree in batchbridge.errors."""
    _quiet_prefect_defaults()
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    try:
        if args.command == "run":
            from batchbridge.flows.commands import run_command

            return run_command(
                args.feed,
                config_dir=args.config_dir,
                files=args.files,
                force=args.force,
                as_json=args.json,
            )
        if args.command == "feeds":
            from batchbridge.flows.commands import check_feed_command, list_feeds_command

            if args.feeds_command == "check":
                return check_feed_command(args.feed, config_dir=args.config_dir)
            return list_feeds_command(config_dir=args.config_dir)
        if args.command == "deploy":
            from batchbridge.flows.deploy import deploy_command

            return deploy_command(
                check=args.check,
                apply=args.apply,
                feeds_dir=args.config_dir,
                prefect_file=args.prefect_file,
            )
        if args.command == "health":
            from batchbridge.flows.health_command import health_command

            return health_command(args.feed, config_dir=args.config_dir, as_json=args.json)
        if args.command == "onboard":
            from batchbridge.flows.onboard import run_onboard_command

            return run_onboard_command(args)
        if args.command == "demo":
            from batchbridge.flows.demo import run_demo

            return run_demo(rows=args.rows, workdir=args.workdir, as_json=args.json)
        if args.command == "alerts":
            from batchbridge.flows.arrivals import check_arrivals_command, send_probe_command

            if args.alerts_command == "check-arrivals":
                return check_arrivals_command(
                    args.feed, config_dir=args.config_dir, now=args.now, as_json=args.json
                )
            return send_probe_command(args.feed, config_dir=args.config_dir)
        if args.command in STEWARD_COMMANDS:
            from batchbridge.flows.steward_commands import run_steward_command

            return run_steward_command(args)
    except BatchbridgeError as exc:
        print(f"error [{exc.reason}]: {exc}", file=sys.stderr)
        return exc.exit_code
    return 2


def print_json(data: object) -> None:
    """Stable JSON on stdout."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


if __name__ == "__main__":
    raise SystemExit(main())
