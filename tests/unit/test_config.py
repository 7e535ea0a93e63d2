"""Feed YAMLs: every shipped feed loads; unknown keys and bad values are errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from batchbridge.config import list_feeds, load_feed, load_feed_file
from batchbridge.errors import ConfigError, FeedNotFoundError
from batchbridge.monitoring.preflight import check_feed

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


def _config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_feed_file(path)
    assert caught.value.exit_code == 2
    return str(caught.value)


def _with_schedule(tmp_path: Path, cron: str, timezone: str = "Europe/Berlin") -> Path:
    data = _reference()
    data["schedule"] = {"cron": cron, "timezone": timezone}
    return _write(tmp_path, data)


CRON_EXAMPLE = "e.g. '0 2 * * *' is 02:00 daily"


@pytest.mark.parametrize(
    ("cron", "why"),
    [
        ("banana", "expected 5 fields (minute hour day-of-month month day-of-week), found 1"),
        ("0 2 * * * *", "expected 5 fields (minute hour day-of-month month day-of-week), found 6"),
        ("61 2 * * *", "bad minute field"),
        ("0 2 * * funday", "bad day-of-week field"),
        ("0 2 30 2 *", "bad day-of-month field"),
        ("0 2 LW * *", "'LW' (last weekday) in day-of-month is not supported by Prefect"),
        ("0 2 * * 5L", "'<day>L' (last such weekday) in day-of-week is not supported by Prefect"),
    ],
)
def test_schedule_cron_is_checked_at_load(tmp_path: Path, cron: str, why: str) -> None:
    message = _config_error(_with_schedule(tmp_path, cron))
    assert message == f"lab_results.yaml: schedule.cron: not a cron schedule: {why}; {CRON_EXAMPLE}"


@pytest.mark.parametrize("cron", ["0 2 * * *", "30 1 * * mon-fri", "0 */6 * * *", "@daily"])
def test_schedule_cron_accepts_usual_schedules(tmp_path: Path, cron: str) -> None:
    schedule = load_feed_file(_with_schedule(tmp_path, cron)).config.schedule
    assert schedule is not None
    assert schedule.cron == cron


CRON_CORPUS = [
    "0 2 * * *", "* * * * *", "0 2 * * 7", "0 2 * * sun", "0 2 * jan *", "0 2 L * *",
    "0 2 LW * *", "0 2 * * 5L", "0 2 * * 1#2", "0 2 * * mon-fri", "0 2 * * fri-mon",
    "0 2 1-31/2 * *", "0 2 30 2 *", "0 2 * * * *", "@daily", "@hourly", "@weekly",
    "@monthly", "@yearly", "@annually", "@midnight", "@reboot", "H 2 * * *", "0 2 ? * *",
    "0,30 2 * * *", "5/15 * * * *", "0 2 * * MON#1", "0 2 * * 0-7", "0 2 29 2 *", "",
]  # fmt: skip


def test_every_cron_a_feed_accepts_prefect_accepts() -> None:
    # Prefect parses with its vendored croniter, we with cronsim: prove the two agree on
    # whatever we let through (we may refuse more, never less).
    from prefect.client.schemas.schedules import CronSchedule

    from batchbridge.config.feed import cron_problem

    accepted = [cron for cron in CRON_CORPUS if cron_problem(cron) is None]
    assert "0 2 * * *" in accepted and "@daily" in accepted
    for cron in accepted:
        CronSchedule(cron=cron, timezone="Europe/Berlin")


@pytest.mark.parametrize("zone", ["Mars/Olympus", "America", "utc"])
def test_schedule_timezone_is_checked_like_the_feed_timezone(tmp_path: Path, zone: str) -> None:
    message = _config_error(_with_schedule(tmp_path, "0 2 * * *", timezone=zone))
    assert message == (
        f"lab_results.yaml: schedule.timezone: unknown time zone {zone!r} "
        "(an IANA name, e.g. Europe/Berlin)"
    )


def test_feed_timezone_that_is_a_zone_folder_is_refused(tmp_path: Path) -> None:
    data = _reference()
    data["timezone"] = "America"
    message = _config_error(_write(tmp_path, data))
    assert message.startswith("lab_results.yaml: timezone: unknown time zone 'America'")


def _raw(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab_results.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = _raw(tmp_path, "feed: lab_results\ntenant: acme_lab\n  schema: lab_results\n")
    assert _config_error(path) == (
        "lab_results.yaml: not valid YAML at line 3, column 9: mapping values are not allowed here"
    )


def test_yaml_error_never_quotes_the_offending_line(tmp_path: Path) -> None:
    path = _raw(tmp_path, "feed: lab_results\npseudonym_key: Sup3rS3cret: oops\n")
    message = _config_error(path)
    assert message == (
        "lab_results.yaml: not valid YAML at line 2, column 27: mapping values are not allowed here"
    )
    assert "Sup3rS3cret" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("feed: x\npseudonym_key: *Sup3rS3cret\n", "line 2, column 16: found undefined alias"),
        ("feed: x\npseudonym_key: !Sup3rS3cret x\n", "line 2, column 16: could not determine"),
        ("a: &Sup3rS3cret 1\nb: &Sup3rS3cret 2\n", "line 2, column 4: second occurrence"),
    ],
)
def test_yaml_problem_hides_names_taken_from_the_file(
    tmp_path: Path, text: str, expected: str
) -> None:
    message = _config_error(_raw(tmp_path, text))
    assert expected in message
    assert "(not shown)" in message
    assert "Sup3rS3cret" not in message


def test_yaml_keeps_single_characters_and_token_names(tmp_path: Path) -> None:
    assert _config_error(_raw(tmp_path, "a:\n\t- b\n")) == (
        "lab_results.yaml: not valid YAML at line 2, column 1: found character '\\t' that "
        "cannot start any token (while scanning for the next token)"
    )
    assert _config_error(_raw(tmp_path, "a: [1, 2\n")) == (
        "lab_results.yaml: not valid YAML at line 2, column 1: expected ',' or ']', but got "
        "'<stream end>' (while parsing a flow sequence)"
    )


def test_yaml_scalar_that_does_not_convert_is_not_quoted(tmp_path: Path) -> None:
    message = _config_error(_raw(tmp_path, "feed: lab_results\nport: !!int Sup3rS3cret\n"))
    assert message == "lab_results.yaml: not valid YAML (ValueError)"


def test_yaml_control_character_gives_its_place(tmp_path: Path) -> None:
    assert _config_error(_raw(tmp_path, "feed: lab_results\nhost: a\x07b\n")) == (
        "lab_results.yaml: not valid YAML at line 2, column 8: character #x0007 is not allowed"
    )


def test_feed_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "lab_results.yaml"
    path.write_bytes(b"feed: lab_\xffresults\n")
    assert _config_error(path) == "lab_results.yaml: not UTF-8 text (at byte offset 10)"


def test_missing_config_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "feeds"
    expected = (
        f"feed config folder {missing} does not exist (--config-dir or BATCHBRIDGE_CONFIG_DIR)"
    )
    for call in (lambda: list_feeds(missing), lambda: load_feed("lab_results", missing)):
        with pytest.raises(ConfigError) as caught:
            call()
        assert str(caught.value) == expected
        assert not isinstance(caught.value, FeedNotFoundError)
        assert caught.value.exit_code == 2


def test_config_folder_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "feeds"
    not_a_folder.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="does not exist"):
        list_feeds(not_a_folder)


def test_empty_config_folder_lists_no_feeds(tmp_path: Path) -> None:
    assert list_feeds(tmp_path) == []
