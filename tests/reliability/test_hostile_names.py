"""Hostile remote names and links, on a local folder and a real sshd: refused, never followed."""

from __future__ import annotations

import logging
import os
import stat
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchbridge.config import LocalSourceConfig, SftpSourceConfig
from batchbridge.connectors.sources.base import RemoteFile, Source
from batchbridge.connectors.sources.local import LocalDirSource
from batchbridge.connectors.sources.names import (
    MAX_NAME_BYTES,
    check_remote_name,
    display_name,
    remote_name_problem,
)
from batchbridge.connectors.sources.sftp import SftpSource
from batchbridge.errors import BatchbridgeError, SourceError, UnsafeRemoteNameError
from tests.plugins.sshd import sftp_config_for
from tests.reliability.conftest import RANDOM_IN_OTHER_THREADS, Figures, hostile_settings
from tests.reliability.hostile_harness import hostile_call
from tests.support.sshd import SshdServer

OLD = time.time() - 3600
GLOB = "*"

# Names no check may let through: each escapes the folder, hides what it is, or would
# rewrite a log line or a terminal when printed.
REFUSED: dict[str, str] = {
    "dot": ".",
    "dot-dot": "..",
    "parent": "../x.csv",
    "parent-deep": "../../../../etc/passwd",
    "inner-parent": "a/../../x.csv",
    "current-dir-prefix": "./x.csv",
    "trailing-slash": "x.csv/",
    "absolute": "/etc/passwd",
    "double-slash": "//x.csv",
    "backslash-parent": "..\\x.csv",
    "windows-absolute": "C:\\Windows\\x.csv",
    "nul": "x\x00.csv",
    "newline-log-forgery": "x.csv\n2026-01-01 INFO all files loaded",
    "carriage-return": "x.csv\rFAKE",
    "tab": "x\t.csv",
    "bell": "x\x07.csv",
    "esc-colour": "\x1b[31mred.csv",
    "esc-title": "\x1b]0;pwned\x07x.csv",
    "esc-hyperlink": "\x1b]8;;http://evil.example\x1b\\x.csv\x1b]8;;\x1b\\",
    "esc-clear-screen": "\x1b[2J\x1b[Hx.csv",
    "del": "x\x7f.csv",
    "c1-csi": "x\x9b31m.csv",
    "c1-nel": "x\x85.csv",
    "rtl-override": "invoice\u202egpj.csv",
    "rtl-isolate": "x\u2067.csv",
    "left-to-right-mark": "x\u200e.csv",
    "zero-width-space": "LAB\u200b_1.csv",
    "zero-width-joiner": "LAB\u200d_1.csv",
    "zero-width-non-joiner": "LAB\u200c_1.csv",
    "word-joiner": "LAB\u2060_1.csv",
    "bom-inside": "\ufeffLAB_1.csv",
    "soft-hyphen": "LAB\u00ad_1.csv",
    "invisible-tag-characters": "LAB_1.csv\U000e0041\U000e0042",
    "line-separator": "x\u2028.csv",
    "paragraph-separator": "x\u2029.csv",
    "no-break-space": "LAB\u00a01.csv",
    "ideographic-space": "LAB\u30001.csv",
    "dash-option": "-rf.csv",
    "dash-dash": "--help",
    "empty": "",
    "too-long-ascii": "x" * (MAX_NAME_BYTES + 1),
    "too-long-4-byte-chars": "\U0001f600" * 64,
    "not-utf8-byte": os.fsdecode(b"LAB_\xff.csv"),
    "not-utf8-overlong-dot-dot": os.fsdecode(b"\xc0\xae\xc0\xae"),
    "not-utf8-lone-surrogate-bytes": os.fsdecode(b"\xed\xa0\x80.csv"),
}

