"""The outbound SFTP target against real OpenSSH sshd (and the embedded server) and real gpg."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pydantic import SecretStr

from batchbridge.config import SftpTargetConfig, load_feed
from batchbridge.connectors.pgp.base import DecryptorKeys, DecryptorLimits
from batchbridge.connectors.pgp.encrypt import EncryptionKeys, GpgEncryptor
from batchbridge.connectors.pgp.gnupg import GnuPGDecryptor
from batchbridge.connectors.targets.base import LoadRequest, LoadResult
from batchbridge.connectors.targets.extract import Sidecar, part_name, render_csv
from batchbridge.connectors.targets.registry import open_target
from batchbridge.connectors.targets.sftp_out import POSIX_RENAME, SftpTarget
from batchbridge.demo.keys import generate_ed25519, write_secret_file
from batchbridge.demo.sftp_server import EmbeddedSftpServer, start_sftp_server
from batchbridge.errors import ConfigError, TargetError
from batchbridge.monitoring.health_targets import check_target
from tests.plugins.gpg import GpgTestKeys
from tests.support.sshd import SshdServer
from tests.unit.feed_helpers import write_feed

pytestmark = pytest.mark.integration

SOURCE = "LAB_20240102.csv.pgp"
NAME = "lab_results_LAB_20240102.csv"
COLUMNS = ["patient_ref", "result_value", "delta"]


def target_config(server: SshdServer, **overrides: Any) -> SftpTargetConfig:
    """A config for the module's sshd writing into a fresh folder under its root."""
    outbox = server.root / f"outbox-{secrets.token_hex(4)}"
    outbox.mkdir()
    values: dict[str, Any] = {
        **server.login(),
        "name": "partner_drop",
        "remote_dir": str(outbox),
        "columns": COLUMNS,
        "connect_timeout_seconds": 5,
        "max_attempts": 2,
    }
    values.update(overrides)
    return SftpTargetConfig(**values)


def rows(values: list[str] | None = None) -> pl.DataFrame:
    """Transformed rows as the load stage hands them over, listed out of source order."""
    texts = values or ['=HYPERLINK("x")', "-12.5", "7.1", "@SUM(A1)"]
    count = len(texts)
    return pl.DataFrame(
        {
            "record_id": [f"R{i:03d}" for i in range(count)][::-1],
            "patient_ref": [f"p{i}" for i in range(count)][::-1],
            "result_value": texts[::-1],
            "delta": [1.0 - 1.5 * i for i in range(count)][::-1],
            "not_for_partner": ["secret"] * count,
            "_row": list(range(1, count + 1))[::-1],
        }
    )


def request(frame: pl.DataFrame, *, source_name: str = SOURCE) -> LoadRequest:
    return LoadRequest(
        tenant="acme_lab",
        natural_key=("record_id",),
        load_id=str(uuid.uuid4()),
        file_id="file-1",
        rows=frame,
        feed="lab_results",
        source_name=source_name,
    )


