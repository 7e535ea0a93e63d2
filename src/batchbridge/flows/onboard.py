"""`batchbridge onboard`: scaffold a partner feed, fetch its host key, dry-run a sample, deploy."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko

from batchbridge.errors import ConfigError, HostKeyError

if TYPE_CHECKING:
    from batchbridge.flows.onboard_yaml import ScaffoldRequest

HOST_KEY_FAMILIES: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa": ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"),
    "rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}
"""Host key types asked for one at a time, so a server holding several shows each."""

PLAINTEXT_WARNING = (
    "WARNING: --plaintext reads the sample unencrypted. Plaintext samples must be synthetic "
    "(made-up patients): real patient data never rests on disk in clear."
)

Runner = Callable[..., "subprocess.CompletedProcess[Any]"]


def add_onboard_commands(commands: Any) -> None:
    """Register `onboard scaffold|host-key|dry-run|deploy` on the CLI's subparsers."""
    onboard = commands.add_parser("onboard", help="onboard a new partner feed (no code)")
    steps = onboard.add_subparsers(dest="onboard_command", required=True)

    scaffold = steps.add_parser("scaffold", help="write a commented feed YAML for a new partner")
    scaffold.add_argument("feed")
    scaffold.add_argument("--tenant", required=True)
    scaffold.add_argument("--schema", required=True, help="an existing schema, e.g. lab_results")
    scaffold.add_argument("--host", required=True, help="the partner's SFTP host")
    scaffold.add_argument("--port", type=int, default=22)
    scaffold.add_argument("--user", required=True, help="our login on the partner's server")
    scaffold.add_argument("--remote-dir", required=True, help="folder the partner drops into")
    scaffold.add_argument("--glob", required=True, help="file name pattern, e.g. 'RESULTS_*.pgp'")
    scaffold.add_argument("--timezone", default="UTC", help="zone of the files' naive times")
    scaffold.add_argument("--cron", default="0 2 * * *", help="nightly schedule (feed zone)")
    scaffold.add_argument("--config-dir", type=Path, default=None)

    host_key = steps.add_parser(
        "host-key", help="show a server's host keys (not trusted) to confirm and pin"
    )
    host_key.add_argument("host")
    host_key.add_argument("--port", type=int, default=22)
    host_key.add_argument(
        "--key-type", action="append", choices=sorted(HOST_KEY_FAMILIES), dest="key_types"
    )
    host_key.add_argument("--timeout", type=float, default=15.0)
    host_key.add_argument("--pin", metavar="FEED", help="write the key(s) into FEED's host_keys")
    host_key.add_argument(
        "--confirmed",
        action="store_true",
        help="the fingerprint was confirmed with the partner out of band",
    )
    host_key.add_argument(
        "--fingerprint",
        action="append",
        dest="fingerprints",
        metavar="SHA256:…",
        help="pin only the key with this confirmed fingerprint (repeatable)",
    )
    host_key.add_argument("--config-dir", type=Path, default=None)

    dry_run = steps.add_parser("dry-run", help="decrypt, verify, validate a sample; load nothing")
    dry_run.add_argument("feed")
    dry_run.add_argument("sample", type=Path)
    dry_run.add_argument("--plaintext", action="store_true", help="synthetic unencrypted sample")
    dry_run.add_argument("--json", action="store_true")
    dry_run.add_argument("--config-dir", type=Path, default=None)

    deploy = steps.add_parser("deploy", help="print (or --apply) the steps to deploy a feed")
    deploy.add_argument("feed")
    deploy.add_argument("--apply", action="store_true", help="run the checks and prefect deploy")
    deploy.add_argument("--prefect-file", type=Path, default=None)
    deploy.add_argument("--config-dir", type=Path, default=None)


