"""Reading feed YAMLs: find, parse and validate them; errors name the key, never a value."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import ValidationError
from yaml.reader import ReaderError

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


# A quoted piece of a YAML problem worth keeping: one character ('\t', ':') or a token
# name ('<stream end>'). Longer ones are alias, anchor or tag names taken from the file.
_HARMLESS_QUOTE = re.compile(r"^.{0,2}$|^<[a-z ]+>$")
_QUOTED = re.compile(r"'([^']*)'")


def _yaml_problem(problem: str) -> str:
    # An alias, anchor or tag name is text from the file: `password: *hunter2` says
    # "found undefined alias 'hunter2'". A mistyped secret must not reach a log.
    return _QUOTED.sub(
        lambda m: m.group(0) if _HARMLESS_QUOTE.match(m.group(1)) else "(not shown)", problem
    )


def _position(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    column = index - text.rfind("\n", 0, index)  # rfind is -1 on the first line
    return f"line {line}, column {column}"


def read_yaml(path: Path, label: str | None = None) -> object:
    """Parse a YAML file; ConfigError naming `label` (default: the file name) and the place.

    Syntax errors give line and column (1-based) and YAML's problem, never the offending
    line: it may hold a value that must not be logged.
    """
    label = label or path.name
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{label}: not UTF-8 text (at byte offset {exc.start})") from None
    except OSError as exc:
        raise ConfigError(
            f"{label}: cannot be read ({exc.strerror or type(exc).__name__})"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = _yaml_problem(
            f"{exc.problem} ({exc.context})"
            if exc.problem and exc.context
            else exc.problem or exc.context or "syntax error"
        )
        raise ConfigError(f"{label}: not valid YAML{where}: {problem}") from None
    except ReaderError as exc:
        raise ConfigError(
            f"{label}: not valid YAML at {_position(text, exc.position)}: "
            f"character #x{exc.character:04x} is not allowed"
        ) from None
    except (yaml.YAMLError, ValueError) as exc:
        # ValueError: a tagged scalar that does not convert (`!!int abc`) quotes the text.
        raise ConfigError(f"{label}: not valid YAML ({type(exc).__name__})") from None


def describe_validation_error(exc: ValidationError) -> str:
    """Pydantic's errors as `place: problem; …`, places dotted as written in the YAML."""
    problems = []
    for err in exc.errors():
        place = ".".join(str(p) for p in err["loc"]) or "top level"
        problems.append(f"{place}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def load_feed_file(path: Path) -> LoadedFeed:
    """Validate one feed YAML file."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path.name}: expected a mapping at the top level")
    try:
        config = FeedConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path.name}: {describe_validation_error(exc)}") from None
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
