"""The demo's lab scenario, wired the way only tests and the benchmark need it.

A PostgreSQL warehouse target, and a shipped feed YAML (deployments/feeds/) made to
run on this machine's sshd with keys of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from batchbridge.demo.scenario import (
    LAB_TARGET_COLUMNS,
    LabFeedScenario,
    SftpEndpoint,
    build_lab_scenario,
)


def postgres_target(url_env: str, columns: list[str] | None = None) -> dict[str, Any]:
    """Feed YAML for a PostgreSQL warehouse whose URL is in environment variable `url_env`."""
    return {
        "name": "warehouse",
        "kind": "postgres",
        "url": f"env:{url_env}",
        "table": "lab_result",
        "columns": columns or LAB_TARGET_COLUMNS,
    }


def build_shipped_feed_scenario(
    root: Path,
    endpoint: SftpEndpoint,
    shipped: Path,
    *,
    targets: list[dict[str, Any]],
    engine: str = "gnupg",
    contract: dict[str, Any] | None = None,
) -> LabFeedScenario:
    """A shipped feed YAML (e.g. deployments/feeds/patient_roster.yaml) on this machine.

    Everything that describes the partner's data is taken from the shipped file as is
    (tenant, schema, format, mappings, snapshot rule, contract, time zone); only where
    the partner is (SFTP endpoint, keys, secrets) and the targets are replaced by local
    ones, with a key pair of its own.
    """
    built = build_lab_scenario(root, endpoint, targets=targets, engine=engine)
    generated = yaml.safe_load(built.feed_path.read_text(encoding="utf-8"))
    feed = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    mappings: dict[str, str] = {}
    for name, relative in feed.get("mappings", {}).items():
        source = (shipped.parent / relative).resolve()
        copy = root / "mappings" / source.name
        copy.write_bytes(source.read_bytes())
        mappings[name] = f"../mappings/{source.name}"
    glob = feed["source"]["glob"]
    feed["source"] = {**generated["source"], "glob": glob}
    feed["pgp"] = {**generated["pgp"], "engine": engine}
    feed["mappings"] = mappings
    for secret in ("pseudonym_key", "quarantine_key"):
        feed[secret] = generated[secret]
    feed["targets"] = targets
    feed.pop("alerts", None)
    if contract is not None:
        feed["contract"] = contract
    built.feed_path.unlink()
    (built.config_dir / f"{feed['feed']}.yaml").write_text(
        f"# Generated from {shipped.name} by tests.support.feed_scenarios.\n"
        + yaml.safe_dump(feed, sort_keys=False),
        encoding="utf-8",
    )
    built.feed = feed["feed"]
    built.tenant = feed["tenant"]
    return built
