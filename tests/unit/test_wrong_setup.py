"""A wrong setup is an error naming what is wrong: no empty ledger, no empty steward list."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from batchbridge.config.settings import load_settings
from batchbridge.config.stewards import Role, open_directory
from batchbridge.errors import (
    ConfigError,
    LedgerNotFoundError,
    StewardsFileError,
)
from batchbridge.ledger.migrate import alembic_config, masked_url
from batchbridge.ledger.store import LedgerStore

NO_FILE_HINT = "(a run creates it; check BATCHBRIDGE_DATABASE_URL or BATCHBRIDGE_VAR_DIR)"
NO_TABLES_HINT = "(a run creates them; check BATCHBRIDGE_DATABASE_URL)"


def _revision(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one())
    finally:
        engine.dispose()


# the ledger ---------------------------------------------------------------------------


def test_missing_sqlite_ledger_is_an_error_and_nothing_is_created(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "x.db"
    url = f"sqlite:///{path}"
    with pytest.raises(LedgerNotFoundError) as caught:
        LedgerStore.open_existing(url)
    assert str(caught.value) == f"no ledger at {url}: the file does not exist {NO_FILE_HINT}"
    assert (caught.value.exit_code, caught.value.reason) == (2, "ledger_not_found")
    assert isinstance(caught.value, ConfigError)
    assert not path.parent.exists()


def test_relative_sqlite_path_is_looked_up_from_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LedgerNotFoundError, match=r"^no ledger at sqlite:///var/x\.db: "):
        LedgerStore.open_existing("sqlite:///var/x.db")
    assert list(tmp_path.iterdir()) == []


def test_in_memory_ledger_is_never_an_existing_one() -> None:
    with pytest.raises(LedgerNotFoundError) as caught:
        LedgerStore.open_existing("sqlite://")
    assert str(caught.value) == "no ledger at sqlite://: an in-memory database is empty"


def test_sqlite_file_without_ledger_tables_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    url = f"sqlite:///{path}"
    with pytest.raises(LedgerNotFoundError) as caught:
        LedgerStore.open_existing(url)
    assert str(caught.value) == (
        f"no ledger at {url}: the database holds no ledger tables {NO_TABLES_HINT}"
    )
    assert path.stat().st_size == 0  # looked at, not written to


def test_file_that_is_not_sqlite_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database, just text " * 20, encoding="utf-8")
    url = f"sqlite:///{path}"
    with pytest.raises(LedgerNotFoundError) as caught:
        LedgerStore.open_existing(url)
    assert str(caught.value) == f"no ledger at {url}: the file is not a SQLite database"


def test_folder_in_place_of_the_sqlite_file_is_an_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}"
    with pytest.raises(LedgerNotFoundError, match="the file does not exist"):
        LedgerStore.open_existing(url)


def test_existing_ledger_opens(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    LedgerStore.from_url(url).engine.dispose()
    store = LedgerStore.open_existing(url)
    try:
        assert store.get_run("no-such-run") is None
    finally:
        store.engine.dispose()


def test_creating_open_makes_the_sqlite_folder(tmp_path: Path) -> None:
    path = tmp_path / "var" / "deeper" / "ledger.db"
    LedgerStore.from_url(f"sqlite:///{path}").engine.dispose()
    assert path.is_file()


def test_ledger_behind_the_newest_schema_is_migrated_when_opened(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
    engine.dispose()
    assert _revision(url) == "0003"
    LedgerStore.open_existing(url).engine.dispose()
    assert _revision(url) == "0004"


def test_ledger_newer_than_this_batchbridge_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'future.db'}"
    LedgerStore.from_url(url).engine.dispose()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(ConfigError) as caught:
        LedgerStore.open_existing(url)
    assert str(caught.value) == (
        f"the ledger at {url} is at schema revision 9999, newer than this batchbridge "
        "knows (newest: 0004): upgrade batchbridge"
    )
    assert (caught.value.exit_code, caught.value.reason) == (2, "ledger_schema_newer")


def test_ledger_url_password_is_masked() -> None:
    url = "postgresql+psycopg://bb:pa55word@db.example:5432/ledger?sslpassword=k3y&sslmode=require"
    shown = masked_url(url)
    assert shown == (
        "postgresql+psycopg://bb:***@db.example:5432/ledger?sslmode=require&sslpassword=***"
    )
    assert "pa55word" not in shown
    assert "k3y" not in shown


def test_unparseable_ledger_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        LedgerStore.open_existing("not a url:secret")
    assert str(caught.value) == (
        "the ledger URL does not parse as a database URL (BATCHBRIDGE_DATABASE_URL)"
    )
    assert "secret" not in str(caught.value)


@pytest.mark.integration
def test_postgres_database_without_ledger_tables_is_an_error(postgres_url: str) -> None:
    # trust authentication ignores the password: it is here to be masked
    url = postgres_url.replace("@", ":pa55word@", 1)
    shown = url.replace(":pa55word@", ":***@")
    with pytest.raises(LedgerNotFoundError) as caught:
        LedgerStore.open_existing(url)
    assert str(caught.value) == (
        f"no ledger at {shown}: the database holds no ledger tables {NO_TABLES_HINT}"
    )
    assert "pa55word" not in str(caught.value)
    LedgerStore.from_url(url).engine.dispose()
    LedgerStore.open_existing(url).engine.dispose()


def test_settings_create_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATCHBRIDGE_DATABASE_URL", raising=False)
    monkeypatch.setenv("BATCHBRIDGE_VAR_DIR", str(tmp_path / "var"))
    settings = load_settings(tmp_path / "feeds")
    assert settings.database_url == f"sqlite:///{tmp_path / 'var' / 'batchbridge.db'}"
    assert list(tmp_path.iterdir()) == []


# the steward directory ----------------------------------------------------------------


def test_missing_steward_directory_names_the_default_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATCHBRIDGE_STEWARDS_FILE", raising=False)
    feeds = tmp_path / "deployments" / "feeds"
    with pytest.raises(StewardsFileError) as caught:
        open_directory(feeds)
    assert str(caught.value) == (
        f"steward directory {tmp_path / 'deployments' / 'stewards.yaml'} does not exist "
        f"(stewards.yaml beside the feeds folder {feeds}; "
        "set BATCHBRIDGE_STEWARDS_FILE to use another file)"
    )
    assert (caught.value.exit_code, caught.value.reason) == (2, "stewards_file_missing")


def test_missing_steward_directory_names_the_configured_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BATCHBRIDGE_STEWARDS_FILE", "conf/stewards.yaml")
    with pytest.raises(StewardsFileError) as caught:
        open_directory(tmp_path / "feeds")
    assert str(caught.value) == (
        f"steward directory {tmp_path / 'conf' / 'stewards.yaml'} does not exist "
        "(from BATCHBRIDGE_STEWARDS_FILE)"
    )


def test_steward_directory_that_is_a_folder_is_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHBRIDGE_STEWARDS_FILE", str(tmp_path))
    with pytest.raises(StewardsFileError) as caught:
        open_directory(tmp_path / "feeds")
    assert str(caught.value) == (
        f"steward directory {tmp_path} is not a file (from BATCHBRIDGE_STEWARDS_FILE)"
    )
    assert caught.value.reason == "stewards_file_unreadable"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_steward_directory_without_read_permission_is_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "stewards.yaml"
    path.write_text("stewards: {}\n", encoding="utf-8")
    path.chmod(0)
    monkeypatch.setenv("BATCHBRIDGE_STEWARDS_FILE", str(path))
    with pytest.raises(StewardsFileError) as caught:
        open_directory(tmp_path / "feeds")
    assert str(caught.value) == (
        f"steward directory {path} cannot be read (permission denied) "
        "(from BATCHBRIDGE_STEWARDS_FILE)"
    )


def test_steward_directory_opens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATCHBRIDGE_STEWARDS_FILE", raising=False)
    (tmp_path / "stewards.yaml").write_text(
        "stewards:\n  dana@x.org:\n    acme_lab: Steward\n  nobody@x.org:\n", encoding="utf-8"
    )
    directory = open_directory(tmp_path / "feeds")
    assert directory.role("dana@x.org", "acme_lab") is Role.STEWARD
    assert directory.tenants("nobody@x.org") == []


def _stewards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> Path:
    path = tmp_path / "stewards.yaml"
    path.write_text(body, encoding="utf-8")
    monkeypatch.setenv("BATCHBRIDGE_STEWARDS_FILE", str(path))
    return path


def test_mistyped_role_names_the_place_and_the_allowed_roles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _stewards(
        tmp_path, monkeypatch, "stewards:\n  dana:\n    acme_lab: stewart\n    globex: 2\n"
    )
    with pytest.raises(ConfigError) as caught:
        open_directory(tmp_path / "feeds")
    assert str(caught.value) == (
        f"{path}: stewards.dana.acme_lab: unknown role 'stewart' "
        "(allowed: viewer, steward, admin); "
        "stewards.dana.globex: not a role name (allowed: viewer, steward, admin)"
    )
    assert caught.value.exit_code == 2


def test_steward_directory_yaml_error_gives_line_and_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _stewards(tmp_path, monkeypatch, "stewards:\n  dana:\n    acme_lab: steward: x\n")
    with pytest.raises(ConfigError) as caught:
        open_directory(tmp_path / "feeds")
    assert str(caught.value) == (
        f"{path}: not valid YAML at line 3, column 22: mapping values are not allowed here"
    )


def test_steward_directory_unknown_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _stewards(tmp_path, monkeypatch, "steward:\n  dana:\n    acme_lab: steward\n")
    with pytest.raises(ConfigError) as caught:
        open_directory(tmp_path / "feeds")
    assert str(caught.value) == f"{path}: steward: Extra inputs are not permitted"


# startup ------------------------------------------------------------------------------


def test_modules_every_command_imports_stay_light() -> None:
    # Every CLI command imports these: Prefect or Polars here would cost seconds per start.
    probe = (
        "import sys\n"
        "import batchbridge.config.stewards, batchbridge.config, batchbridge.config.settings\n"
        "import batchbridge.ledger.store\n"
        "heavy = {'prefect', 'polars', 'pandera'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