def run_onboard_command(args: argparse.Namespace) -> int:
    """Dispatch `batchbridge onboard …`."""
    if args.onboard_command == "scaffold":
        from batchbridge.flows.onboard_yaml import ScaffoldRequest

        request = ScaffoldRequest(
            feed=args.feed,
            tenant=args.tenant,
            schema=args.schema,
            host=args.host,
            port=args.port,
            username=args.user,
            remote_dir=args.remote_dir,
            glob=args.glob,
            timezone=args.timezone,
            cron=args.cron,
        )
        return scaffold_command(request, config_dir=args.config_dir)
    if args.onboard_command == "host-key":
        return host_key_command(
            args.host,
            args.port,
            key_types=args.key_types,
            timeout=args.timeout,
            pin_feed=args.pin,
            confirmed=args.confirmed,
            fingerprints=args.fingerprints,
            config_dir=args.config_dir,
        )
    if args.onboard_command == "dry-run":
        return dry_run_command(
            args.feed,
            args.sample,
            config_dir=args.config_dir,
            plaintext=args.plaintext,
            as_json=args.json,
        )
    return deploy_command(
        args.feed, config_dir=args.config_dir, prefect_file=args.prefect_file, apply=args.apply
    )


# -- scaffold -------------------------------------------------------------------------


def scaffold_command(request: ScaffoldRequest, *, config_dir: Path | None) -> int:
    """Write `<config_dir>/<feed>.yaml` (never overwriting) and empty mapping tables."""
    from batchbridge.config import feed_path
    from batchbridge.flows.onboard_yaml import (
        mapping_header,
        render_feed_yaml,
        secret_name,
        validate_feed_text,
        write_new_file,
    )
    from batchbridge.settings import load_settings
    from batchbridge.validations.registry import get_schema

    settings = load_settings(config_dir)
    schema = get_schema(request.schema)
    path = feed_path(request.feed, settings.config_dir)
    if path.exists():
        raise ConfigError(f"{path} already exists; not overwriting it")
    text = render_feed_yaml(
        request, config_dir=settings.config_dir, today=datetime.now(UTC).date().isoformat()
    )
    config = validate_feed_text(text, request.feed)
    write_new_file(path, text)
    print(f"wrote {path} (feed {config.feed}, tenant {config.tenant}, schema {schema.name})")
    for name, relative in config.mappings.items():
        mapping_path = (path.parent / relative).resolve()
        header = mapping_header(schema.name, name)
        if mapping_path.exists() or header is None:
            print(f"mapping {name}: {mapping_path} (exists, kept)")
            continue
        write_new_file(mapping_path, header)
        print(
            f"wrote {mapping_path} (header only: add the partner's codes; "
            "the dry run lists the ones a sample uses)"
        )
    print("secrets to provide (environment variables, or change the reference):")
    for what, why in (
        ("SFTP_PRIVATE_KEY", f"our SSH private key for {request.username}@{request.host}"),
        ("PGP_PRIVATE_KEY", "our OpenPGP private key (the partner encrypts to its public key)"),
        ("PGP_PASSPHRASE", "its passphrase"),
        ("PARTNER_SIGNING_KEY", "the partner's public signing key (confirm its fingerprint)"),
        ("PSEUDONYM_KEY", "random, per tenant: `openssl rand -hex 32`"),
        ("QUARANTINE_KEY", "random, per tenant: `openssl rand -hex 32`"),
    ):
        print(f"  {secret_name(request.tenant, what):<36} {why}")
    print(f"next: batchbridge onboard host-key {request.host} --port {request.port}")
    return 0


# -- host key -------------------------------------------------------------------------


def key_line(key: paramiko.PKey) -> str:
    """A public key as an OpenSSH line ('ssh-ed25519 AAAA…'), the form host_keys pins."""
    return f"{key.get_name()} {key.get_base64()}"


def offered_host_keys(
    host: str,
    port: int,
    *,
    families: Sequence[str] | None = None,
    timeout: float = 15.0,
    fetch: Callable[..., paramiko.PKey] | None = None,
) -> list[paramiko.PKey]:
    """Every host key the server proves it holds, one key exchange per key type; no login."""
    from batchbridge.connectors.sources.sftp import server_host_key

    fetch = fetch or server_host_key
    preferred = getattr(paramiko.Transport, "_preferred_keys", ())
    every = {*preferred, *(name for names in HOST_KEY_FAMILIES.values() for name in names)}
    keys: list[paramiko.PKey] = []
    for family, algorithms in HOST_KEY_FAMILIES.items():
        if families and family not in families:
            continue
        disabled = sorted(every - set(algorithms))
        try:
            key = fetch(host, port, disabled_algorithms=disabled, timeout=timeout)
        except HostKeyError:
            continue  # the server holds no key of this type
        if all(key.asbytes() != known.asbytes() for known in keys):
            keys.append(key)
    if not keys:
        raise HostKeyError(f"{host}:{port} offered no host key of the requested types")
    return keys


