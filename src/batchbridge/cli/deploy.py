"""`batchbridge deploy`: generate deployments/prefect.yaml from the feeds, check or apply it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from batchbridge.cli.params import ConfigDirOption
from batchbridge.deploy.names import WORK_POOL
from batchbridge.deploy.prefect_yaml import (
    FEEDS_DIR,
    PREFECT_FILE,
    build_plan,
    check_prefect_file,
    ensure_tenant_limits,
    run_prefect_deploy,
    write_prefect_file,
)
from batchbridge.errors import ConfigError


def deploy_command(
    check: Annotated[
        bool, typer.Option("--check", help="Fail (exit 2) when prefect.yaml is out of date.")
    ] = False,
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="Also create the work pool and per-tenant limits, then `prefect deploy --all`.",
        ),
    ] = False,
    config_dir: ConfigDirOption = None,
    prefect_file: Annotated[
        Path | None, typer.Option("--prefect-file", help="The prefect.yaml to write or check.")
    ] = None,
    project_root: Annotated[
        Path | None, typer.Option(hidden=True, help="Repository root (tests).")
    ] = None,
) -> int:
    """Generate deployments/prefect.yaml from the feed YAMLs (--check, --apply)."""
    root = (project_root or Path.cwd()).resolve()
    feeds = config_dir or root / FEEDS_DIR
    target = prefect_file or root / PREFECT_FILE
    plan = build_plan(feeds)
    if check:
        check_prefect_file(plan, target)
        print(f"{target} is up to date ({len(plan.deployment_names)} deployments)")
    else:
        changed = write_prefect_file(plan, target)
        print(
            f"{target} {'written' if changed else 'unchanged'}: {', '.join(plan.deployment_names)}"
        )
    if apply:
        if not (root / "src" / "batchbridge").is_dir():
            raise ConfigError(
                f"{root} is not a batchbridge checkout: run `batchbridge deploy --apply` "
                "from the repository root (deployment entrypoints are paths in it)"
            )
        ensure_tenant_limits(plan.tenant_queues)
        for queue, limit in sorted(plan.tenant_queues.items()):
            print(f"tenant limit {queue}: {limit} (work queue in {WORK_POOL} + global limit)")
        run_prefect_deploy(target, project_root=root)
        print(f"deployed {len(plan.deployment_names)} deployments to work pool {WORK_POOL}")
    return 0
