"""Resolve secret references (env:, file:, prefect-secret:) at the point of use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

from pydantic import SecretStr

from batchbridge.errors import ConfigError, SecretNotFoundError


def resolve_secret(ref: str, *, base_dir: Path | None = None) -> SecretStr:
    """Return the secret a reference points to; a missing one is an error naming the reference.

    `file:` paths are relative to `base_dir` (the feed YAML's folder) unless absolute.
    """
    scheme, _, name = ref.partition(":")
    if not name:
        raise ConfigError(
            f"secret reference {ref!r} has no name (use env:, file: or prefect-secret:)"
        )
    if scheme == "env":
        value = os.environ.get(name)
        if value is None or value == "":
            raise SecretNotFoundError(f"secret {ref} is not set in the environment")
        return SecretStr(value)
    if scheme == "file":
        path = Path(name).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            return SecretStr(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SecretNotFoundError(f"secret {ref}: file {path} does not exist") from None
        except OSError as exc:
            raise SecretNotFoundError(
                f"secret {ref}: cannot read {path} ({exc.strerror})"
            ) from None
    if scheme == "prefect-secret":
        return _resolve_prefect_secret(ref, name)
    raise ConfigError(
        f"secret reference {ref!r}: unknown scheme {scheme!r} (env, file, prefect-secret)"
    )


def _resolve_prefect_secret(ref: str, block_name: str) -> SecretStr:
    # Imported lazily: resolving env/file secrets must not start Prefect's client.
    from prefect.blocks.system import Secret

    try:
        block = cast("Secret[str]", Secret.load(block_name, _sync=True))  # type: ignore[call-arg]
    except ValueError:
        raise SecretNotFoundError(
            f"secret {ref}: no Prefect Secret block named {block_name!r}"
        ) from None
    value = block.get()
    if not isinstance(value, str) or not value:
        raise SecretNotFoundError(f"secret {ref}: Prefect Secret block {block_name!r} is empty")
    return SecretStr(value)
