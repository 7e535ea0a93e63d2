"""Health checks of a feed's source: SFTP reachable, host key pinned, login, folder listable."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from pathlib import Path

import paramiko

from batchbridge.config import UNPINNED_HOST_KEY, LoadedFeed, LocalSourceConfig, SftpSourceConfig
from batchbridge.connectors.retry import call_with_retries
from batchbridge.connectors.sources.sftp import SftpProbe, SftpSource, server_host_key
from batchbridge.connectors.ssh.host_keys import (
    describe_key,
    disabled_host_key_algorithms,
    parse_host_keys,
    verify_host_key,
)
from batchbridge.connectors.ssh.session import ssh_retry_policy
from batchbridge.errors import BatchbridgeError, ConfigError, TransientSourceError
from batchbridge.monitoring.health_model import CheckResult, guarded

HostKeyFetcher = Callable[..., paramiko.PKey]
SourceOpener = Callable[[SftpSourceConfig, Path], SftpSource]


def _fetch_with_retries(
    fetch: HostKeyFetcher,
    config: SftpSourceConfig,
    disabled: Sequence[str],
    sleep: Callable[[float], None],
) -> paramiko.PKey:
    # A dropped handshake gets the same bounded retries a run would; a refused key does not.
    return call_with_retries(
        lambda: fetch(
            config.host,
            config.port,
            disabled_algorithms=disabled,
            timeout=config.connect_timeout_seconds,
        ),
        policy=ssh_retry_policy(config.max_attempts),
        transient=TransientSourceError,
        sleep=sleep,
    )


def check_sftp(
    loaded: LoadedFeed,
    *,
    fetch_host_key: HostKeyFetcher = server_host_key,
    open_sftp: SourceOpener | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[CheckResult]:
    """sftp.reachable, sftp.host_key, sftp.auth and sftp.remote_dir for an SFTP source.

    The host key is fetched without authenticating and compared with the pinned keys;
    credentials are only offered to a server whose key is pinned.
    """
    config = loaded.config.source
    assert isinstance(config, SftpSourceConfig)
    where = f"{config.host}:{config.port}"
    results: list[CheckResult] = []

    pinned: list[paramiko.PKey] | None = None
    pin_problem: str | None = None
    try:
        pinned = parse_host_keys(config.host_keys)
    except ConfigError as exc:
        pin_problem = str(exc)
    if UNPINNED_HOST_KEY in config.host_keys:
        pin_problem = (
            f"no host key pinned yet: run `batchbridge onboard host-key {config.host} "
            f"--port {config.port}`, confirm the fingerprint with the partner out of band, "
            f"then pin it with `--pin {loaded.config.feed} --confirmed`"
        )
    disabled = disabled_host_key_algorithms(pinned) if pinned else []

    try:
        try:
            offered = _fetch_with_retries(fetch_host_key, config, disabled, sleep)
        except BatchbridgeError as exc:
            if exc.reason != "host_key_type":
                raise
            # The server holds none of the pinned key types: the key changed. Ask for
            # whatever it offers, so the failure can name that key's fingerprint.
            offered = _fetch_with_retries(fetch_host_key, config, [], sleep)
    except BatchbridgeError as exc:
        results.append(CheckResult.failed("sftp.reachable", f"[{exc.reason}] {exc}"))
        results.append(CheckResult.skipped("sftp.host_key", "server not reachable"))
        return results + _skipped_after_host_key("the host key could not be verified")
    results.append(
        CheckResult.passed("sftp.reachable", f"SSH handshake with {where} ({offered.get_name()})")
    )

    if pin_problem is not None or not pinned:
        results.append(
            CheckResult.failed(
                "sftp.host_key",
                f"{pin_problem or 'no host key pinned'}; the server offers {describe_key(offered)}",
            )
        )
        return results + _skipped_after_host_key("no valid pinned host key")
    try:
        verify_host_key(offered, pinned, where)
    except BatchbridgeError as exc:
        # HostKeyError's text names the offered and the pinned fingerprints.
        results.append(CheckResult.failed("sftp.host_key", str(exc)))
        return results + _skipped_after_host_key("the host key is not pinned")
    results.append(CheckResult.passed("sftp.host_key", f"pinned key {describe_key(offered)}"))

    opener = open_sftp or (lambda cfg, base: SftpSource(cfg, base_dir=base, sleep=sleep))
    with opener(config, loaded.base_dir) as source:
        probe = source.probe()
    return results + _probe_results(probe, config)


def _skipped_after_host_key(why: str) -> list[CheckResult]:
    detail = f"not attempted: {why} (credentials go only to a pinned server)"
    return [
        CheckResult.skipped("sftp.auth", detail),
        CheckResult.skipped("sftp.remote_dir", detail),
    ]


def _probe_results(probe: SftpProbe, config: SftpSourceConfig) -> list[CheckResult]:
    error = probe.error
    if not probe.authenticated:
        assert error is not None
        return [
            CheckResult.failed("sftp.auth", f"[{error.reason}] {error}"),
            CheckResult.skipped("sftp.remote_dir", "not attempted: not logged in"),
        ]
    auth = CheckResult.passed("sftp.auth", f"logged in as {config.username!r} with the key")
    if error is not None:
        return [auth, CheckResult.failed("sftp.remote_dir", f"[{error.reason}] {error}")]
    refused = f", {probe.refused} refused (unsafe name or not a file)" if probe.refused else ""
    return [
        auth,
        CheckResult.passed(
            "sftp.remote_dir",
            f"{config.remote_dir} listable: {probe.matching} file(s) match {config.glob!r}"
            + refused,
        ),
    ]


@guarded("source.folder")
def check_local_source(loaded: LoadedFeed) -> list[CheckResult]:
    """A local source folder exists and can be listed."""
    config = loaded.config.source
    assert isinstance(config, LocalSourceConfig)
    folder = loaded.resolve_path(config.path)
    if not folder.is_dir():
        return [CheckResult.failed("source.folder", f"{folder} is not a folder")]
    matching = sum(1 for entry in folder.iterdir() if fnmatchcase(entry.name, config.glob))
    return [
        CheckResult.passed(
            "source.folder", f"{folder} listable: {matching} file(s) match {config.glob!r}"
        )
    ]
