"""`batchbridge onboard`: scaffold a partner feed, fetch its host key, dry-run a sample, deploy."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from batchbridge.cli.output import print_json
from batchbridge.cli.params import ConfigDirOption, FeedArgument, JsonOption, split_values
from batchbridge.config import feed_path, load_feed
from batchbridge.errors import ConfigError, HostKeyError
from batchbridge.settings import load_settings

if TYPE_CHECKING:
    import paramiko

    from batchbridge.onboarding.feed_yaml import ScaffoldRequest

PLAINTEXT_WARNING = (
    "WARNING: --plaintext reads the sample unencrypted. Plaintext samples must be synthetic "
    "(made-up patients): real patient data never rests on disk in clear."
)

Runner = Callable[..., "subprocess.CompletedProcess[Any]"]

app = typer.Typer(
    help="Onboard a new partner feed: scaffold, host key, dry run, deploy.", no_args_is_help=True
)


# -- scaffold -------------------------------------------------------------------------


def scaffold_command(request: ScaffoldRequest, *, config_dir: Path | None) -> int:
    """Write `<config_dir>/<feed>.yaml` (never overwriting) and empty mapping tables."""
    from batchbridge.onboarding.feed_yaml import (
        mapping_header,
        render_feed_yaml,
        secret_name,
        validate_feed_text,
        write_new_file,
    )
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
    # paramiko loads only for the host-key step.
    from batchbridge.connectors.sources.ssh_keys import fingerprint
    from batchbridge.onboarding.host_keys import key_line, offered_host_keys

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
    from batchbridge.connectors.sources.ssh_keys import fingerprint
    from batchbridge.onboarding.feed_yaml import pin_host_keys, pin_note
    from batchbridge.onboarding.host_keys import key_line

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


def looks_encrypted(sample: Path) -> bool:
    with sample.open("rb") as handle:
        head = handle.read(64)
    # Binary OpenPGP packets start with the high bit set; text files never do in byte 0.
    return head.lstrip().startswith(_OPENPGP_ARMOR) or (bool(head) and head[0] & 0x80 != 0)


def dry_run_command(
    feed: str, sample: Path, *, config_dir: Path | None, plaintext: bool, as_json: bool
) -> int:
    """Dry-run a sample file (nothing loaded); exit non-zero when the file fails whole."""
    from batchbridge.onboarding.dry_run import dry_run_sample, render_dry_run_text

    settings = load_settings(config_dir)
    loaded = load_feed(feed, settings.config_dir)
    if not sample.is_file():
        raise ConfigError(f"sample file {sample} does not exist")
    if plaintext:
        print(PLAINTEXT_WARNING, file=sys.stderr)
        if looks_encrypted(sample):
            raise ConfigError(f"{sample.name} looks OpenPGP-encrypted: drop --plaintext")
    report = dry_run_sample(loaded, sample, plaintext=plaintext)
    if as_json:
        print_json(report.to_dict())
    else:
        print(render_dry_run_text(report))
    return report.exit_code


# -- deploy ---------------------------------------------------------------------------


def _deployment_names(prefect_file: Path) -> set[str]:

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
    from batchbridge.preflight import check_feed
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
        "batchbridge.cli",
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


# -- the typer commands -----------------------------------------------------------------


@app.command("scaffold")
def scaffold_cli(
    feed: FeedArgument,
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant the feed belongs to.")],
    schema: Annotated[str, typer.Option("--schema", help="An existing schema, e.g. lab_results.")],
    host: Annotated[str, typer.Option("--host", help="The partner's SFTP host.")],
    user: Annotated[str, typer.Option("--user", help="Our login on the partner's server.")],
    remote_dir: Annotated[
        str, typer.Option("--remote-dir", help="Folder the partner drops files into.")
    ],
    glob: Annotated[str, typer.Option("--glob", help="File name pattern, e.g. 'RESULTS_*.pgp'.")],
    port: Annotated[int, typer.Option("--port", help="The partner's SFTP port.")] = 22,
    timezone: Annotated[
        str, typer.Option("--timezone", help="Zone of the files' naive timestamps.")
    ] = "UTC",
    cron: Annotated[
        str, typer.Option("--cron", help="Nightly schedule (cron, in the feed's zone).")
    ] = "0 2 * * *",
    config_dir: ConfigDirOption = None,
) -> int:
    """Write a commented feed YAML (and empty mapping tables) for a new partner."""
    # The YAML renderer reads the schema modules (pandera, polars): loaded for this step only.
    from batchbridge.onboarding.feed_yaml import ScaffoldRequest

    request = ScaffoldRequest(
        feed=feed,
        tenant=tenant,
        schema=schema,
        host=host,
        port=port,
        username=user,
        remote_dir=remote_dir,
        glob=glob,
        timezone=timezone,
        cron=cron,
    )
    return scaffold_command(request, config_dir=config_dir)


@app.command("host-key")
def host_key_cli(
    host: Annotated[str, typer.Argument(help="The partner's SFTP host.")],
    port: Annotated[int, typer.Option("--port", help="The partner's SFTP port.")] = 22,
    key_types: Annotated[
        list[str] | None,
        typer.Option(
            "--key-type",
            help="Only these key types: ssh-ed25519, ecdsa, rsa (repeat or comma-separate).",
        ),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per key exchange.")] = 15.0,
    pin: Annotated[
        str | None,
        typer.Option("--pin", help="Write the key(s) into this feed's host_keys.", metavar="FEED"),
    ] = None,
    confirmed: Annotated[
        bool,
        typer.Option(
            "--confirmed", help="The fingerprint was confirmed with the partner out of band."
        ),
    ] = False,
    fingerprints: Annotated[
        list[str] | None,
        typer.Option(
            "--fingerprint",
            help="Pin only the key with this confirmed fingerprint (repeatable).",
            metavar="SHA256:...",
        ),
    ] = None,
    config_dir: ConfigDirOption = None,
) -> int:
    """Show a server's host keys (not trusted) to confirm with the partner, then pin them."""

    from batchbridge.onboarding.host_keys import HOST_KEY_FAMILIES

    families = split_values(key_types)
    unknown = sorted(set(families) - set(HOST_KEY_FAMILIES))
    if unknown:
        raise typer.BadParameter(
            f"unknown key type(s) {', '.join(unknown)} (choose from {', '.join(HOST_KEY_FAMILIES)})"
        )
    return host_key_command(
        host,
        port,
        key_types=families or None,
        timeout=timeout,
        pin_feed=pin,
        confirmed=confirmed,
        fingerprints=split_values(fingerprints) or None,
        config_dir=config_dir,
    )


@app.command("dry-run")
def dry_run_cli(
    feed: FeedArgument,
    sample: Annotated[Path, typer.Argument(help="A sample file from the partner.")],
    plaintext: Annotated[
        bool, typer.Option("--plaintext", help="The sample is synthetic and unencrypted.")
    ] = False,
    as_json: JsonOption = False,
    config_dir: ConfigDirOption = None,
) -> int:
    """Decrypt, verify and validate a sample; load nothing."""
    return dry_run_command(
        feed, sample, config_dir=config_dir, plaintext=plaintext, as_json=as_json
    )


@app.command("deploy")
def deploy_cli(
    feed: FeedArgument,
    apply: Annotated[
        bool, typer.Option("--apply", help="Run the checks, then deploy (prefect deploy).")
    ] = False,
    prefect_file: Annotated[
        Path | None, typer.Option("--prefect-file", help="prefect.yaml to regenerate.")
    ] = None,
    config_dir: ConfigDirOption = None,
) -> int:
    """Print (or --apply) the steps that deploy a feed."""
    return deploy_command(feed, config_dir=config_dir, prefect_file=prefect_file, apply=apply)