def host_key_command(
    host: str,
    port: int,
    *,
    key_types: Sequence[str] | None = None,
    timeout: float = 15.0,
    pin_feed: str | None = None,
    confirmed: bool = False,
    fingerprints: Sequence[str] | None = None,
    config_dir: Path | None = None,
    fetch: Callable[..., paramiko.PKey] | None = None,
) -> int:
    """Print the server's host keys and fingerprints; with --pin and --confirmed, pin them."""
    from batchbridge.connectors.sources.ssh_keys import fingerprint

    keys = offered_host_keys(host, port, families=key_types, timeout=timeout, fetch=fetch)
    where = f"{host}:{port}"
    print(
        f"{where} offered {len(keys)} host key(s), fetched WITHOUT trusting or logging in "
        "(not verified yet):"
    )
    for key in keys:
        print()
        print(key_line(key))
        print(f"    fingerprint {fingerprint(key)}  ({key.get_name()}, {key.get_bits()} bits)")
    print()
    print(
        "Before pinning, confirm the fingerprint with the partner OUT OF BAND (a phone call\n"
        "to a known number, or their signed ticket; not the e-mail that gave you the host).\n"
        "Anyone between you and the server would show you their own key here."
    )
    if pin_feed is None:
        print(
            f"Once confirmed: batchbridge onboard host-key {host} --port {port} "
            "--pin FEED --confirmed [--fingerprint SHA256:…]"
        )
        return 0
    if not confirmed:
        print(
            f"not pinned: add --confirmed once the partner confirmed the fingerprint "
            f"(feed {pin_feed} is unchanged)",
            file=sys.stderr,
        )
        return ConfigError.exit_code
    chosen = keys
    if fingerprints:
        chosen = [key for key in keys if fingerprint(key) in fingerprints]
        offered = {fingerprint(key) for key in keys}
        gone = [fp for fp in fingerprints if fp not in offered]
        if gone:
            raise HostKeyError(
                f"{where} does not offer the confirmed fingerprint(s) {', '.join(gone)} now; "
                "nothing pinned: ask the partner before pinning anything"
            )
    return _pin(pin_feed, host, port, chosen, config_dir=config_dir)


def _pin(
    feed: str, host: str, port: int, keys: list[paramiko.PKey], *, config_dir: Path | None
) -> int:
    from batchbridge.config import load_feed
    from batchbridge.connectors.sources.ssh_keys import fingerprint
    from batchbridge.flows.onboard_yaml import pin_host_keys, pin_note
    from batchbridge.settings import load_settings

    settings = load_settings(config_dir)
    source = load_feed(feed, settings.config_dir).config.source
    if source.kind != "sftp":
        raise ConfigError(f"feed {feed} has a {source.kind} source: nothing to pin")
    if (source.host, source.port) != (host, port):
        raise ConfigError(
            f"feed {feed} connects to {source.host}:{source.port}, not {host}:{port}; "
            "nothing pinned"
        )
    prints = [fingerprint(key) for key in keys]
    before = pin_host_keys(
        feed, settings.config_dir, [key_line(key) for key in keys], note=pin_note(prints)
    )
    print(f"pinned {', '.join(prints)} for feed {feed}")
    if before:
        print(f"  (replaced {len(before)} previously pinned key(s))")
    print(f"next: batchbridge health {feed}")
    return 0


# -- dry run --------------------------------------------------------------------------

_OPENPGP_ARMOR = b"-----BEGIN PGP MESSAGE-----"


def _looks_encrypted(sample: Path) -> bool:
    with sample.open("rb") as handle:
        head = handle.read(64)
    # Binary OpenPGP packets start with the high bit set; text files never do in byte 0.
    return head.lstrip().startswith(_OPENPGP_ARMOR) or (bool(head) and head[0] & 0x80 != 0)


