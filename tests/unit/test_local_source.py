"""LocalDirSource (the shipped fake), the stability filter and the source registry."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

import pytest

from batchbridge.config import LocalSourceConfig, SftpSourceConfig, load_feed_file
from batchbridge.connectors.sources.base import RemoteFile, Source
from batchbridge.connectors.sources.local import LocalDirSource
from batchbridge.connectors.sources.registry import (
    SOURCE_KINDS,
    open_source,
    open_source_config,
)
from batchbridge.connectors.sources.sftp import SftpSource
from batchbridge.connectors.sources.stability import stable_entries
from batchbridge.errors import (
    ConfigError,
    IncompleteDownloadError,
    SourceError,
    UnsafeRemoteNameError,
)

FEEDS_DIR = Path(__file__).resolve().parents[2] / "deployments" / "feeds"
NOW = 1_800_000_000.0


class FrozenClock:
    """A clock that only moves when told to; `sleep` advances it and runs a hook."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self.on_sleep: list[object] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        for hook in self.on_sleep:
            assert callable(hook)
            hook()


def put(folder: Path, name: str, data: bytes, mtime: float = NOW - 3600) -> Path:
    path = folder / name
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


def make_source(inbox: Path, clock: FrozenClock, **overrides: object) -> LocalDirSource:
    values: dict[str, object] = {"path": inbox, "glob": "*.csv.pgp", "stable_seconds": 5}
    values.update(overrides)
    return LocalDirSource(LocalSourceConfig(**values), clock=clock, sleep=clock.sleep)


# -- stability (pure) ---------------------------------------------------------------


def test_stable_entries_keeps_unchanged_old_enough_files_sorted() -> None:
    first = [RemoteFile("b", 10, 100), RemoteFile("a", 5, 100), RemoteFile("c", 1, 100)]
    second = [RemoteFile("c", 2, 100), RemoteFile("b", 10, 100), RemoteFile("a", 5, 100)]
    ready = stable_entries(first, second, now=200, min_age_seconds=100)
    assert [remote.name for remote in ready] == ["a", "b"]


def test_stable_entries_drops_changed_mtime_new_files_and_young_files() -> None:
    first = [RemoteFile("touched", 10, 100), RemoteFile("young", 10, 150)]
    second = [
        RemoteFile("touched", 10, 101),
        RemoteFile("young", 10, 150),
        RemoteFile("appeared", 10, 100),
    ]
    assert stable_entries(first, second, now=200, min_age_seconds=60) == []


def test_stable_entries_zero_min_age_tolerates_server_clock_ahead() -> None:
    files = [RemoteFile("ahead", 10, 500)]
    assert stable_entries(files, files, now=200, min_age_seconds=0) == files


# -- listing ------------------------------------------------------------------------


