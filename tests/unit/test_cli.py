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
