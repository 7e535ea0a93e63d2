"""Secret references resolve at the point of use; a missing one names itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchbridge.connectors.secrets import resolve_secret
from batchbridge.errors import ConfigError, SecretNotFoundError


def test_env_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BB_TEST_SECRET", "s3cret")
    assert resolve_secret("env:BB_TEST_SECRET").get_secret_value() == "s3cret"


def test_missing_env_secret_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BB_MISSING", raising=False)
    with pytest.raises(SecretNotFoundError, match="env:BB_MISSING"):
        resolve_secret("env:BB_MISSING")


def test_empty_env_secret_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BB_EMPTY", "")
    with pytest.raises(SecretNotFoundError):
        resolve_secret("env:BB_EMPTY")


def test_file_secret_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "key.txt").write_text("abc", encoding="utf-8")
    assert resolve_secret("file:key.txt", base_dir=tmp_path).get_secret_value() == "abc"


def test_missing_file_secret(tmp_path: Path) -> None:
    with pytest.raises(SecretNotFoundError, match="file:nope"):
        resolve_secret("file:nope", base_dir=tmp_path)


def test_unknown_scheme() -> None:
    with pytest.raises(ConfigError, match="vault"):
        resolve_secret("vault:x")


def test_secret_is_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BB_TEST_SECRET", "s3cret")
    assert "s3cret" not in repr(resolve_secret("env:BB_TEST_SECRET"))
