"""Reading feed YAMLs: find, parse and validate them; errors name the key, never a value."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from batchbridge.config.feed import FeedConfig, LoadedFeed
from batchbridge.errors import ConfigError, FeedNotFoundError


def feed_path(feed: str, config_dir: Path) -> Path:
    """Where the YAML of `feed` lives in `config_dir`."""
    return config_dir / f"{feed}.yaml"


def load_feed(feed: str, config_dir: Path) -> LoadedFeed:
    """Read and validate `config_dir/<feed>.yaml`; errors name the key, never a value."""
    require_config_dir(config_dir)
    path = feed_path(feed, config_dir)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in config_dir.glob("*.yaml"))) or "none"
        raise FeedNotFoundError(f"no feed {feed!r} in {config_dir} (known feeds: {known})")
    return load_feed_file(path)


def load_feed_file(path: Path) -> LoadedFeed:
    """Validate one feed YAML file."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path.name}: expected a mapping at the top level")
    try:
        config = FeedConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path.name}: {problems}") from None
    if config.feed != path.stem:
        raise ConfigError(f"{path.name}: feed name {config.feed!r} must match the file name")
    return LoadedFeed(config=config, path=path.resolve())


def require_config_dir(config_dir: Path) -> None:
    """ConfigError naming the folder when it is not there: never a silent "no feeds"."""
    if not config_dir.is_dir():
        raise ConfigError(
            f"feed config folder {config_dir} does not exist "
            "(--config-dir or BATCHBRIDGE_CONFIG_DIR)"
        )


def list_feeds(config_dir: Path) -> list[str]:
    """Names of every feed YAML in `config_dir` (which must exist)."""
    require_config_dir(config_dir)
    return sorted(p.stem for p in config_dir.glob("*.yaml"))
