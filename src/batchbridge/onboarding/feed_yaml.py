"""Write a new partner's commented feed YAML, and pin confirmed host keys into an existing one."""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from batchbridge.config import UNPINNED_HOST_KEY, FeedConfig, list_feeds, load_feed, load_feed_file
from batchbridge.errors import ConfigError
from batchbridge.validations.registry import get_schema
from batchbridge.validations.schemas.lab_results import IDENTIFIABLE_COLUMNS

# A stub target never receives columns that identify a person (data minimization);
# a target may list them explicitly after review.
_IDENTIFYING = frozenset(IDENTIFIABLE_COLUMNS)


@dataclass(frozen=True)
class ScaffoldRequest:
    """What `onboard scaffold` was told about the new partner."""

    feed: str
    tenant: str
    schema: str
    host: str
    port: int
    username: str
    remote_dir: str
    glob: str
    timezone: str = "UTC"
    cron: str = "0 2 * * *"


def secret_name(tenant: str, what: str) -> str:
    """Environment variable a tenant's secret is expected in, e.g. ACME_LAB_SFTP_PRIVATE_KEY."""
    return f"{tenant.upper()}_{what}"


def _q(value: object) -> str:
    # JSON scalars are valid YAML flow scalars: quoting this way is always safe.
    return json.dumps(value, ensure_ascii=False)


