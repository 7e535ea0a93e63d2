"""File contracts: each clause fails the file with a reason an operator can act on."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from batchbridge.config import ContractWindow, FileContractConfig
from batchbridge.connectors.sources.base import RemoteFile
from batchbridge.errors import ContractViolationError
from batchbridge.validations.contract import (
    check_declared_count,
    check_listing,
    check_manifest,
    in_window,
    marker_name,
)

NAME = "roster_20261116.txt.gpg"
# 2026-11-16 08:30 UTC = 03:30 in New York
MTIME = int(datetime(2026, 11, 16, 8, 30, tzinfo=UTC).timestamp())


def remote(name: str = NAME, size: int = 5_000) -> RemoteFile:
    return RemoteFile(name=name, size=size, mtime=MTIME)


def violation(contract: FileContractConfig, file: RemoteFile) -> str:
    with pytest.raises(ContractViolationError) as caught:
        check_listing(contract, file, timezone="America/New_York")
    assert caught.value.reason == "contract_violated"
    return str(caught.value)


def test_an_empty_contract_accepts_anything() -> None:
    check_listing(FileContractConfig(), remote(size=0), timezone="UTC")
    check_declared_count(FileContractConfig(), None)


def test_name_size_and_window_clauses() -> None:
    pattern = FileContractConfig(name_pattern=r"roster_20[0-9]{6}\.txt\.gpg")
    check_listing(pattern, remote(), timezone="UTC")
    assert "does not match the contract pattern" in violation(pattern, remote("roster_x.txt.gpg"))
    sizes = FileContractConfig(min_bytes=100, max_bytes=10_000)
    assert "below the contract minimum 100" in violation(sizes, remote(size=99))
    assert "above the contract maximum 10000" in violation(sizes, remote(size=10_001))
    night = FileContractConfig(arrival_window=ContractWindow(start="22:00", end="04:00"))
    check_listing(night, remote(), timezone="America/New_York")  # 03:30 local
    morning = FileContractConfig(arrival_window=ContractWindow(start="05:00", end="09:00"))
    assert "2026-11-16 03:30 (America/New_York), outside" in violation(morning, remote())


def test_window_wraps_midnight() -> None:
    window = ContractWindow(start="23:00", end="01:00")
    assert in_window(window, datetime(2026, 1, 1, 23, 30, tzinfo=UTC), "UTC")
    assert in_window(window, datetime(2026, 1, 1, 0, 30, tzinfo=UTC), "UTC")
    assert not in_window(window, datetime(2026, 1, 1, 12, 0, tzinfo=UTC), "UTC")


def test_required_row_count() -> None:
    contract = FileContractConfig(require_row_count=True)
    check_declared_count(contract, 10)
    with pytest.raises(ContractViolationError, match="requires a row count"):
        check_declared_count(contract, None)


def test_manifest_must_list_the_downloaded_bytes() -> None:
    digest = hashlib.sha256(b"ciphertext").hexdigest()
    check_manifest(f"{digest}  {NAME}\n".encode(), name=NAME, sha256=digest)
    check_manifest(f"{digest.upper()} *{NAME}\r\n".encode(), name=NAME, sha256=digest)
    with pytest.raises(ContractViolationError, match="differs"):
        check_manifest(f"{'0' * 64}  {NAME}\n".encode(), name=NAME, sha256=digest)
    with pytest.raises(ContractViolationError, match="no sha256 line"):
        check_manifest(f"{digest}  other.gpg\n".encode(), name=NAME, sha256=digest)
    with pytest.raises(ContractViolationError, match="not UTF-8"):
        check_manifest(b"\xff\xfe", name=NAME, sha256=digest)


def test_marker_names() -> None:
    assert marker_name(FileContractConfig(), NAME) is None
    assert marker_name(FileContractConfig(marker="done"), NAME) == NAME + ".done"
    assert marker_name(FileContractConfig(marker="manifest"), NAME) == NAME + ".manifest"


def test_a_bad_pattern_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="not a valid regular expression"):
        FileContractConfig(name_pattern="roster_[")
