"""Outbound SFTP target: one extract file per source file, written under a temporary name."""

from __future__ import annotations

from batchbridge.config import LoadedFeed, SftpTargetConfig
from batchbridge.connectors.targets.base import Target
from batchbridge.errors import ConfigError


def open_sftp_target(loaded: LoadedFeed, config: SftpTargetConfig) -> Target:
    """Build the outbound SFTP target a feed's config describes."""
    raise ConfigError(f"target {config.name}: the sftp target is not built yet")
