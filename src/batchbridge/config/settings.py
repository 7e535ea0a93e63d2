"""Process-wide settings from the environment, with defaults that run anywhere."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from batchbridge.errors import ConfigError

DEFAULT_CONFIG_DIR = Path("deployments/feeds")
DEFAULT_VAR_DIR = Path("var")
DEFAULT_CHUNK_MIB = 8
"""Plaintext per chunk a file is streamed in (about 50,000 lab records): at 1M rows, 8 MiB
chunks peaked at 535 MB against 699 MB for 16 MiB, in the same time (make bench)."""


@dataclass(frozen=True)
class Settings:
    """Where the ledger lives, where ciphertext is staged, where feed YAMLs are."""

    database_url: str
    staging_dir: Path
    config_dir: Path
    chunk_bytes: int = DEFAULT_CHUNK_MIB * 1024 * 1024


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
        chunk_bytes=_chunk_mib() * 1024 * 1024,
    )


def _chunk_mib() -> int:
    raw = os.environ.get("BATCHBRIDGE_CHUNK_MIB", "").strip()
    if not raw:
        return DEFAULT_CHUNK_MIB
    if not raw.isdigit() or not 1 <= int(raw) <= 4096:
        raise ConfigError("BATCHBRIDGE_CHUNK_MIB must be a whole number of MiB from 1 to 4096")
    return int(raw)
