"""Process-wide settings from the environment, with defaults that run anywhere."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CONFIG_DIR = Path("deployments/feeds")
DEFAULT_VAR_DIR = Path("var")


@dataclass(frozen=True)
class Settings:
    """Where the ledger lives, where ciphertext is staged, where feed YAMLs are."""

    database_url: str
    staging_dir: Path
    config_dir: Path


def load_settings(config_dir: Path | str | None = None) -> Settings:
    """Settings from BATCHBRIDGE_* variables; defaults are a SQLite ledger under ./var.

    Reading settings creates nothing: the ledger (and a SQLite file's folder) is made only
    by the commands that create one (`LedgerStore.from_url`), so a command that reads a
    ledger never finds a fresh empty one where the setting points at the wrong place.
    """
    var_dir = Path(os.environ.get("BATCHBRIDGE_VAR_DIR", DEFAULT_VAR_DIR)).resolve()
    database_url = os.environ.get("BATCHBRIDGE_DATABASE_URL") or (
        f"sqlite:///{var_dir / 'batchbridge.db'}"
    )
    staging_dir = Path(os.environ.get("BATCHBRIDGE_STAGING_DIR") or var_dir / "staging")
    chosen_config = config_dir or os.environ.get("BATCHBRIDGE_CONFIG_DIR") or DEFAULT_CONFIG_DIR
    return Settings(
        database_url=database_url,
        staging_dir=staging_dir.resolve(),
        config_dir=Path(chosen_config).resolve(),
    )