def expected_extract(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort("_row").select("record_id", *COLUMNS)


def counts(result: LoadResult) -> tuple[int, int, int, int, int]:
    return (
        result.rows_inserted,
        result.rows_updated,
        result.rows_unchanged,
        result.rows_rejected,
        result.rows_confirmed,
    )


def encryptor(keys: GpgTestKeys) -> GpgEncryptor:
    """We sign with our key; the receiver is the 'partner' key of the gpg fixture."""
    return GpgEncryptor(
        EncryptionKeys(
            recipient_public_keys=(keys.partner_public,),
            signing_key=SecretStr(keys.our_secret),
            signing_passphrase=SecretStr(keys.our_passphrase),
        )
    )


def receiver_decryptor(keys: GpgTestKeys) -> GnuPGDecryptor:
    """The receiver's side: their private key, our public key pinned as the signer."""
    return GnuPGDecryptor(
        DecryptorKeys(
            private_key=SecretStr(keys.keyring.export_secret(keys.partner_fpr)),
            passphrase=None,
            partner_public_keys=(keys.keyring.export_public(keys.our_fpr),),
        ),
        DecryptorLimits(),
    )


@pytest.fixture
def config(sshd_server: SshdServer) -> SftpTargetConfig:
    return target_config(sshd_server)


@pytest.fixture
def target(config: SftpTargetConfig) -> Iterator[SftpTarget]:
    with SftpTarget(config, feed="lab_results", backoff_seconds=0.01) as opened:
        yield opened


@pytest.fixture
def pgp_config(sshd_server: SshdServer) -> SftpTargetConfig:
    return target_config(
        sshd_server,
        pgp={"recipient_public_keys": ["env:UNUSED_RECEIVER_KEY"]},  # keys passed directly
    )


@pytest.fixture
def pgp_target(pgp_config: SftpTargetConfig, gpg_keys: GpgTestKeys) -> Iterator[SftpTarget]:
    with SftpTarget(
        pgp_config, feed="lab_results", encryptor=encryptor(gpg_keys), backoff_seconds=0.01
    ) as opened:
        yield opened


def listing(config: SftpTargetConfig) -> list[str]:
    return sorted(path.name for path in Path(config.remote_dir).iterdir())


# -- plain CSV -----------------------------------------------------------------------


def test_csv_is_delivered_as_expected_with_nothing_else_left(
    config: SftpTargetConfig, target: SftpTarget
) -> None:
    frame = rows()
    result = target.load(request(frame))
    assert counts(result) == (4, 0, 0, 0, 4)
    assert listing(config) == [NAME]
    delivered = (Path(config.remote_dir) / NAME).read_bytes()
    assert delivered == (
        b"record_id,patient_ref,result_value,delta\r\n"
        b'R000,p0,"\'=HYPERLINK(""x"")",1.0\r\n'
        b"R001,p1,-12.5,-0.5\r\n"
        b"R002,p2,7.1,-2.0\r\n"
        b"R003,p3,'@SUM(A1),-3.5\r\n"
    )
    assert b"secret" not in delivered  # only the configured columns travel


def test_a_rerun_keeps_the_identical_file_and_counts_it_unchanged(
    config: SftpTargetConfig, target: SftpTarget
) -> None:
    frame = rows()
    target.load(request(frame))
    path = Path(config.remote_dir) / NAME
    before = path.stat()
    again = target.load(request(frame))
    assert counts(again) == (0, 0, 4, 0, 4)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert listing(config) == [NAME]


def test_changed_rows_replace_the_file_atomically_and_count_updated(
    config: SftpTargetConfig, target: SftpTarget
) -> None:
    target.load(request(rows()))
    path = Path(config.remote_dir) / NAME
    first_inode = path.stat().st_ino
    changed = rows(["1", "2", "3", "+4"])
    result = target.load(request(changed))
    assert counts(result) == (0, 4, 0, 0, 4)
    assert path.read_bytes() == render_csv(expected_extract(changed))
    assert path.stat().st_ino != first_inode  # a new file renamed over the old one
    assert listing(config) == [NAME]
    session = target._session
    assert session is not None and session.sftp.offers(POSIX_RENAME)  # type: ignore[attr-defined]


def test_parquet_is_readable_by_polars(sshd_server: SshdServer) -> None:
    config = target_config(sshd_server, file_format="parquet")
    frame = rows()
    with SftpTarget(config, feed="lab_results") as target:
        result = target.load(request(frame))
        assert counts(target.load(request(frame))) == (0, 0, 4, 0, 4)
    assert counts(result) == (4, 0, 0, 0, 4)
    assert listing(config) == ["lab_results_LAB_20240102.parquet"]
    delivered = pl.read_parquet(Path(config.remote_dir) / "lab_results_LAB_20240102.parquet")
    assert delivered.equals(expected_extract(frame))  # typed: no formula prefix


def test_leftovers_of_a_killed_run_are_removed_and_nothing_else(
    config: SftpTargetConfig, target: SftpTarget
) -> None:
    outbox = Path(config.remote_dir)
    killed = [
        part_name(NAME, "load-of-a-killed-run"),
        part_name(f"{NAME}.sha256", "load-of-a-killed-run"),
    ]
    kept = [".other.csv.0123456789ab.part", f"{NAME}.x.csv", "partner_note.txt"]
    for name in killed + kept:
        (outbox / name).write_bytes(b"half a file")
    target.load(request(rows()))
    assert listing(config) == sorted([NAME, *kept])


def test_a_folder_in_the_way_is_refused_not_replaced(
    config: SftpTargetConfig, target: SftpTarget
) -> None:
    (Path(config.remote_dir) / NAME).mkdir()
    with pytest.raises(TargetError, match="not a regular file") as caught:
        target.load(request(rows()))
    assert caught.value.reason == "remote_not_a_file"


def test_a_missing_remote_folder_is_a_clear_error(sshd_server: SshdServer) -> None:
    config = target_config(sshd_server)
    Path(config.remote_dir).rmdir()
    with (
        SftpTarget(config, feed="lab_results") as target,
        pytest.raises(TargetError, match="no such file or folder") as caught,
    ):
        target.load(request(rows()))
    assert caught.value.reason == "remote_missing"


def test_wrong_host_key_refuses_and_writes_nothing(sshd_server: SshdServer) -> None:
    config = target_config(sshd_server, host_keys=[generate_ed25519().public_line])
    with (
        SftpTarget(config, feed="lab_results") as target,
        pytest.raises(TargetError, match="not pinned") as caught,
    ):
        target.load(request(rows()))
    assert caught.value.reason == "host_key_mismatch"
    assert not isinstance(caught.value, ConfigError)
    assert listing(config) == []


# -- PGP -----------------------------------------------------------------------------


def test_pgp_extract_decrypts_for_the_receiver_and_carries_our_signature(
    pgp_config: SftpTargetConfig, pgp_target: SftpTarget, gpg_keys: GpgTestKeys
) -> None:
    frame = rows()
    result = pgp_target.load(request(frame))
    assert counts(result) == (4, 0, 0, 0, 4)
    name = f"{NAME}.pgp"
    assert listing(pgp_config) == [name, f"{name}.sha256"]
    delivered = Path(pgp_config.remote_dir) / name
    assert delivered.read_bytes()[:1] != b"-"  # binary, not armored
    # The receiver's gpg decrypts it, requires the MDC and verifies our signature.
    verified = receiver_decryptor(gpg_keys).decrypt_and_verify(delivered)
    expected = render_csv(expected_extract(frame))
    assert verified.data == expected
    assert verified.signer_fingerprint == gpg_keys.our_fpr
    sidecar = Sidecar.parse((Path(pgp_config.remote_dir) / f"{name}.sha256").read_bytes())
    assert sidecar == Sidecar(
        plaintext_sha256=hashlib.sha256(expected).hexdigest(),
        plaintext_name=NAME,
        delivered_sha256=hashlib.sha256(delivered.read_bytes()).hexdigest(),
        delivered_name=name,
    )


def test_pgp_rerun_is_unchanged_and_a_change_or_lost_sidecar_rewrites(
    pgp_config: SftpTargetConfig, pgp_target: SftpTarget, gpg_keys: GpgTestKeys
) -> None:
    outbox = Path(pgp_config.remote_dir)
    delivered, sidecar = outbox / f"{NAME}.pgp", outbox / f"{NAME}.pgp.sha256"
    frame = rows()
    pgp_target.load(request(frame))
    ciphertext = delivered.read_bytes()
    assert counts(pgp_target.load(request(frame))) == (0, 0, 4, 0, 4)
    assert delivered.read_bytes() == ciphertext  # not re-encrypted

    changed = rows(["a", "b", "c", "d"])
    assert counts(pgp_target.load(request(changed))) == (0, 4, 0, 0, 4)
    plaintext = receiver_decryptor(gpg_keys).decrypt_and_verify(delivered).data
    assert plaintext == render_csv(expected_extract(changed))

    # A run killed between the two renames leaves no sidecar: the next run rewrites.
    sidecar.unlink()
    assert counts(pgp_target.load(request(changed))) == (0, 4, 0, 0, 4)
    # A file that is not the one the sidecar describes is rewritten too.
    delivered.write_bytes(b"replaced by someone")
    assert counts(pgp_target.load(request(changed))) == (0, 4, 0, 0, 4)
    assert listing(pgp_config) == [f"{NAME}.pgp", f"{NAME}.pgp.sha256"]


def test_encryption_refuses_unusable_keys(gpg_keys: GpgTestKeys) -> None:
    wrong_passphrase = GpgEncryptor(
        EncryptionKeys(
            recipient_public_keys=(gpg_keys.partner_public,),
            signing_key=SecretStr(gpg_keys.our_secret),
            signing_passphrase=SecretStr("not it"),
        )
    )
    with pytest.raises(ConfigError, match="could not be unlocked") as caught:
        wrong_passphrase.encrypt(b"x", file_name="x.csv")
    assert caught.value.reason == "signing_passphrase"
    secret_as_recipient = GpgEncryptor(EncryptionKeys(recipient_public_keys=(gpg_keys.our_secret,)))
    with pytest.raises(ConfigError, match="contains a private key"):
        secret_as_recipient.encrypt(b"x", file_name="x.csv")
    revoked = GpgEncryptor(EncryptionKeys(recipient_public_keys=(gpg_keys.revoked_public,)))
    with pytest.raises(ConfigError, match="cannot be used to encrypt") as caught:
        revoked.encrypt(b"x", file_name="x.csv")
    assert caught.value.reason == "recipient_key_unusable"


# -- wiring and a server without posix-rename ------------------------------------------


def test_a_feed_yaml_opens_the_target_through_the_registry(
    sshd_server: SshdServer, gpg_keys: GpgTestKeys, tmp_path: Path
) -> None:
    outbox = sshd_server.root / f"outbox-{secrets.token_hex(4)}"
    outbox.mkdir()
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    (keys_dir / "receiver.asc").write_text(gpg_keys.partner_public)
    (keys_dir / "signing.asc").write_text(gpg_keys.our_secret)
    (keys_dir / "signing.pass").write_text(gpg_keys.our_passphrase)
    feeds = write_feed(
        tmp_path / "feed",
        extra={
            "targets": [
                {
                    "name": "partner_drop",
                    "kind": "sftp",
                    **sshd_server.login(),
                    "remote_dir": str(outbox),
                    "file_name": "{tenant}-{source_stem}.{ext}",
                    "pgp": {
                        "recipient_public_keys": [f"file:{keys_dir / 'receiver.asc'}"],
                        "signing_key": f"file:{keys_dir / 'signing.asc'}",
                        "signing_passphrase": f"file:{keys_dir / 'signing.pass'}",
                    },
                    "columns": COLUMNS,
                }
            ]
        },
    )
    loaded = load_feed("lab_results", feeds)
    target = open_target(loaded, loaded.config.targets[0])
    try:
        result = target.load(request(rows()))
    finally:
        target.close()
    assert counts(result) == (4, 0, 0, 0, 4)
    assert sorted(p.name for p in outbox.iterdir()) == [
        "acme_lab-LAB_20240102.csv.pgp",
        "acme_lab-LAB_20240102.csv.pgp.sha256",
    ]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[EmbeddedSftpServer, SftpTargetConfig]]:
    pair = generate_ed25519()
    key_path = write_secret_file(tmp_path / "client_key", pair.private_openssh)
    root = tmp_path / "served"
    (root / "inbox").mkdir(parents=True)
    with start_sftp_server(root, pair.public_line) as server:
        config = SftpTargetConfig(
            name="partner_drop",
            host=server.host,
            port=server.port,
            username=server.username,
            remote_dir="/inbox",
            host_keys=[server.host_key_line],
            private_key=f"file:{key_path}",
            columns=COLUMNS,
        )
        yield server, config