# Odd but harmless: one plain component that prints as itself.
ACCEPTED: dict[str, str] = {
    "spaces": "LAB RESULTS 2026.csv",
    "accents": "résultats_été.csv",
    "cjk": "検査結果.csv",
    "emoji": "lab_\U0001f9ea.csv",
    "dots-inside": "a..b.csv",
    "leading-dot": ".hidden.csv",
    "division-slash-lookalike": "..\u2215etc\u2215passwd",
    "fullwidth-solidus-lookalike": "..\uff0fetc",
    "max-length": "x" * MAX_NAME_BYTES,
    "max-length-multibyte": "é" * (MAX_NAME_BYTES // 2),
    "shell-metacharacters": "$(reboot);`id`|&.csv",
    "quotes": 'it\'s "quoted".csv',
    "percent-format": "%s%n%x.csv",
}


def check_refusal(exc: BatchbridgeError) -> None:
    """The message escapes and bounds the name: printable, one line, short."""
    message = str(exc)
    assert exc.reason == "unsafe_remote_name"
    assert message.isprintable(), repr(message)
    assert len(message) < 800, len(message)  # 64 characters shown, each escaped


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_hostile_name_is_refused_with_a_printable_message(
    case: str, reliability_figures: Figures
) -> None:
    reliability_figures.add("hostile_inputs")
    with pytest.raises(UnsafeRemoteNameError) as caught:
        check_remote_name(REFUSED[case])
    check_refusal(caught.value)


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_odd_but_plain_name_is_accepted_and_stays_in_staging(
    case: str, tmp_path: Path, reliability_figures: Figures
) -> None:
    reliability_figures.add("hostile_inputs")
    name = ACCEPTED[case]
    check_remote_name(name)
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


@RANDOM_IN_OTHER_THREADS
@hostile_settings(quick=300, full=3000)
@given(
    name=st.one_of(
        st.text(max_size=80),
        st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=300),
        st.binary(max_size=80).map(os.fsdecode),  # names as a listing decodes them
        st.lists(st.sampled_from(["..", ".", "/", "\\", "x", "\x1b", "\u202e", "\u200b"])).map(
            "".join
        ),
    )
)
def test_any_name_is_refused_or_a_single_plain_component(
    name: str, reliability_figures: Figures
) -> None:
    refused = hostile_call(
        reliability_figures,
        lambda: check_remote_name(name),
        UnsafeRemoteNameError,
        check_refusal,
        subject="a name",
    )
    if refused is not None:
        assert remote_name_problem(name) is not None
        return
    # Accepted: it names exactly one entry inside the folder and prints as itself.
    assert name not in ("", ".", "..") and "/" not in name and "\\" not in name
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    hidden = {"Cc", "Cf", "Cs", "Zl", "Zp"}
    assert not any(unicodedata.category(ch) in hidden for ch in name), ascii(name)
    assert display_name(name).isprintable()
    staging = Path("/staging-root")
    assert (staging / name).parent == staging
    assert os.path.normpath(staging / name).startswith("/staging-root/")


# -- a folder full of traps --------------------------------------------------------------


def hostile_names_on_disk() -> dict[str, bytes]:
    """Every REFUSED name a POSIX file system can hold (not '/', not NUL), as bytes."""
    made: dict[str, bytes] = {}
    for case, name in REFUSED.items():
        raw = os.fsencode(name)
        if not raw or b"/" in raw or b"\x00" in raw or raw in (b".", b".."):
            continue
        if len(raw) > 255:  # longer than the file system allows
            continue
        made[case] = raw
    return made


def build_trap_folder(folder: Path, outside: Path) -> dict[str, str]:
    """Fill `folder` with two good files and every kind of trap; return good name -> content."""
    folder.mkdir(parents=True, exist_ok=True)
    good = {"GOOD_1.csv": "one", "GOOD_2.csv": "two"}
    for name, content in good.items():
        write_old(folder / name, content.encode())
    raw_folder = os.fsencode(folder)
    for raw in hostile_names_on_disk().values():
        path = os.path.join(raw_folder, raw)
        with open(path, "wb") as handle:
            handle.write(b"hostile")
        os.utime(path, (OLD, OLD))
    secret = outside / "secret.csv"
    write_old(secret, b"outside the drop folder")
    links = {
        "link-outside.csv": secret,
        "link-passwd.csv": Path("/etc/passwd"),
        "link-dangling.csv": outside / "nothing-here.csv",
        "link-to-dir.csv": outside,
        "link-to-root.csv": Path("/"),
        "link-inside.csv": folder / "GOOD_1.csv",
        "link-relative-up.csv": Path("../secret.csv"),
        "link-loop.csv": folder / "link-loop.csv",
    }
    for name, target in links.items():
        (folder / name).symlink_to(target)
    (folder / "folder.csv").mkdir()
    os.mkfifo(folder / "fifo.csv")  # opening it would block forever
    return good