def test_lists_glob_matches_sorted_and_skips_links_dirs_and_unsafe_names(
    inbox: Path, clock: FrozenClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    put(inbox, "B.csv.pgp", b"bb")
    put(inbox, "A.csv.pgp", b"a")
    put(inbox, "notes.txt", b"n")
    put(inbox, "evil\x1b[2J.csv.pgp", b"e")
    outside = put(tmp_path, "secret.csv.pgp", b"s")
    (inbox / "link.csv.pgp").symlink_to(outside)
    (inbox / "dir.csv.pgp").mkdir()
    with caplog.at_level(logging.WARNING):
        ready = make_source(inbox, clock).list_ready()
    assert [(r.name, r.size) for r in ready] == [("A.csv.pgp", 1), ("B.csv.pgp", 2)]
    warnings = "\n".join(record.getMessage() for record in caplog.records)
    assert "'link.csv.pgp'" in warnings and "symbolic link" in warnings
    assert "'dir.csv.pgp'" in warnings
    assert "\\x1b[2J" in warnings and "\x1b" not in warnings


def test_file_still_growing_between_listings_is_not_ready(inbox: Path, clock: FrozenClock) -> None:
    growing = put(inbox, "growing.csv.pgp", b"part")
    put(inbox, "done.csv.pgp", b"whole")

    def append() -> None:
        mtime = os.stat(growing).st_mtime
        with growing.open("ab") as handle:
            handle.write(b"more")
        os.utime(growing, (mtime, mtime))  # size alone must be enough to notice

    clock.on_sleep.append(append)
    ready = make_source(inbox, clock).list_ready()
    assert [r.name for r in ready] == ["done.csv.pgp"]
    assert clock.sleeps == [5]


def test_recently_modified_file_waits_for_min_age(inbox: Path, clock: FrozenClock) -> None:
    put(inbox, "fresh.csv.pgp", b"x", mtime=NOW - 30)
    source = make_source(inbox, clock, min_age_seconds=60, stable_seconds=0)
    assert source.list_ready() == []
    clock.now += 30
    assert [r.name for r in source.list_ready()] == ["fresh.csv.pgp"]


def test_no_pause_when_nothing_matches(inbox: Path, clock: FrozenClock) -> None:
    put(inbox, "other.txt", b"x")
    assert make_source(inbox, clock).list_ready() == []
    assert clock.sleeps == []


def test_missing_folder_is_a_source_error(tmp_path: Path, clock: FrozenClock) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        make_source(tmp_path / "nope", clock).list_ready()


# -- fetch --------------------------------------------------------------------------


def test_fetch_copies_into_private_staging_with_sha256(
    inbox: Path, clock: FrozenClock, tmp_path: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    put(inbox, "A.csv.pgp", data)
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o755)
    os.chmod(staging, 0o755)  # noqa: S103 - fetch must tighten it
    source = make_source(inbox, clock)
    (remote,) = source.list_ready()
    fetched = source.fetch(remote, staging)
    assert fetched.name == "A.csv.pgp"
    assert fetched.local_path == staging / "A.csv.pgp"
    assert fetched.size == len(data)
    assert fetched.sha256 == hashlib.sha256(data).hexdigest()
    assert fetched.local_path.read_bytes() == data
    assert stat.S_IMODE(staging.stat().st_mode) == 0o700
    assert stat.S_IMODE(fetched.local_path.stat().st_mode) == 0o600
    assert sorted(p.name for p in staging.iterdir()) == ["A.csv.pgp"]


def test_fetch_creates_missing_staging_as_0700(
    inbox: Path, clock: FrozenClock, tmp_path: Path
) -> None:
    put(inbox, "A.csv.pgp", b"abc")
    staging = tmp_path / "run" / "staging"
    source = make_source(inbox, clock)
    source.fetch(source.list_ready()[0], staging)
    assert stat.S_IMODE(staging.stat().st_mode) == 0o700


def test_fetch_refuses_a_size_different_from_the_listing_and_deletes_partial(
    inbox: Path, clock: FrozenClock, tmp_path: Path
) -> None:
    path = put(inbox, "A.csv.pgp", b"abcdef")
    source = make_source(inbox, clock)
    (remote,) = source.list_ready()
    staging = tmp_path / "staging"
    path.write_bytes(b"abc")  # truncated after listing
    with pytest.raises(IncompleteDownloadError, match="got 3 of the 6 bytes"):
        source.fetch(remote, staging)
    path.write_bytes(b"abcdef-and-more")  # grew after listing
    with pytest.raises(IncompleteDownloadError, match="larger than the 6 bytes"):
        source.fetch(remote, staging)
    assert list(staging.iterdir()) == []


def test_fetch_refuses_a_file_replaced_by_a_link(
    inbox: Path, clock: FrozenClock, tmp_path: Path
) -> None:
    path = put(inbox, "A.csv.pgp", b"abc")
    source = make_source(inbox, clock)
    (remote,) = source.list_ready()
    path.unlink()
    path.symlink_to(put(tmp_path, "outside", b"abc"))
    with pytest.raises(UnsafeRemoteNameError, match="symbolic link"):
        source.fetch(remote, tmp_path / "staging")


def test_fetch_refuses_unsafe_names_before_touching_disk(
    inbox: Path, clock: FrozenClock, tmp_path: Path
) -> None:
    staging = tmp_path / "staging"
    with pytest.raises(UnsafeRemoteNameError, match="path separator"):
        make_source(inbox, clock).fetch(RemoteFile("../escape", 1, 1), staging)
    assert not staging.exists()


# -- mark_processed -----------------------------------------------------------------


def test_mark_processed_moves_and_is_idempotent(
    inbox: Path, clock: FrozenClock, tmp_path: Path
) -> None:
    put(inbox, "A.csv.pgp", b"abc")
    source = make_source(inbox, clock, processed_dir=tmp_path / "done")
    (remote,) = source.list_ready()
    source.mark_processed(remote)
    source.mark_processed(remote)
    assert not (inbox / "A.csv.pgp").exists()
    assert (tmp_path / "done" / "A.csv.pgp").read_bytes() == b"abc"
    with pytest.raises(SourceError) as caught:
        source.mark_processed(RemoteFile("gone.csv.pgp", 1, 1))
    assert caught.value.reason == "remote_missing"


def test_mark_processed_without_processed_dir_leaves_the_file(
    inbox: Path, clock: FrozenClock
) -> None:
    put(inbox, "A.csv.pgp", b"abc")
    with make_source(inbox, clock) as source:
        source.mark_processed(source.list_ready()[0])
    assert (inbox / "A.csv.pgp").exists()


# -- registry -----------------------------------------------------------------------


def test_registry_opens_local_source_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "drop").mkdir()
    put(tmp_path / "drop", "A.csv.pgp", b"a")
    config = LocalSourceConfig(path=Path("drop"), glob="*.csv.pgp")
    source: Source = open_source_config(config, base_dir=tmp_path)
    assert isinstance(source, LocalDirSource)
    assert [r.name for r in source.list_ready()] == ["A.csv.pgp"]


def test_registry_unknown_kind_names_the_valid_ones(tmp_path: Path) -> None:
    config = LocalSourceConfig.model_construct(kind="ftp", path=tmp_path, glob="*")  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError, match=r"unknown source kind 'ftp' \(valid kinds: local, sftp\)"
    ):
        open_source_config(config, base_dir=tmp_path)
    assert sorted(SOURCE_KINDS) == ["local", "sftp"]


def test_registry_opens_the_reference_sftp_feed_without_connecting() -> None:
    loaded = load_feed_file(FEEDS_DIR / "lab_results.yaml")
    source = open_source(loaded)
    assert isinstance(source, SftpSource)
    source.close()


def test_sftp_source_rejects_malformed_pinned_keys(tmp_path: Path) -> None:
    config = SftpSourceConfig(
        host="h",
        username="u",
        remote_dir="/in",
        glob="*",
        host_keys=[
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFgqVYHBLSRQWbgs2AeHkW6YaRLFn3fakeHostKeyForDocs",
            "ssh-ed25519 not-base64!",
        ],
        private_key="env:UNUSED",
    )
    with pytest.raises(ConfigError, match=r"host_keys\[1\].*not valid base64"):
        open_source_config(config, base_dir=tmp_path)