def test_a_server_without_posix_rename_still_gets_the_file_replaced(
    embedded: tuple[EmbeddedSftpServer, SftpTargetConfig],
) -> None:
    server, config = embedded
    inbox = server.root / "inbox"
    with SftpTarget(config, feed="lab_results", backoff_seconds=0.01) as target:
        assert counts(target.load(request(rows()))) == (4, 0, 0, 0, 4)
        session = target._session
        assert session is not None
        assert not session.sftp.offers(POSIX_RENAME)  # type: ignore[attr-defined]
        changed = rows(["1", "2", "3", "4"])
        assert counts(target.load(request(changed))) == (0, 4, 0, 0, 4)
        server.drop_connections()  # the next load reconnects
        assert counts(target.load(request(changed))) == (0, 0, 4, 0, 4)
    assert sorted(p.name for p in inbox.iterdir()) == [NAME]
    assert (inbox / NAME).read_bytes() == render_csv(expected_extract(changed))


# -- health probe --------------------------------------------------------------------


def test_the_health_probe_writes_renames_sizes_and_deletes_a_probe_file(
    sshd_server: SshdServer, config: SftpTargetConfig, target: SftpTarget
) -> None:
    (Path(config.remote_dir) / "waiting.csv").write_text("a file the receiver has not taken\n")
    steps: list[str] = []
    session = target._session
    run = session.run

    def recording(action: str, operation: Any) -> Any:
        steps.append(action.split(" in ")[0])
        return run(action, operation)

    session.run = recording  # type: ignore[method-assign]

    detail = target.probe_health("acme_lab")

    assert listing(config) == ["waiting.csv"]  # the probe left nothing, touched nothing else
    assert [re.sub(r"[0-9a-f]{12}", "*", step) for step in steps] == [
        "health probe: write .batchbridge-health-*.part",
        "health probe: rename .batchbridge-health-*.part to .batchbridge-health-*",
        "health probe: check the size of .batchbridge-health-*",
        "health probe: delete .batchbridge-health-*",
    ]
    where = f"{config.host}:{config.port}"
    assert detail.startswith(f"in {config.remote_dir} on {where}: wrote a ")
    assert detail.endswith(
        "renamed it to " + steps[-1].split()[-1] + ", checked its size, deleted it"
    )


