"""Remote names: traversal, separators, controls and links are refused, and shown escaped."""

from __future__ import annotations

import stat

import pytest

from batchbridge.connectors.sources.base import RemoteFile
from batchbridge.connectors.sources.names import check_remote_name, display_name
from batchbridge.connectors.sources.stability import ListingEntry, scan_listing
from batchbridge.errors import SourceError, UnsafeRemoteNameError

REGULAR = stat.S_IFREG | 0o644


@pytest.mark.parametrize(
    "name",
    [
        "LAB_RESULTS_20260101.csv.pgp",
        "a",
        "x" * 255,
        "résultats 2026.csv.pgp",
        ".partner-temp.csv",
        "a..b.csv",
    ],
)
def test_safe_names_pass(name: str) -> None:
    check_remote_name(name)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "is empty"),
        (".", "relative directory reference"),
        ("..", "relative directory reference"),
        ("/etc/passwd", "absolute path"),
        ("../x.csv", "path separator"),
        ("in/x.csv", "path separator"),
        ("..\\x.csv", "path separator"),
        ("x\x00.csv", "NUL byte"),
        ("x\n.csv", "control character"),
        ("x\t.csv", "control character"),
        ("\x1b[31mred.csv", "control character"),
        ("x\x7f.csv", "control character"),
        ("x\x85.csv", "control character"),
        ("x\x9b.csv", "control character"),
        ("evil\u202egpj.csv", "bidirectional control"),
        ("bad\udcff.csv", "not valid UTF-8"),
        ("-rf.csv", "starts with '-'"),
        ("x" * 256, "longer than 255 bytes"),
        ("é" * 128, "longer than 255 bytes"),
    ],
)
def test_unsafe_names_are_refused_with_the_problem(name: str, problem: str) -> None:
    with pytest.raises(UnsafeRemoteNameError) as caught:
        check_remote_name(name)
    assert problem in str(caught.value)
    assert caught.value.reason == "unsafe_remote_name"
    assert isinstance(caught.value, SourceError)


def test_message_escapes_hostile_characters() -> None:
    with pytest.raises(UnsafeRemoteNameError) as caught:
        check_remote_name("\x1b]0;pwned\x07\r\nFAKE LOG LINE")
    message = str(caught.value)
    assert message.isprintable()
    assert "\\x1b" in message
    assert "\\r\\n" in message


def test_message_truncates_long_names() -> None:
    with pytest.raises(UnsafeRemoteNameError) as caught:
        check_remote_name("A" * 5000)
    message = str(caught.value)
    assert len(message) < 200
    assert "(5000 chars)" in message


def test_display_name_is_repr_for_short_names() -> None:
    assert display_name("a\nb") == "'a\\nb'"


def entry(name: str, mode: int | None = REGULAR, size: int = 10, mtime: int = 100) -> ListingEntry:
    return ListingEntry(name=name, mode=mode, size=size, mtime=mtime)


def test_scan_keeps_safe_regular_glob_matches_sorted() -> None:
    listing = scan_listing(
        [entry("b.csv.pgp"), entry("a.csv.pgp", size=5), entry("notes.txt")], "*.csv.pgp"
    )
    assert listing.candidates == [
        RemoteFile(name="a.csv.pgp", size=5, mtime=100),
        RemoteFile(name="b.csv.pgp", size=10, mtime=100),
    ]
    assert listing.skipped == []


def test_scan_glob_is_case_sensitive() -> None:
    assert scan_listing([entry("A.CSV.PGP")], "*.csv.pgp").candidates == []


def test_scan_refuses_links_folders_unsafe_names_and_missing_attributes() -> None:
    listing = scan_listing(
        [
            entry("link.csv.pgp", mode=stat.S_IFLNK | 0o777),
            entry("dir.csv.pgp", mode=stat.S_IFDIR | 0o755),
            entry("fifo.csv.pgp", mode=stat.S_IFIFO | 0o644),
            entry("-x.csv.pgp"),
            entry("bell\x07.csv.pgp"),
            entry("untyped.csv.pgp", mode=None),
            ListingEntry(name="nosize.csv.pgp", mode=REGULAR, size=None, mtime=1),
            entry("ok.csv.pgp"),
        ],
        "*.csv.pgp",
    )
    assert [remote.name for remote in listing.candidates] == ["ok.csv.pgp"]
    reasons = {skipped.name: skipped.reason for skipped in listing.skipped}
    assert reasons["link.csv.pgp"] == "is a symbolic link"
    assert reasons["dir.csv.pgp"] == "is not a regular file"
    assert reasons["fifo.csv.pgp"] == "is not a regular file"
    assert "starts with '-'" in reasons["-x.csv.pgp"]
    assert "control character" in reasons["bell\x07.csv.pgp"]
    assert "file type" in reasons["untyped.csv.pgp"]
    assert "size" in reasons["nosize.csv.pgp"]
