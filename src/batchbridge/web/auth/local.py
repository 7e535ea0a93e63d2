"""The local login for the demo and tests: a users file of argon2id password hashes.

`users.yaml`:  `users: {dana.steward@acme-health.example: "$argon2id$v=19$..."}`.
Refused unless the server is bound to loopback (WorkbenchSettings.on_loopback) and the
client is on loopback too. Unknown users cost the same hash check as known ones, so
the answer's timing does not tell which names exist.
"""

from __future__ import annotations

from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from batchbridge.config.loader import describe_validation_error, read_yaml
from batchbridge.config.stewards import SHARED_ACCOUNTS
from batchbridge.errors import ConfigError

_HASHER = PasswordHasher()
# Checked against when the user is unknown: the same work as a real check.
_DUMMY_HASH = _HASHER.hash("batchbridge: no such user")


class UsersFile(BaseModel):
    """person -> argon2id hash. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: dict[str, str] = Field(default_factory=dict)

    @field_validator("users")
    @classmethod
    def _people_and_hashes(cls, users: dict[str, str]) -> dict[str, str]:
        for person, hashed in users.items():
            if person.strip().lower() in SHARED_ACCOUNTS:
                raise ValueError(f"{person!r} is a shared account, not a person")
            if not hashed.startswith("$argon2id$"):
                raise ValueError(f"the password of {person!r} is not an argon2id hash")
        return users


def hash_password(password: str) -> str:
    """An argon2id hash for the users file (argon2-cffi's default parameters)."""
    return _HASHER.hash(password)


def load_users(path: Path) -> UsersFile:
    """Read a users file; ConfigError when it is missing or wrong (names the path only)."""
    if not path.is_file():
        raise ConfigError(f"users file {path} does not exist (the local login needs one)")
    raw = read_yaml(path, label=str(path))
    try:
        return UsersFile.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from None


def check_password(users: UsersFile, name: str, password: str) -> str | None:
    """The user's name as written in the file when the password matches; else None."""
    by_lower = {person.lower(): person for person in users.users}
    person = by_lower.get(name.strip().lower())
    hashed = users.users[person] if person is not None else _DUMMY_HASH
    try:
        _HASHER.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    return person