class _IndentingDumper(yaml.SafeDumper):
    """Indents list items under their key, as the rest of the file is written."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _existing_targets(config_dir: Path, schema: str) -> tuple[str, list[dict[str, Any]]] | None:
    """Targets of an existing feed on the same schema: tenants share warehouse tables."""
    if not config_dir.is_dir():
        return None  # the first feed of a new config folder
    for name in list_feeds(config_dir):
        try:
            config = load_feed(name, config_dir).config
        except ConfigError:
            continue
        if config.schema_name == schema:
            # kind is the discriminator: written even though it equals its default.
            dumped = [
                {"name": t.name, "kind": t.kind, **t.model_dump(mode="json", exclude_defaults=True)}
                for t in config.targets
            ]
            return name, dumped
    return None


def _targets_block(config_dir: Path, request: ScaffoldRequest) -> list[str]:
    existing = _existing_targets(config_dir, request.schema)
    if existing is not None:
        feed, targets = existing
        body = yaml.dump(
            targets, Dumper=_IndentingDumper, sort_keys=False, default_flow_style=False
        ).rstrip()
        return [
            f"# Copied from feed {feed} (same schema): this tenant's rows land in the same",
            "# tables, keyed by tenant. Each target receives only the columns it lists.",
            "targets:",
            *("  " + line for line in body.splitlines()),
        ]
    schema = get_schema(request.schema)
    columns = [c for c in schema.output_columns if c not in _IDENTIFYING]
    return [
        "# TODO: the warehouse this feed loads. Each target receives only the columns it lists",
        "# (data minimization); identifying columns are left out of this stub on purpose.",
        "targets:",
        "  - name: warehouse",
        "    kind: postgres",
        "    url: env:WAREHOUSE_DATABASE_URL      # postgresql+psycopg://user:password@host/db",
        f"    table: {_q(request.schema)}",
        "    columns:",
        *(f"      - {column}" for column in columns),
    ]


def render_feed_yaml(request: ScaffoldRequest, *, config_dir: Path, today: str) -> str:
    """The commented feed YAML for a new partner; secrets are references named after the tenant."""
    schema = get_schema(request.schema)
    env = {
        what: f"env:{secret_name(request.tenant, what)}"
        for what in (
            "SFTP_PRIVATE_KEY",
            "PGP_PRIVATE_KEY",
            "PGP_PASSPHRASE",
            "PARTNER_SIGNING_KEY",
            "PSEUDONYM_KEY",
            "QUARANTINE_KEY",
            "ALERT_WEBHOOK_URL",
        )
    }
    mapping_lines = [
        f"  {name}: ../mappings/{request.tenant}_{name}.csv   # the partner's codes -> standard"
        for name in schema.required_mappings
    ]
    lines = [
        f"# Partner feed {request.feed} (tenant {request.tenant}), scaffolded by",
        f"# `batchbridge onboard scaffold` on {today}. Unknown keys are errors.",
        "# Secrets are references (env:NAME, file:PATH relative to this file,",
        "# prefect-secret:BLOCK), never values. Next steps (README, 'Onboarding a partner'):",
        f"#   batchbridge onboard host-key {request.host} --port {request.port}",
        "#   set the secrets named below, fill the mapping table",
        f"#   batchbridge onboard dry-run {request.feed} SAMPLE_FILE",
        f"#   batchbridge feeds check {request.feed} && batchbridge health {request.feed}",
        f"#   batchbridge onboard deploy {request.feed}",
        f"feed: {request.feed}",
        f"tenant: {request.tenant}",
        f"description: {_q(f'Partner feed {request.feed} for tenant {request.tenant}')}",
        f"schema: {request.schema}",
        "# Zone of the naive timestamps in the partner's files (ask them; not the server's).",
        f"timezone: {_q(request.timezone)}",
        "",
        "source:",
        "  kind: sftp",
        f"  host: {_q(request.host)}",
        f"  port: {request.port}",
        f"  username: {_q(request.username)}",
        f"  remote_dir: {_q(request.remote_dir)}",
        f"  glob: {_q(request.glob)}",
        "  host_keys:",
        "    # NOT PINNED YET: runs refuse to connect until the partner's host key is pinned.",
        f"    # `batchbridge onboard host-key {request.host} --port {request.port}` shows it;",
        "    # confirm the fingerprint with the partner out of band, then add",
        f"    # `--pin {request.feed} --confirmed`.",
        f"    - {UNPINNED_HOST_KEY}",
        f"  private_key: {env['SFTP_PRIVATE_KEY']}   # our SSH client key (OpenSSH/PEM)",
        "  stable_seconds: 5       # pause between the two listings that prove a file complete",
        "  min_age_seconds: 120    # a file must be this old before it is fetched",
        "  # processed_dir: processed   # move files here once loaded (relative to remote_dir)",
        "",
        "pgp:",
        "  engine: gnupg           # or pgpy (pure Python, files up to 256 MiB)",
        f"  private_key: {env['PGP_PRIVATE_KEY']}   # ours; the partner encrypts to it",
        f"  passphrase: {env['PGP_PASSPHRASE']}",
        "  partner_public_keys:    # the partner's signing key(s); confirm fingerprints too",
        f"    - {env['PARTNER_SIGNING_KEY']}",
        "  key_expiry_warning_days: 30",
        "",
        "format:",
        '  delimiter: ","',
        "  encoding: utf-8",
        "  quoting: rfc4180",
        "  header: true",
        "  trailer_prefix: TRAILER   # last record 'TRAILER,<rows>'; null when there is none",
        "",
        "mappings:",
        *mapping_lines,
        "",
        f"pseudonym_key: {env['PSEUDONYM_KEY']}     # HMAC key of patient_key, per tenant",
        f"quarantine_key: {env['QUARANTINE_KEY']}   # AES key of quarantined rows",
        "",
        *_targets_block(config_dir, request),
        "",
        "schedule:",
        f"  cron: {_q(request.cron)}",
        f"  timezone: {_q(request.timezone)}",
        "",
        "alerts:",
        f"  # webhook: {env['ALERT_WEBHOOK_URL']}   # Slack/Teams incoming webhook",
        "  # arrival:",
        '  #   expected_by: "01:30"   # the partner\'s SLA, in the feed time zone',
        "  quarantine_rate_threshold: 0.05",
    ]
    return "\n".join(lines) + "\n"


def validate_feed_text(text: str, feed: str) -> FeedConfig:
    """Parse YAML text as a feed config; a ConfigError naming the key otherwise."""
    try:
        return FeedConfig.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{feed}: the scaffolded YAML would be invalid: {problems}") from None


def mapping_header(schema_name: str, mapping: str) -> str | None:
    """Header line of an empty mapping table for `mapping` (None when the schema has none)."""
    columns = get_schema(schema_name).mapping_columns.get(mapping)
    return ",".join(columns) + "\n" if columns else None


def write_new_file(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Create `path` with `text`; refuse (ConfigError) when it exists, never overwriting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; not overwriting it") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


# -- pinning -------------------------------------------------------------------------

_HOST_KEYS_LINE = re.compile(r"^(?P<indent>[ ]+)host_keys:[ ]*(?:#.*)?$")


def replace_host_keys(text: str, key_lines: list[str], *, note: str) -> str:
    """`text` with the block list under `source.host_keys` replaced by `key_lines`.

    Comments elsewhere are kept; the block's own comments are replaced by `note`.
    ConfigError when the YAML has no block-style host_keys list to edit.
    """
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        match = _HOST_KEYS_LINE.match(line.rstrip("\r\n"))
        if match is None:
            continue
        indent = len(match["indent"])
        end = index + 1
        while end < len(lines):
            stripped = lines[end].strip()
            depth = len(lines[end]) - len(lines[end].lstrip(" "))
            # Blank lines, anything deeper than the key, and "- " items at the key's own
            # indentation (YAML allows both list styles) belong to the block.
            inside = (
                not stripped or depth > indent or (depth == indent and stripped.startswith("- "))
            )
            if not inside:
                break
            end += 1
        while end > index + 1 and not lines[end - 1].strip():
            end -= 1  # keep the blank lines that separate the next key
        pad = " " * (indent + 2)
        block = [f"{pad}# {note}\n", *(f"{pad}- {_q(key)}\n" for key in key_lines)]
        return "".join([*lines[: index + 1], *block, *lines[end:]])
    raise ConfigError(
        "no block-style `host_keys:` list found to edit; add the key lines by hand:\n"
        + "\n".join(f"    - {_q(key)}" for key in key_lines)
    )


def pin_host_keys(feed: str, config_dir: Path, key_lines: list[str], *, note: str) -> list[str]:
    """Write `key_lines` as the feed's pinned host keys; returns the keys pinned before.

    The edited text must load as the same feed with exactly these keys, or nothing is
    written. The file is replaced atomically and keeps its permissions.
    """
    loaded = load_feed(feed, config_dir)
    before = list(loaded.config.source.host_keys) if loaded.config.source.kind == "sftp" else []
    if loaded.config.source.kind != "sftp":
        raise ConfigError(f"feed {feed} has a {loaded.config.source.kind} source: no host keys")
    path = loaded.path
    edited = replace_host_keys(path.read_text(encoding="utf-8"), key_lines, note=note)
    config = validate_feed_text(edited, feed)
    if config.source.kind != "sftp" or list(config.source.host_keys) != key_lines:
        raise ConfigError(f"{path.name}: editing host_keys went wrong; the file is unchanged")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(edited)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    load_feed_file(path)  # belt and braces: what is on disk loads
    return [key for key in before if key != UNPINNED_HOST_KEY]


def pin_note(fingerprints: list[str]) -> str:
    """The comment written above freshly pinned keys."""
    day = datetime.now(UTC).date().isoformat()
    return f"pinned {day} after out-of-band confirmation of {', '.join(fingerprints)}"
