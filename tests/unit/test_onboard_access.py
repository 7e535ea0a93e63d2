"""After the scaffold: every secret the feed references, its stewards, no deploy until pinned."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from batchbridge.cli.app import main
from batchbridge.config import load_feed, secret_references
from batchbridge.config.stewards import Role, load_directory
from batchbridge.demo.keys import generate_ed25519
from batchbridge.deploy.prefect_yaml import build_plan
from batchbridge.errors import ConfigError
from batchbridge.onboarding.feed_yaml import pin_host_keys
from batchbridge.onboarding.stewards_file import (
    StewardGrant,
    parse_grant,
    plan_stewards_edit,
    write_stewards_edit,
)
from tests.unit.test_onboard import REPO, scaffold_args

SHIPPED_STEWARDS = REPO / "deployments" / "stewards.yaml"


def test_scaffold_lists_every_secret_of_the_rendered_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Targets copied from the HL7 feed carry their own credentials: FHIR client secret,
    # the receiver's SFTP key and the extract's recipient key.
    config_dir = tmp_path / "feeds"
    config_dir.mkdir()
    shutil.copy(REPO / "deployments" / "feeds" / "northwind_lab_hl7.yaml", config_dir)
    assert main(scaffold_args(config_dir)) == 0
    listed = capsys.readouterr().out.split("secrets the feed needs", 1)[1]
    uses = list(secret_references(load_feed("globex_lab", config_dir).config))
    assert {u.where for u in uses} >= {
        "source.private_key",
        "targets.fhir.client_secret",
        "targets.registry_extract.private_key",
        "targets.registry_extract.pgp.recipient_public_keys",
    }
    rows = {line.split()[0]: line for line in listed.splitlines() if line.startswith("  ")}
    for use in uses:
        assert use.ref.startswith("env:")
        row = rows[use.ref.removeprefix("env:")]  # the environment variable to set
        assert use.where in row
    assert "OAuth2 client secret of FHIR target fhir" in rows["NORTHWIND_FHIR_CLIENT_SECRET"]
    assert "secret used at" not in listed  # every place has a purpose
    # No --steward: the exact lines to add, and where.
    assert f"add to {tmp_path / 'stewards.yaml'}" in listed
    assert "      globex: steward" in listed


@pytest.mark.parametrize(
    ("value", "grant"),
    [
        ("dana@example.org", StewardGrant("dana@example.org", "steward")),
        ("dana@example.org:Admin", StewardGrant("dana@example.org", "admin")),
        (" kim:viewer ", StewardGrant("kim", "viewer")),
    ],
)
def test_parse_grant(value: str, grant: StewardGrant) -> None:
    assert parse_grant(value) == grant


@pytest.mark.parametrize(
    ("value", "words"),
    [("dana@example.org:boss", "unknown role"), ("root", "shared account"), (":steward", "give")],
)
def test_parse_grant_refuses(value: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_grant(value)


def test_grants_are_appended_keeping_every_line_and_never_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "stewards.yaml"
    shutil.copy(SHIPPED_STEWARDS, path)
    before = path.read_text(encoding="utf-8")
    grants = [
        StewardGrant("dana.steward@acme-health.example", "viewer"),  # listed: one line more
        StewardGrant("new.person@globex.example", "steward"),
        StewardGrant("kim.admin@acme-health.example", "admin"),
    ]
    edit = plan_stewards_edit(path, "globex", grants)
    assert path.read_text(encoding="utf-8") == before  # planning writes nothing
    write_stewards_edit(edit)
    after = path.read_text(encoding="utf-8")
    old, new = before.splitlines(), after.splitlines()
    assert [line for line in new if line not in old] == [
        "    globex: viewer",
        "    globex: admin",
        "  new.person@globex.example:",
        "    globex: steward",
    ]
    assert [line for line in new if line in old] == old  # comments and order kept
    assert new[new.index("  dana.steward@acme-health.example:") + 2] == "    globex: viewer"
    directory = load_directory(path)
    assert directory.role("dana.steward@acme-health.example", "acme_lab") is Role.STEWARD
    assert directory.role("new.person@globex.example", "globex") is Role.STEWARD

    again = plan_stewards_edit(
        path, "acme_lab", [StewardGrant("dana.steward@acme-health.example", "admin")]
    )
    assert again.text is None and again.kept == [("dana.steward@acme-health.example", "steward")]
    write_stewards_edit(again)
    assert path.read_text(encoding="utf-8") == after


def test_a_missing_stewards_file_is_created(tmp_path: Path) -> None:
    path = tmp_path / "deployments" / "stewards.yaml"
    write_stewards_edit(plan_stewards_edit(path, "globex", [StewardGrant("lee", "admin")]))
    assert path.read_text(encoding="utf-8").startswith("# Data stewards")
    assert load_directory(path).role("lee", "globex") is Role.ADMIN


def test_a_file_it_cannot_edit_safely_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "stewards.yaml"
    path.write_text("stewards: {lee: {acme: viewer}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="add them by hand"):
        plan_stewards_edit(path, "globex", [StewardGrant("kim")])
    path.write_text("stewards:\n  lee: {acme: viewer}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not in block style"):
        plan_stewards_edit(path, "globex", [StewardGrant("lee")])
    edit = plan_stewards_edit(path, "globex", [StewardGrant("kim")])
    path.write_text("stewards:\n  lee: {acme: admin}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="changed while onboarding"):
        write_stewards_edit(edit)
    assert "kim" not in path.read_text(encoding="utf-8")


def test_scaffold_with_stewards_uses_the_directory_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stewards = tmp_path / "elsewhere" / "stewards.yaml"
    monkeypatch.setenv("BATCHBRIDGE_STEWARDS_FILE", str(stewards))
    config_dir = tmp_path / "feeds"
    bad = [*scaffold_args(config_dir), "--steward", "dana@example.org:boss"]
    assert main(bad) == 2 and "unknown role" in capsys.readouterr().err
    assert not (config_dir / "globex_lab.yaml").exists() and not stewards.exists()

    args = [*scaffold_args(config_dir), "--steward", "dana@example.org,kim@example.org:viewer"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "stewards: dana@example.org is steward of tenant globex" in out
    assert f"added to {stewards}" in out
    directory = load_directory(stewards)
    assert directory.role("kim@example.org", "globex") is Role.VIEWER


def test_an_unpinned_feed_gets_no_deployment_until_pinned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_dir = tmp_path / "feeds"
    config_dir.mkdir()
    shutil.copy(REPO / "deployments" / "feeds" / "lab_results.yaml", config_dir)
    assert main(scaffold_args(config_dir)) == 0

    plan = build_plan(config_dir)
    assert plan.unpinned_feeds == ["globex_lab"]
    assert not [name for name in plan.deployment_names if name.startswith("globex_lab-")]
    assert "lab_results-check-arrivals" in plan.deployment_names
    assert "tenant-globex" not in plan.tenant_queues
    assert "pinned (`batchbridge onboard host-key`):\n#   globex_lab\n\n" in plan.text

    onboard_deploy = ["onboard", "deploy", "globex_lab", "--config-dir", str(config_dir)]
    assert main(onboard_deploy) == 0
    assert "none for globex_lab until its host key is pinned" in capsys.readouterr().out

    pin_host_keys("globex_lab", config_dir, [generate_ed25519().public_line], note="confirmed")
    pinned = build_plan(config_dir)
    assert pinned.unpinned_feeds == []
    for suffix in ("nightly", "check-arrivals", "health"):
        assert f"globex_lab-{suffix}" in pinned.deployment_names
