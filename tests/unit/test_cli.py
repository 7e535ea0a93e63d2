"""The command line: feed listing and checks, exit codes from the error tree."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from batchbridge.cli.app import app, exit_code_lines, main
from batchbridge.errors import BatchbridgeError

FEEDS_DIR = Path(__file__).resolve().parents[2] / "deployments" / "feeds"


def test_feeds_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["feeds", "list", "--config-dir", str(FEEDS_DIR)]) == 0
    assert "lab_results" in capsys.readouterr().out


def test_feeds_check_names_missing_secrets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACME_LAB_PGP_PRIVATE_KEY", raising=False)
    assert main(["feeds", "check", "lab_results", "--config-dir", str(FEEDS_DIR)]) == 2
    out = capsys.readouterr().out
    assert "env:ACME_LAB_PGP_PRIVATE_KEY" in out


def test_unknown_feed_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "nope", "--config-dir", str(FEEDS_DIR)]) == 2
    err = capsys.readouterr().err
    assert "feed_not_found" in err and "lab_results" in err


def _parameters(command: Any, path: tuple[str, ...] = ("batchbridge",)) -> Iterator[Any]:
    for param in command.params:
        yield path, param
    for name, sub in getattr(command, "commands", {}).items():
        yield from _parameters(sub, (*path, name))


def test_every_argument_and_option_has_help_text() -> None:
    missing = [
        f"{' '.join(path)} {param.name}"
        for path, param in _parameters(typer.main.get_command(app))
        if param.name != "help" and not getattr(param, "help", None)
    ]
    assert missing == []


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("batchbridge ")


def test_exit_codes_come_from_the_error_tree() -> None:
    lines = exit_code_lines()
    codes = [int(line.split(":")[0]) for line in lines]
    assert codes == sorted(set(codes)) and codes[0] == 0
    assert {e.exit_code for e in BatchbridgeError.__subclasses__()} <= set(codes)
    assert not any("Raised" in line for line in lines)


def test_an_unknown_option_is_one_usage_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["feeds", "list", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error [usage]: No such option")


def test_a_missing_config_folder_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["feeds", "list", "--config-dir", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error [config_invalid]: feed config folder /nonexistent does not exist "
        "(--config-dir or BATCHBRIDGE_CONFIG_DIR)\n"
    )


def test_an_unexpected_error_prints_its_class_only(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_: object, **__: object) -> None:
        raise ValueError("Zebulonquix")  # a library message quoting a value

    monkeypatch.setattr("batchbridge.cli.feeds.list_feeds", explode)
    monkeypatch.delenv("BATCHBRIDGE_DEBUG", raising=False)
    assert main(["feeds", "list", "--config-dir", str(FEEDS_DIR)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error [internal]: unexpected ValueError") and "Zebulonquix" not in err


@pytest.mark.parametrize("command", [["audit", "verify"], ["runs", "list"], ["report", "abcd1234"]])
def test_read_commands_on_a_missing_ledger_are_an_error_naming_it(
    command: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = tmp_path / "nowhere" / "x.db"
    monkeypatch.setenv("BATCHBRIDGE_DATABASE_URL", f"sqlite:///{missing}")
    monkeypatch.setenv("BATCHBRIDGE_ACTOR", "dana.steward@acme-health.example")
    stewards = tmp_path / "stewards.yaml"
    stewards.write_text("stewards: {}\n", encoding="utf-8")
    monkeypatch.setenv("BATCHBRIDGE_STEWARDS_FILE", str(stewards))
    assert main([*command, "--config-dir", str(FEEDS_DIR)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"error [ledger_not_found]: no ledger at sqlite:///{missing}")
    assert not missing.parent.exists()  # nothing created, not even the folder


def test_a_missing_stewards_file_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchbridge.ledger.store import LedgerStore

    ledger = tmp_path / "ledger.db"
    LedgerStore.from_url(f"sqlite:///{ledger}").engine.dispose()
    monkeypatch.setenv("BATCHBRIDGE_DATABASE_URL", f"sqlite:///{ledger}")
    monkeypatch.setenv("BATCHBRIDGE_ACTOR", "dana.steward@acme-health.example")
    monkeypatch.setenv("BATCHBRIDGE_STEWARDS_FILE", str(tmp_path / "nope.yaml"))
    assert main(["quarantine", "list", "--config-dir", str(FEEDS_DIR)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "nope.yaml") in err
    assert err.startswith("error [stewards_file_missing]:")


def test_a_mistyped_cron_is_refused_at_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (FEEDS_DIR / "lab_results.yaml").read_text(encoding="utf-8")
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    (feeds / "lab_results.yaml").write_text(
        text.replace('cron: "0 2 * * *"', "cron: banana").replace(
            "cron: '0 2 * * *'", "cron: banana"
        ),
        encoding="utf-8",
    )
    assert main(["feeds", "list", "--config-dir", str(feeds)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "schedule.cron" in err and "banana" not in err.split(":")[0]
