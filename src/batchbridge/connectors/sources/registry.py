"""Registry of source kinds: the feed YAML's `source.kind` picks the implementation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from batchbridge.config import LoadedFeed, LocalSourceConfig, SftpSourceConfig, SourceConfig
from batchbridge.connectors.sources.base import Source
from batchbridge.connectors.sources.local import LocalDirSource
from batchbridge.connectors.sources.sftp import SftpSource
from batchbridge.errors import ConfigError

SourceFactory = Callable[[SourceConfig, Path], Source]


def _open_sftp(config: SourceConfig, base_dir: Path) -> Source:
    if not isinstance(config, SftpSourceConfig):
        raise ConfigError(f"source kind 'sftp' got a {type(config).__name__}")
    return SftpSource(config, base_dir=base_dir)


def _open_local(config: SourceConfig, base_dir: Path) -> Source:
    if not isinstance(config, LocalSourceConfig):
        raise ConfigError(f"source kind 'local' got a {type(config).__name__}")
    return LocalDirSource(config, base_dir=base_dir)


SOURCE_KINDS: dict[str, SourceFactory] = {
    "local": _open_local,
    "sftp": _open_sftp,
}


def open_source_config(config: SourceConfig, *, base_dir: Path) -> Source:
    """Build the Source for a source config; relative paths and file: secrets use `base_dir`."""
    factory = SOURCE_KINDS.get(config.kind)
    if factory is None:
        valid = ", ".join(sorted(SOURCE_KINDS))
        raise ConfigError(f"unknown source kind {config.kind!r} (valid kinds: {valid})")
    return factory(config, base_dir)


def open_source(loaded: LoadedFeed) -> Source:
    """Build the Source of a loaded feed (nothing connects until first use)."""
    return open_source_config(loaded.config.source, base_dir=loaded.base_dir)
