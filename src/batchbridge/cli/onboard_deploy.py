"""`onboard deploy`: put a new feed's deployment steps in order; with --apply, gate and run them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from batchbridge.config import load_feed
from batchbridge.config.settings import load_settings
from batchbridge.errors import ConfigError, HealthCheckError

Runner = Callable[..., "subprocess.CompletedProcess[Any]"]


def _deployment_names(prefect_file: Path) -> set[str]:
    if not prefect_file.is_file():
        return set()
    data = yaml.safe_load(prefect_file.read_text(encoding="utf-8")) or {}
    return {str(d.get("name")) for d in data.get("deployments") or [] if isinstance(d, dict)}


def deploy_command(
    feed: str,
    *,
    config_dir: Path | None,
    prefect_file: Path | None,
    apply: bool,
    runner: Runner = subprocess.run,
) -> int:
    """Print the steps that deploy a feed; with `apply`, gate on the checks and run them.

    Thin on purpose: `batchbridge deploy` owns prefect.yaml (generated from the feed
    YAMLs) and the tenant work queues; this only puts the onboarding steps in order.
    """
    from batchbridge.deploy.prefect_yaml import host_keys_pinned
    from batchbridge.monitoring.health_checks import run_feed_checks
    from batchbridge.monitoring.health_report import render_health_text
    from batchbridge.monitoring.preflight import check_feed

    settings = load_settings(config_dir)
    loaded = load_feed(feed, settings.config_dir)
    tenant = loaded.config.tenant
    prefect_yaml = (prefect_file or settings.config_dir.parent / "prefect.yaml").resolve()
    # Like `batchbridge deploy`: run from the repository root (entrypoints are paths in it).
    root = Path.cwd().resolve()
    shown = _relative(prefect_yaml, root)
    present = _deployment_names(prefect_yaml)
    names = [f"{feed}-nightly", f"{feed}-health"]
    status = ", ".join(f"{n} {'present' if n in present else 'not there yet'}" for n in names)
    if not host_keys_pinned(loaded.config):
        status = f"none for {feed} until its host key is pinned: `batchbridge onboard host-key`"

    print(f"deploy feed {feed} (tenant {tenant}), from {root}:")
    print(f"  1. batchbridge feeds check {feed}   (YAML, mapping tables, secrets)")
    print(f"  2. batchbridge health {feed}   (host key, login, PGP keys, target canary)")
    print(f"  3. batchbridge deploy   (regenerates {shown}: {status})")
    print(f"  4. prefect deploy --prefect-file {shown} --name {feed}-nightly")
    print(f"     (and --name {feed}-health when present)")
    print(
        f"     a NEW tenant needs its work queue limit first: `batchbridge deploy --apply`\n"
        f"     does that (queue tenant-{tenant}) and deploys everything"
    )
    if not apply:
        print(f"or run them all: batchbridge onboard deploy {feed} --apply")
        return 0

    problems = check_feed(loaded, resolve_secrets=True)
    if problems:
        print(f"feeds check: {len(problems)} problem(s); not deployed")
        for problem in problems:
            print(f"  - {problem}")
        return ConfigError.exit_code
    print(f"feeds check: {feed} ok")
    health = run_feed_checks(feed, settings.config_dir)
    print(render_health_text(health))
    if health.failed:
        print("health check failed; not deployed")
        return HealthCheckError.exit_code
    argv = [
        sys.executable,
        "-m",
        "batchbridge.cli",
        "deploy",
        "--apply",
        "--config-dir",
        str(settings.config_dir),
        "--prefect-file",
        str(prefect_yaml),
    ]
    print(f"$ batchbridge deploy --apply --prefect-file {shown}")
    result = runner(argv, cwd=root, check=False)
    return int(result.returncode)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