def dry_run_command(
    feed: str, sample: Path, *, config_dir: Path | None, plaintext: bool, as_json: bool
) -> int:
    """Dry-run a sample file (nothing loaded); exit non-zero when the file fails whole."""
    from batchbridge.config import load_feed
    from batchbridge.flows.cli import print_json
    from batchbridge.settings import load_settings
    from batchbridge.tasks.dry_run import dry_run_sample, render_dry_run_text

    settings = load_settings(config_dir)
    loaded = load_feed(feed, settings.config_dir)
    if not sample.is_file():
        raise ConfigError(f"sample file {sample} does not exist")
    if plaintext:
        print(PLAINTEXT_WARNING, file=sys.stderr)
        if _looks_encrypted(sample):
            raise ConfigError(f"{sample.name} looks OpenPGP-encrypted: drop --plaintext")
    report = dry_run_sample(loaded, sample, plaintext=plaintext)
    if as_json:
        print_json(report.to_dict())
    else:
        print(render_dry_run_text(report))
    return report.exit_code


# -- deploy ---------------------------------------------------------------------------


def _deployment_names(prefect_file: Path) -> set[str]:
    import yaml

    if not prefect_file.is_file():
        return set()
    data = yaml.safe_load(prefect_file.read_text(encoding="utf-8")) or {}
    return {str(d.get("name")) for d in data.get("deployments") or [] if isinstance(d, dict)}


def deploy_command(
    feed: str,
    *,
    config_dir: Path | None,
    prefect_file: Path | None,
    apply: bool,
    runner: Runner = subprocess.run,
) -> int:
    """Print the steps that deploy a feed; with `apply`, gate on the checks and run them.

    Thin on purpose: `batchbridge deploy` owns prefect.yaml (generated from the feed
    YAMLs) and the tenant work queues; this only puts the onboarding steps in order.
    """
    from batchbridge.config import load_feed
    from batchbridge.flows.commands import check_feed
    from batchbridge.settings import load_settings
    from batchbridge.tasks.health_checks import run_feed_checks
    from batchbridge.tasks.health_report import render_health_text

    settings = load_settings(config_dir)
    loaded = load_feed(feed, settings.config_dir)
    tenant = loaded.config.tenant
    prefect_yaml = (prefect_file or settings.config_dir.parent / "prefect.yaml").resolve()
    # Like `batchbridge deploy`: run from the repository root (entrypoints are paths in it).
    root = Path.cwd().resolve()
    shown = _relative(prefect_yaml, root)
    present = _deployment_names(prefect_yaml)
    names = [f"{feed}-nightly", f"{feed}-health"]
    status = ", ".join(f"{n} {'present' if n in present else 'not there yet'}" for n in names)

    print(f"deploy feed {feed} (tenant {tenant}), from {root}:")
    print(f"  1. batchbridge feeds check {feed}   (YAML, mapping tables, secrets)")
    print(f"  2. batchbridge health {feed}   (host key, login, PGP keys, target canary)")
    print(f"  3. batchbridge deploy   (regenerates {shown}: {status})")
    print(f"  4. prefect deploy --prefect-file {shown} --name {feed}-nightly")
    print(f"     (and --name {feed}-health when present)")
    print(
        f"     a NEW tenant needs its work queue limit first: `batchbridge deploy --apply`\n"
        f"     does that (queue tenant-{tenant}) and deploys everything"
    )
    if not apply:
        print(f"or run them all: batchbridge onboard deploy {feed} --apply")
        return 0

    problems = check_feed(loaded, resolve_secrets=True)
    if problems:
        print(f"feeds check: {len(problems)} problem(s); not deployed")
        for problem in problems:
            print(f"  - {problem}")
        return ConfigError.exit_code
    print(f"feeds check: {feed} ok")
    health = run_feed_checks(feed, settings.config_dir)
    print(render_health_text(health))
    if health.failed:
        print("health check failed; not deployed")
        return 1
    argv = [
        sys.executable,
        "-m",
        "batchbridge.flows.cli",
        "deploy",
        "--apply",
        "--config-dir",
        str(settings.config_dir),
        "--prefect-file",
        str(prefect_yaml),
    ]
    print(f"$ batchbridge deploy --apply --prefect-file {shown}")
    result = runner(argv, cwd=root, check=False)
    return int(result.returncode)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