def test_the_health_check_probes_an_sftp_target_from_the_feed(
    sshd_server: SshdServer, tmp_path: Path
) -> None:
    outbox = sshd_server.root / f"outbox-{secrets.token_hex(4)}"
    outbox.mkdir()
    target = {"name": "partner_drop", "kind": "sftp", **sshd_server.login(),
              "remote_dir": str(outbox), "columns": COLUMNS}  # fmt: skip
    loaded = load_feed("lab_results", write_feed(tmp_path / "feed", extra={"targets": [target]}))

    (result,) = check_target(loaded, loaded.config.targets[0])

    assert (result.name, result.severity) == ("target.partner_drop", "ok")
    assert "canary" not in result.detail and "deleted it" in result.detail
    assert list(outbox.iterdir()) == []


def test_a_failed_probe_step_names_the_step_and_the_server(sshd_server: SshdServer) -> None:
    config = target_config(sshd_server)
    Path(config.remote_dir).rmdir()
    with (
        SftpTarget(config, feed="lab_results") as target,
        pytest.raises(TargetError) as caught,
    ):
        target.probe_health("acme_lab")
    message = str(caught.value)
    assert caught.value.reason == "remote_missing"
    assert message.startswith("target partner_drop: health probe: write .batchbridge-health-")
    assert f"on {config.host}:{config.port}: no such file or folder" in message
    assert config.private_key not in message
