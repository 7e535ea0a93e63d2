"""Who is acting, and which steward role they hold for which tenant."""

from __future__ import annotations

import getpass
import os
from enum import IntEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from batchbridge.errors import AccessDeniedError, ConfigError

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


class StewardDirectory(BaseModel):
    """`stewards.yaml`: person -> tenant -> role. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stewards: dict[str, dict[str, Role]] = Field(default_factory=dict)

    def role(self, actor: str, tenant: str) -> Role | None:
        """The actor's role for a tenant, if any."""
        return self.stewards.get(actor, {}).get(tenant)

    def tenants(self, actor: str, minimum: Role = Role.VIEWER) -> list[str]:
        """Tenants where the actor holds at least `minimum`."""
        return sorted(t for t, r in self.stewards.get(actor, {}).items() if r >= minimum)


def _parse_role(value: object) -> object:
    if isinstance(value, str):
        try:
            return Role[value.upper()]
        except KeyError:
            return value
    return value


def load_directory(path: Path) -> StewardDirectory:
    """Read the steward directory; a missing file means nobody may act."""
    if not path.is_file():
        return StewardDirectory()
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if isinstance(raw, dict) and isinstance(raw.get("stewards"), dict):
        raw["stewards"] = {
            actor: {tenant: _parse_role(role) for tenant, role in (tenants or {}).items()}
            for actor, tenants in raw["stewards"].items()
        }
    try:
        return StewardDirectory.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path.name}: {problems}") from None


def directory_path(config_dir: Path) -> Path:
    """BATCHBRIDGE_STEWARDS_FILE, else `stewards.yaml` beside the feeds folder."""
    configured = os.environ.get("BATCHBRIDGE_STEWARDS_FILE")
    return Path(configured) if configured else config_dir.parent / "stewards.yaml"


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
