"""Feed YAMLs: every shipped feed loads; unknown keys and bad values are errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from batchbridge.config import list_feeds, load_feed, load_feed_file
from batchbridge.errors import ConfigError, FeedNotFoundError
from batchbridge.preflight import check_feed

FEEDS_DIR = Path(__file__).resolve().parents[2] / "deployments" / "feeds"


@pytest.mark.parametrize("feed", list_feeds(FEEDS_DIR))
def test_every_shipped_feed_loads_and_checks(feed: str) -> None:
    loaded = load_feed(feed, FEEDS_DIR)
    assert loaded.config.feed == feed
    assert check_feed(loaded, resolve_secrets=False) == []


def _write(tmp_path: Path, data: dict[str, object], name: str = "lab_results") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _reference() -> dict[str, object]:
    data = yaml.safe_load((FEEDS_DIR / "lab_results.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    data = _reference()
    data["sourec"] = {}
    with pytest.raises(ConfigError, match="sourec"):
        load_feed_file(_write(tmp_path, data))


def test_nested_unknown_key_is_an_error(tmp_path: Path) -> None:
    data = _reference()
    source = data["source"]
    assert isinstance(source, dict)
    source["hostkey"] = "x"
    with pytest.raises(ConfigError, match="hostkey"):
        load_feed_file(_write(tmp_path, data))


def test_secret_values_are_refused(tmp_path: Path) -> None:
    data = _reference()
    data["pseudonym_key"] = "plain-text-secret"
    with pytest.raises(ConfigError, match="pseudonym_key"):
        load_feed_file(_write(tmp_path, data))


def test_feed_name_must_match_file_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must match"):
        load_feed_file(_write(tmp_path, _reference(), name="other"))


def test_unknown_time_zone(tmp_path: Path) -> None:
    data = _reference()
    data["timezone"] = "Mars/Olympus"
    with pytest.raises(ConfigError, match="time zone"):
        load_feed_file(_write(tmp_path, data))


def test_missing_feed_names_known_ones(tmp_path: Path) -> None:
    _write(tmp_path, _reference())
    with pytest.raises(FeedNotFoundError, match="lab_results"):
        load_feed("nope", tmp_path)
