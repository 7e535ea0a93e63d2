"""How the workbench runs: who may log in and how, session lifetimes, where it is reached."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from batchbridge.errors import ConfigError

AuthMode = Literal["local", "header", "oidc"]
AUTH_MODES: tuple[AuthMode, ...] = ("local", "header", "oidc")

MIN_SECRET_LENGTH = 32
"""Characters a configured session secret needs at least (it signs every session cookie)."""

# The environment variables `batchbridge steward serve` reads (settings_from_env). The two
# secrets are references (env:NAME, file:PATH), resolved by the CLI.
ENV_AUTH = "BATCHBRIDGE_WEB_AUTH"
ENV_SESSION_SECRET = "BATCHBRIDGE_WEB_SESSION_SECRET"  # noqa: S105 (a variable name)
ENV_USERS_FILE = "BATCHBRIDGE_WEB_USERS_FILE"
ENV_TRUSTED_PROXIES = "BATCHBRIDGE_WEB_TRUSTED_PROXIES"
ENV_IDENTITY_HEADER = "BATCHBRIDGE_WEB_IDENTITY_HEADER"
ENV_PUBLIC_URL = "BATCHBRIDGE_WEB_PUBLIC_URL"
ENV_IDLE_MINUTES = "BATCHBRIDGE_WEB_IDLE_MINUTES"
ENV_ABSOLUTE_HOURS = "BATCHBRIDGE_WEB_ABSOLUTE_HOURS"
ENV_PREFECT_UI_URL = "PREFECT_UI_URL"
ENV_OIDC_METADATA_URL = "BATCHBRIDGE_OIDC_METADATA_URL"
ENV_OIDC_CLIENT_ID = "BATCHBRIDGE_OIDC_CLIENT_ID"
ENV_OIDC_CLIENT_SECRET = "BATCHBRIDGE_OIDC_CLIENT_SECRET"  # noqa: S105 (a variable name)
ENV_OIDC_SCOPE = "BATCHBRIDGE_OIDC_SCOPE"
ENV_OIDC_IDENTITY_CLAIM = "BATCHBRIDGE_OIDC_IDENTITY_CLAIM"

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: str | None) -> bool:
    """Whether `host` (a bind address or a client address) is this machine only."""
    if not host:
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_networks(values: str | tuple[str, ...]) -> tuple[str, ...]:
    """Proxy addresses or networks (comma-separated or a tuple), each checked; ConfigError."""
    parts = values.split(",") if isinstance(values, str) else list(values)
    found: list[str] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        try:
            found.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ConfigError(
                f"{ENV_TRUSTED_PROXIES}: {part!r} is not an IP address or network"
            ) from None
    return tuple(found)


@dataclass(frozen=True)
class OidcSettings:
    """An OpenID Connect provider: discovery document, this client, the claim naming a person."""

    metadata_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str = "openid email profile"
    identity_claim: str = "email"


@dataclass(frozen=True)
class WorkbenchSettings:
    """Everything the app needs besides the ledger and feed settings (config.settings).

    `session_secret` is the resolved value (web does not resolve secret references; the
    CLI does); empty means "generate one per start", allowed for the local login only.
    `on_loopback` says whether the server is bound to loopback only: the local login is
    refused otherwise. `public_url` is where people reach the app (behind the proxy); an
    https one makes cookies Secure and is required for OIDC (the callback address).
    """

    config_dir: Path
    database_url: str
    auth: AuthMode = "local"
    session_secret: str = field(default="", repr=False)
    idle_timeout_seconds: int = 15 * 60
    absolute_timeout_seconds: int = 8 * 60 * 60
    local_users_file: Path | None = None
    trusted_proxies: tuple[str, ...] = ()
    identity_header: str = "X-Forwarded-User"
    public_url: str | None = None
    prefect_ui_url: str | None = None
    on_loopback: bool = True
    oidc: OidcSettings | None = None
    login_max_failures: int = 5
    login_window_seconds: int = 5 * 60

    @property
    def https(self) -> bool:
        """Whether people reach the app over https (cookies are then Secure)."""
        return bool(self.public_url and self.public_url.lower().startswith("https://"))


def check_settings(settings: WorkbenchSettings) -> None:
    """Refuse settings the app must not start with; ConfigError naming what to change."""
    if settings.auth not in AUTH_MODES:
        raise ConfigError(f"{ENV_AUTH}: unknown login mode (use one of {', '.join(AUTH_MODES)})")
    if settings.auth == "local":
        if not settings.on_loopback:
            raise ConfigError(
                "the local login is for the demo and tests only: bind to 127.0.0.1, "
                f"or set {ENV_AUTH} to oidc or header"
            )
        if settings.local_users_file is None:
            raise ConfigError(f"the local login needs a users file ({ENV_USERS_FILE})")
    elif len(settings.session_secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{ENV_SESSION_SECRET} must name a secret of at least {MIN_SECRET_LENGTH} "
            f"characters for the {settings.auth} login"
        )
    if settings.session_secret and len(settings.session_secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{ENV_SESSION_SECRET}: the secret is shorter than {MIN_SECRET_LENGTH} characters"
        )
    if settings.auth == "header":
        if not settings.trusted_proxies:
            raise ConfigError(f"the header login needs {ENV_TRUSTED_PROXIES} (proxy addresses)")
        parse_networks(settings.trusted_proxies)
    if settings.auth == "oidc":
        if settings.oidc is None:
            raise ConfigError(
                f"the oidc login needs {ENV_OIDC_METADATA_URL}, {ENV_OIDC_CLIENT_ID} "
                f"and {ENV_OIDC_CLIENT_SECRET}"
            )
        if not settings.public_url:
            raise ConfigError(f"the oidc login needs {ENV_PUBLIC_URL} (its callback address)")
    if settings.idle_timeout_seconds <= 0 or settings.absolute_timeout_seconds <= 0:
        raise ConfigError("session timeouts must be positive")


def _positive(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    if not raw.strip().isdigit() or int(raw) <= 0:
        raise ConfigError(f"{name} must be a positive whole number")
    return int(raw)


def settings_from_env(
    *,
    config_dir: Path,
    database_url: str,
    host: str,
    resolve_secret: Callable[[str], str],
    auth: str | None = None,
    users_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> WorkbenchSettings:
    """Workbench settings from BATCHBRIDGE_WEB_* / BATCHBRIDGE_OIDC_* variables.

    `resolve_secret` turns a secret reference (env:, file:) into its value: the CLI passes
    connectors.secrets, which this room may not import. `auth` and `users_file` (command
    line options) win over the environment. Checked with `check_settings`.
    """
    env = os.environ if environ is None else environ
    mode = (auth or env.get(ENV_AUTH) or "local").strip().lower()
    if mode not in AUTH_MODES:
        raise ConfigError(f"{ENV_AUTH}: unknown login mode (use one of {', '.join(AUTH_MODES)})")
    secret_ref = env.get(ENV_SESSION_SECRET)
    secret = resolve_secret(secret_ref).strip() if secret_ref else ""
    oidc = None
    if mode == "oidc":
        missing = [
            n
            for n in (ENV_OIDC_METADATA_URL, ENV_OIDC_CLIENT_ID, ENV_OIDC_CLIENT_SECRET)
            if not env.get(n)
        ]
        if missing:
            raise ConfigError(f"the oidc login needs {', '.join(missing)}")
        oidc = OidcSettings(
            metadata_url=env[ENV_OIDC_METADATA_URL],
            client_id=env[ENV_OIDC_CLIENT_ID],
            client_secret=resolve_secret(env[ENV_OIDC_CLIENT_SECRET]).strip(),
            scope=env.get(ENV_OIDC_SCOPE) or "openid email profile",
            identity_claim=env.get(ENV_OIDC_IDENTITY_CLAIM) or "email",
        )
    users = users_file or (Path(env[ENV_USERS_FILE]) if env.get(ENV_USERS_FILE) else None)
    if mode == "local" and users is None:
        users = config_dir.parent / "web-users.yaml"
    settings = WorkbenchSettings(
        config_dir=config_dir,
        database_url=database_url,
        auth=mode,
        session_secret=secret,
        idle_timeout_seconds=60 * _positive(env, ENV_IDLE_MINUTES, 15),
        absolute_timeout_seconds=3600 * _positive(env, ENV_ABSOLUTE_HOURS, 8),
        local_users_file=users.resolve() if users is not None else None,
        trusted_proxies=parse_networks(env.get(ENV_TRUSTED_PROXIES, "")),
        identity_header=env.get(ENV_IDENTITY_HEADER) or "X-Forwarded-User",
        public_url=(env.get(ENV_PUBLIC_URL) or "").rstrip("/") or None,
        prefect_ui_url=env.get(ENV_PREFECT_UI_URL) or None,
        on_loopback=is_loopback(host),
        oidc=oidc,
    )
    check_settings(settings)
    return settings
