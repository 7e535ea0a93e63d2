"""`batchbridge onboard`: scaffold a partner feed, fetch its host key, dry-run a sample, deploy."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from batchbridge.cli.onboard_deploy import deploy_command
from batchbridge.cli.onboard_host_key import host_key_command
from batchbridge.cli.output import print_json
from batchbridge.cli.params import ConfigDirOption, FeedArgument, JsonOption, split_values
from batchbridge.config import feed_path, load_feed
from batchbridge.config.settings import load_settings
from batchbridge.errors import ConfigError

if TYPE_CHECKING:
    from batchbridge.onboarding.dry_run import DryRunReport
    from batchbridge.onboarding.feed_yaml import ScaffoldRequest

PLAINTEXT_WARNING = (
    "WARNING: --plaintext reads the sample unencrypted. Plaintext samples must be synthetic "
    "(made-up patients): real patient data never rests on disk in clear."
)

app = typer.Typer(
    help="Onboard a new partner feed: scaffold, host key, dry run, deploy.", no_args_is_help=True
)


# -- scaffold -------------------------------------------------------------------------


def scaffold_command(
    request: ScaffoldRequest, *, config_dir: Path | None, stewards: Sequence[str] = ()
) -> int:
    """Write `<config_dir>/<feed>.yaml` (never overwriting) and empty mapping tables.

    Lists every secret the rendered config references; gives each `stewards` entry
    (PERSON[:ROLE]) its role for the tenant in the steward directory, else prints how.
    """
    # The YAML renderer reads the schema modules (pandera, polars): loaded for this step only.
    from batchbridge.config.stewards import directory_path
    from batchbridge.onboarding.feed_yaml import (
        mapping_header,
        render_feed_yaml,
        validate_feed_text,
        write_new_file,
    )
    from batchbridge.onboarding.secrets_needed import render_secrets_needed, secrets_needed
    from batchbridge.onboarding.stewards_file import (
        manual_steward_lines,
        parse_grant,
        plan_stewards_edit,
        write_stewards_edit,
    )
    from batchbridge.validations.registry import get_schema

    settings = load_settings(config_dir)
    schema = get_schema(request.schema)
    path = feed_path(request.feed, settings.config_dir)
    if path.exists():
        raise ConfigError(f"{path} already exists; not overwriting it")
    grants = [parse_grant(value) for value in split_values(stewards)]
    text = render_feed_yaml(
        request, config_dir=settings.config_dir, today=datetime.now(UTC).date().isoformat()
    )
    config = validate_feed_text(text, request.feed)
    stewards_file = directory_path(settings.config_dir)
    # Planned (and checked) before anything is written: a bad steward file stops here.
    edit = plan_stewards_edit(stewards_file, config.tenant, grants) if grants else None
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
    print(
        "secrets the feed needs (from the YAML just written): set each environment variable "
        "where the flows run,\nor change its reference to file:PATH or prefect-secret:BLOCK:"
    )
    for line in render_secrets_needed(secrets_needed(config)):
        print(line)
    if edit is None:
        for line in manual_steward_lines(stewards_file, config.tenant):
            print(line)
    else:
        write_stewards_edit(edit)
        for grant in edit.added:
            print(f"stewards: {grant.person} is {grant.role} of tenant {config.tenant}")
        if edit.added:
            print(f"  (added to {stewards_file}; its other entries and comments are unchanged)")
        for person, role in edit.kept:
            print(f"stewards: {person} holds {role} for tenant {config.tenant} already (kept)")
    print(f"next: batchbridge onboard host-key {request.host} --port {request.port}")
    return 0


# -- dry run --------------------------------------------------------------------------

_OPENPGP_ARMOR = b"-----BEGIN PGP MESSAGE-----"


def looks_encrypted(sample: Path) -> bool:
    with sample.open("rb") as handle:
        head = handle.read(64)
    # Binary OpenPGP packets start with the high bit set; text files never do in byte 0.
    return head.lstrip().startswith(_OPENPGP_ARMOR) or (bool(head) and head[0] & 0x80 != 0)


def dry_run_command(
    feed: str,
    sample: Path,
    *,
    config_dir: Path | None,
    plaintext: bool,
    as_json: bool,
    unmapped_out: Path | None = None,
) -> int:
    """Dry-run a sample file (nothing loaded); with `unmapped_out`, write its unmapped codes.

    Exits 4 or 5 when the file fails whole, 9 when its quarantine rate is over the
    feed's alert threshold (a nightly run would alert), else 0.
    """
    # Polars, pandera and the decryption engines load only for a dry run.
    from batchbridge.onboarding.dry_run import (
        dry_run_sample,
        render_dry_run_text,
        threshold_message,
    )

    settings = load_settings(config_dir)
    loaded = load_feed(feed, settings.config_dir)
    if not sample.is_file():
        raise ConfigError(f"sample file {sample} does not exist")
    if unmapped_out is not None and unmapped_out.exists():
        raise ConfigError(f"{unmapped_out} already exists; not overwriting it")
    if plaintext:
        print(PLAINTEXT_WARNING, file=sys.stderr)
        if looks_encrypted(sample):
            raise ConfigError(f"{sample.name} looks OpenPGP-encrypted: drop --plaintext")
    report = dry_run_sample(loaded, sample, plaintext=plaintext)
    # With --json, stdout holds the JSON only: the other lines go to stderr.
    notes = sys.stderr if as_json else sys.stdout
    if as_json:
        print_json(report.to_dict())
        over = threshold_message(report)
        if over is not None:
            print(over, file=notes)
    else:
        print(render_dry_run_text(report))
    if unmapped_out is not None:
        for line in _write_unmapped(report, unmapped_out):
            print(line, file=notes)
    return report.exit_code


def _write_unmapped(report: DryRunReport, out: Path) -> list[str]:
    """Write the unmapped-codes template(s); the lines that say what was written."""
    # Loaded already by the dry run that made `report`.
    from batchbridge.onboarding.dry_run import (
        COUNT_COLUMN,
        display_code,
        template_paths,
        unmapped_template,
    )
    from batchbridge.onboarding.feed_yaml import write_new_file

    if report.failed_stage is not None:
        return [f"unmapped codes: {out} not written (the file fails whole)"]
    pending = [c for c in report.coverage if c.unmapped]
    if not pending:
        return [f"unmapped codes: none, {out} not written"]
    lines: list[str] = []
    for cov, path in zip(pending, template_paths(out, pending).values(), strict=True):
        text, left_out = unmapped_template(cov)
        write_new_file(path, text)
        lines.append(
            f"unmapped codes: wrote {path}: {len(cov.unmapped) - len(left_out)} code(s) of "
            f"{cov.table}; fill in the empty columns, then copy the rows into {cov.table}\n"
            f"  (leave out the last column, {COUNT_COLUMN}: the sample's row count per code)"
        )
        if left_out:
            shown = ", ".join(display_code(code) for code in left_out[:10])
            lines.append(
                f"  left out {len(left_out)} code(s) a spreadsheet would run as a formula "
                f"(add them by hand if they are real): {shown}"
            )
    return lines


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
    stewards: Annotated[
        list[str] | None,
        typer.Option(
            "--steward",
            help="Give this person a role for the tenant in stewards.yaml (repeatable; "
            "role viewer, steward or admin, default steward; existing entries are kept).",
            metavar="PERSON[:ROLE]",
        ),
    ] = None,
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
    return scaffold_command(request, config_dir=config_dir, stewards=stewards or ())


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
    # paramiko loads only for the host-key step.
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
    unmapped_out: Annotated[
        Path | None,
        typer.Option(
            "--unmapped-out",
            help="Write the sample's codes missing from the mapping table to this new CSV, "
            "with their row counts, to fill in (never overwrites).",
            metavar="FILE",
        ),
    ] = None,
    as_json: JsonOption = False,
    config_dir: ConfigDirOption = None,
) -> int:
    """Decrypt, verify and validate a sample; load nothing.

    Exit 0; 4 or 5 when the file fails whole; 9 when more rows would be quarantined
    than the feed's alerts.quarantine_rate_threshold allows.
    """
    return dry_run_command(
        feed,
        sample,
        config_dir=config_dir,
        plaintext=plaintext,
        as_json=as_json,
        unmapped_out=unmapped_out,
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