def write_old(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.utime(path, (OLD, OLD))


TRAP_COUNT = len(hostile_names_on_disk()) + 8 + 2  # names, links, the folder and the FIFO


def check_source_refuses_traps(
    source: Source,
    good: dict[str, str],
    staging: Path,
    caplog: pytest.LogCaptureFixture,
    figures: Figures,
) -> None:
    """Only the good files are listed and fetched; every refusal is logged printably."""
    figures.add("hostile_inputs", TRAP_COUNT)
    with caplog.at_level(logging.WARNING):
        ready = source.list_ready()
    assert sorted(r.name for r in ready) == sorted(good)
    skipped = [r.getMessage() for r in caplog.records if "skipping entry" in r.getMessage()]
    assert len(skipped) == TRAP_COUNT, "\n".join(skipped)
    for message in skipped:
        assert message.isprintable(), repr(message)
        assert len(message) < 400
    for remote in ready:
        fetched = source.fetch(remote, staging)
        assert fetched.local_path.read_text() == good[remote.name]
    assert sorted(p.name for p in staging.iterdir()) == sorted(good)

    # A caller that skips the listing gets the same answer, before anything is opened.
    for case, name in REFUSED.items():
        figures.add("hostile_inputs")
        with pytest.raises(UnsafeRemoteNameError) as caught:
            source.fetch(RemoteFile(name=name, size=7, mtime=int(OLD)), staging)
        check_refusal(caught.value)
        del case
    # And links stay links even when named directly.
    for name in ("link-outside.csv", "link-passwd.csv", "link-to-dir.csv", "fifo.csv"):
        figures.add("hostile_inputs")
        with pytest.raises(SourceError):
            source.fetch(RemoteFile(name=name, size=7, mtime=int(OLD)), staging)
    assert sorted(p.name for p in staging.iterdir()) == sorted(good)


def test_local_folder_of_traps(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, reliability_figures: Figures
) -> None:
    good = build_trap_folder(tmp_path / "drop", tmp_path)
    source = LocalDirSource(LocalSourceConfig(path=tmp_path / "drop", glob=GLOB))
    check_source_refuses_traps(source, good, tmp_path / "staging", caplog, reliability_figures)


@pytest.fixture
def sftp_traps(
    sshd_server: SshdServer, tmp_path: Path
) -> Iterator[tuple[SftpSourceConfig, dict[str, str]]]:
    config = sftp_config_for(sshd_server, glob=GLOB, stable_seconds=0)
    good = build_trap_folder(Path(config.remote_dir), Path(config.remote_dir).parent)
    yield config, good


@pytest.mark.integration
def test_sftp_folder_of_traps(
    sftp_traps: tuple[SftpSourceConfig, dict[str, str]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    reliability_figures: Figures,
) -> None:
    config, good = sftp_traps
    with SftpSource(config, backoff_seconds=0.01) as source:
        check_source_refuses_traps(source, good, tmp_path / "staging", caplog, reliability_figures)


@pytest.mark.integration
def test_sftp_mark_processed_refuses_hostile_names(
    sshd_server: SshdServer, reliability_figures: Figures
) -> None:
    config = sftp_config_for(sshd_server, glob=GLOB, processed_dir="processed")
    outside = Path(config.remote_dir).parent / "victim.csv"
    write_old(outside, b"must stay")
    with SftpSource(config, backoff_seconds=0.01) as source:
        for name in ("../victim.csv", "/etc/passwd", "..", "x\x1b[2J.csv"):
            reliability_figures.add("hostile_inputs")
            with pytest.raises(UnsafeRemoteNameError):
                source.mark_processed(RemoteFile(name=name, size=1, mtime=int(OLD)))
    assert outside.read_bytes() == b"must stay"
    assert not (Path(config.remote_dir) / "processed").exists()


def test_file_swapped_for_a_link_after_listing_is_refused(
    tmp_path: Path, reliability_figures: Figures
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    write_old(drop / "LAB_1.csv", b"1234567")
    source = LocalDirSource(LocalSourceConfig(path=drop, glob=GLOB))
    (remote,) = source.list_ready()
    (drop / "LAB_1.csv").unlink()
    (drop / "LAB_1.csv").symlink_to("/etc/passwd")
    reliability_figures.add("hostile_inputs")
    with pytest.raises(UnsafeRemoteNameError, match="symbolic link"):
        source.fetch(remote, tmp_path / "staging")
    assert list((tmp_path / "staging").iterdir()) == []


def test_staging_entry_planted_as_a_link_is_not_followed(
    tmp_path: Path, reliability_figures: Figures
) -> None:
    # Someone with access to staging plants the final name as a link to a file elsewhere:
    # the fetch replaces the link itself, never writes through it.
    drop, staging, victim = tmp_path / "drop", tmp_path / "staging", tmp_path / "victim"
    drop.mkdir()
    staging.mkdir(mode=0o700)
    write_old(drop / "LAB_1.csv", b"new data")
    victim.write_bytes(b"untouched")
    (staging / "LAB_1.csv").symlink_to(victim)
    source = LocalDirSource(LocalSourceConfig(path=drop, glob=GLOB))
    reliability_figures.add("hostile_inputs")
    fetched = source.fetch(source.list_ready()[0], staging)
    assert victim.read_bytes() == b"untouched"
    assert not stat.S_ISLNK(os.lstat(fetched.local_path).st_mode)
    assert fetched.local_path.read_bytes() == b"new data"
