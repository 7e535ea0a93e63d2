"""Who is acting, and which steward role they hold for which tenant."""

from __future__ import annotations

import getpass
import os
from enum import IntEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from batchbridge.config.loader import describe_validation_error, read_yaml
from batchbridge.errors import AccessDeniedError, ConfigError, StewardsFileError

STEWARDS_FILE_ENV = "BATCHBRIDGE_STEWARDS_FILE"

SHARED_ACCOUNTS = frozenset(
    {"root", "admin", "administrator", "postgres", "batchbridge", "prefect"}
)
"""Logins that are not a person: refused as steward identities."""


class Role(IntEnum):
    """Steward roles, each including the ones below it."""

    VIEWER = 1  # list rows, show masked
    STEWARD = 2  # reveal, fix, export, import, release, discard
    ADMIN = 3  # rotate keys


ACTION_ROLES: dict[str, Role] = {
    "list": Role.VIEWER,
    "show": Role.VIEWER,
    "report": Role.VIEWER,
    "reveal": Role.STEWARD,
    "fix": Role.STEWARD,
    "export": Role.STEWARD,
    "import": Role.STEWARD,
    "release": Role.STEWARD,
    "discard": Role.STEWARD,
    "rotate_keys": Role.ADMIN,
}


def _role(value: object) -> object:
    # Roles are written by name; a number or a typo would otherwise meet pydantic's
    # "Input should be 1, 2 or 3", which says nothing about the names a person can type.
    if isinstance(value, Role):
        return value
    if isinstance(value, str) and value.strip().upper() in Role.__members__:
        return Role[value.strip().upper()]
    allowed = ", ".join(role.name.lower() for role in Role)
    shown = f"unknown role {value!r}" if isinstance(value, str) else "not a role name"
    raise ValueError(f"{shown} (allowed: {allowed})")


StewardRole = Annotated[Role, BeforeValidator(_role)]

TenantRoles = Annotated[
    dict[str, StewardRole],
    # `person:` with no tenants under it reads as null: that person holds no role.
    BeforeValidator(lambda value: {} if value is None else value),
]


class StewardDirectory(BaseModel):
    """`stewards.yaml`: person -> tenant -> role. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stewards: dict[str, TenantRoles] = Field(default_factory=dict)

    def role(self, actor: str, tenant: str) -> Role | None:
        """The actor's role for a tenant, if any."""
        return self.stewards.get(actor, {}).get(tenant)

    def tenants(self, actor: str, minimum: Role = Role.VIEWER) -> list[str]:
        """Tenants where the actor holds at least `minimum`."""
        return sorted(t for t, r in self.stewards.get(actor, {}).items() if r >= minimum)


def load_directory(path: Path) -> StewardDirectory:
    """Read a steward directory file; a missing file reads as an empty one.

    For editing the file (onboarding adds people to a file it may create). Commands that
    act as a steward use `open_directory`, which refuses a missing file.
    """
    if not path.exists():
        return StewardDirectory()
    raw = read_yaml(path, label=str(path))
    try:
        return StewardDirectory.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from None


def directory_path(config_dir: Path) -> Path:
    """BATCHBRIDGE_STEWARDS_FILE, else `stewards.yaml` beside the feeds folder."""
    configured = os.environ.get(STEWARDS_FILE_ENV)
    return Path(configured) if configured else config_dir.parent / "stewards.yaml"


def _how_chosen(config_dir: Path) -> str:
    if os.environ.get(STEWARDS_FILE_ENV):
        return f"from {STEWARDS_FILE_ENV}"
    return (
        f"stewards.yaml beside the feeds folder {config_dir}; "
        f"set {STEWARDS_FILE_ENV} to use another file"
    )


def open_directory(config_dir: Path) -> StewardDirectory:
    """The steward directory steward commands act on; StewardsFileError when it is absent.

    Never an empty directory for a missing or unreadable file: that would answer every
    steward "access denied" instead of saying the setup is wrong. The message names the
    path looked for and how it was chosen.
    """
    path = directory_path(config_dir)
    shown = path.absolute()
    if not path.exists():
        raise StewardsFileError(
            f"steward directory {shown} does not exist ({_how_chosen(config_dir)})"
        )
    if not path.is_file() or not os.access(path, os.R_OK):
        what = "is not a file" if not path.is_file() else "cannot be read (permission denied)"
        raise StewardsFileError(
            f"steward directory {shown} {what} ({_how_chosen(config_dir)})",
            reason="stewards_file_unreadable",
        )
    return load_directory(path)


def current_actor() -> str:
    """The person acting: BATCHBRIDGE_ACTOR (an SSO identity), else the OS login.

    Shared logins are refused: every audited action must name a person.
    """
    actor = os.environ.get("BATCHBRIDGE_ACTOR") or getpass.getuser()
    if actor.lower() in SHARED_ACCOUNTS:
        raise AccessDeniedError(
            f"{actor!r} is a shared account; set BATCHBRIDGE_ACTOR to your own identity"
        )
    return actor


def required_role(action: str) -> Role:
    """The least role an action needs."""
    try:
        return ACTION_ROLES[action]
    except KeyError:
        raise ConfigError(f"unknown steward action {action!r}") from None


def is_allowed(directory: StewardDirectory, actor: str, tenant: str, action: str) -> bool:
    """Whether `actor` may do `action` on `tenant`'s rows."""
    role = directory.role(actor, tenant)
    return role is not None and role >= required_role(action)
