"""Onboarding without servers: scaffold, pinning edits, mapping coverage, dry run, deploy."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import paramiko
import polars as pl
import pytest

from batchbridge.cli.app import main
from batchbridge.cli.onboard_deploy import deploy_command
from batchbridge.cli.onboard_host_key import host_key_command
from batchbridge.config import UNPINNED_HOST_KEY, load_feed
from batchbridge.connectors.ssh.host_keys import fingerprint, parse_host_key
from batchbridge.demo.keys import generate_ed25519
from batchbridge.demo.lab_data import generate_lab_rows, mapping_frame, render_lab_csv
from batchbridge.errors import ConfigError, HostKeyError
from batchbridge.onboarding.dry_run import (
    COUNT_COLUMN,
    display_code,
    mapping_coverage,
    unmapped_template,
)
from batchbridge.onboarding.feed_yaml import replace_host_keys
from batchbridge.onboarding.host_keys import HOST_KEY_FAMILIES, key_line, offered_host_keys
from batchbridge.validations.mapping import load_mapping
from batchbridge.validations.schemas.lab_results import MAPPING_COLUMNS
from tests.unit.feed_helpers import write_feed

REPO = Path(__file__).resolve().parents[2]
FILE_DATE = date(2026, 11, 20)


def scaffold_args(config_dir: Path, feed: str = "globex_lab", **overrides: str) -> list[str]:
    values = {
        "--tenant": "globex",
        "--schema": "lab_results",
        "--host": "sftp.globex.example",
        "--port": "2222",
        "--user": "batchbridge",
        "--remote-dir": "/out/results",
        "--glob": "GLOBEX_*.csv.pgp",
        "--timezone": "America/New_York",
        "--config-dir": str(config_dir),
        **overrides,
    }
    return ["onboard", "scaffold", feed, *(item for pair in values.items() for item in pair)]


# -- scaffold --------------------------------------------------------------------------


def test_scaffold_writes_a_valid_commented_feed_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_dir = tmp_path / "deployments" / "feeds"
    assert main(scaffold_args(config_dir)) == 0
    out = capsys.readouterr().out
    path = config_dir / "globex_lab.yaml"
    config = load_feed("globex_lab", config_dir).config
    assert config.tenant == "globex" and config.timezone == "America/New_York"
    assert config.source.kind == "sftp" and config.source.host_keys == [UNPINNED_HOST_KEY]
    assert config.source.private_key == "env:GLOBEX_SFTP_PRIVATE_KEY"
    assert config.pgp.partner_public_keys == ["env:GLOBEX_PARTNER_SIGNING_KEY"]
    assert (config.pseudonym_key, config.quarantine_key) == (
        "env:GLOBEX_PSEUDONYM_KEY",
        "env:GLOBEX_QUARANTINE_KEY",
    )
    (target,) = config.targets
    assert target.kind == "postgres" and target.url == "env:WAREHOUSE_DATABASE_URL"
    assert "patient_last_name" not in target.columns and "patient_key" in target.columns
    text = path.read_text(encoding="utf-8")
    assert "# NOT PINNED YET" in text and "onboard host-key sftp.globex.example --port 2222" in text
    mapping = tmp_path / "deployments" / "mappings" / "globex_local_test_code.csv"
    assert mapping.read_text() == "local_test_code,loinc_code,loinc_display,quantitative\n"
    assert "GLOBEX_PGP_PASSPHRASE" in out

    before = path.read_text(encoding="utf-8")
    assert main(scaffold_args(config_dir, **{"--tenant": "other"})) == 2
    assert "already exists" in capsys.readouterr().err
    assert path.read_text(encoding="utf-8") == before


def test_scaffold_copies_the_targets_of_a_feed_on_the_same_schema(tmp_path: Path) -> None:
    config_dir = tmp_path / "feeds"
    config_dir.mkdir()
    shutil.copy(REPO / "deployments" / "feeds" / "lab_results.yaml", config_dir)
    assert main(scaffold_args(config_dir)) == 0
    new = load_feed("globex_lab", config_dir).config.targets
    reference = load_feed("lab_results", config_dir).config.targets
    assert new == reference


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"--schema": "member_claims"}, "unknown schema"),
        ({"--tenant": "Globex Inc"}, "tenant"),
        ({"--timezone": "Mars/Olympus"}, "time zone"),
    ],
)
def test_scaffold_refuses_bad_input_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: dict[str, str], words: str
) -> None:
    assert main(scaffold_args(tmp_path, **overrides)) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "globex_lab.yaml").exists()


# -- host key pinning --------------------------------------------------------------------


def test_replace_host_keys_keeps_the_rest_of_the_file() -> None:
    text = (
        "source:\n"
        "  host: h\n"
        "  host_keys:   # pinned\n"
        "    # old note\n"
        "    - ssh-ed25519 OLD\n"
        "\n"
        "  private_key: env:K   # comment kept\n"
        "pgp: {}\n"
    )
    edited = replace_host_keys(text, ["ssh-ed25519 NEW1", "ssh-rsa NEW2"], note="confirmed")
    assert edited == (
        "source:\n"
        "  host: h\n"
        "  host_keys:   # pinned\n"
        "    # confirmed\n"
        '    - "ssh-ed25519 NEW1"\n'
        '    - "ssh-rsa NEW2"\n'
        "\n"
        "  private_key: env:K   # comment kept\n"
        "pgp: {}\n"
    )
    # List items written at the key's own indentation are part of the block too.
    same_indent = "source:\n  host_keys:\n  - a\n  - b\n  glob: x\n"
    assert replace_host_keys(same_indent, ["k"], note="n") == (
        'source:\n  host_keys:\n    # n\n    - "k"\n  glob: x\n'
    )
    with pytest.raises(ConfigError, match="add the key lines by hand"):
        replace_host_keys("source:\n  host_keys: [a]\n", ["k"], note="n")


def fake_server(*keys: paramiko.PKey) -> tuple[Any, list[list[str]]]:
    """A fetch() for a server holding `keys`: answers a type only when one of them has it."""
    asked: list[list[str]] = []

    def fetch(host: str, port: int, *, disabled_algorithms: list[str], timeout: float) -> Any:
        asked.append(disabled_algorithms)
        for key in keys:
            family = key.get_name()
            allowed = HOST_KEY_FAMILIES["rsa"] if family == "ssh-rsa" else (family,)
            if any(name not in disabled_algorithms for name in allowed):
                return key
        raise HostKeyError("no acceptable host key", reason="host_key_type")

    return fetch, asked


def test_offered_host_keys_asks_each_type_and_dedupes() -> None:
    ed = parse_host_key(generate_ed25519().public_line)
    fetch, asked = fake_server(ed)
    assert offered_host_keys("h", 22, fetch=fetch) == [ed]
    assert len(asked) == len(HOST_KEY_FAMILIES)
    assert "ssh-ed25519" not in asked[0] and "ssh-ed25519" in asked[1]
    with pytest.raises(HostKeyError):
        offered_host_keys("h", 22, families=["rsa"], fetch=fetch)


def test_pin_needs_confirmation_the_right_host_and_an_offered_fingerprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_dir = tmp_path / "feeds"
    assert main(scaffold_args(config_dir)) == 0
    line = generate_ed25519().public_line
    key = parse_host_key(line)
    fetch, _ = fake_server(key)
    common: dict[str, Any] = {"config_dir": config_dir, "fetch": fetch, "pin_feed": "globex_lab"}

    assert host_key_command("sftp.globex.example", 2222, **common) == 2
    unpinned = load_feed("globex_lab", config_dir).config.source
    assert unpinned.kind == "sftp" and unpinned.host_keys == [UNPINNED_HOST_KEY]
    with pytest.raises(ConfigError, match=r"connects to sftp\.globex\.example:2222"):
        host_key_command("evil.example", 2222, confirmed=True, **common)
    with pytest.raises(HostKeyError, match="does not offer the confirmed"):
        host_key_command(
            "sftp.globex.example", 2222, confirmed=True, fingerprints=["SHA256:nope"], **common
        )
    capsys.readouterr()

    assert (
        host_key_command(
            "sftp.globex.example", 2222, confirmed=True, fingerprints=[fingerprint(key)], **common
        )
        == 0
    )
    out = capsys.readouterr().out
    assert key_line(key) == line and line in out.splitlines()
    source = load_feed("globex_lab", config_dir).config.source
    assert source.kind == "sftp" and source.host_keys == [line]
    text = (config_dir / "globex_lab.yaml").read_text(encoding="utf-8")
    assert f"after out-of-band confirmation of {fingerprint(key)}" in text
    assert "# Zone of the naive timestamps" in text


# -- mapping coverage and the dry run ------------------------------------------------------


def test_mapping_coverage_counts_trimmed_nonblank_codes() -> None:
    codes = pl.Series(["GLU", " GLU ", "XX", "XX", "YY", "", None, "HGB"])
    coverage = mapping_coverage(
        codes, pl.Series(["GLU", "HGB"]), mapping="m", column="c", table="t.csv"
    )
    assert coverage.unmapped == {"XX": 2, "YY": 1}
    assert list(coverage.unmapped) == ["XX", "YY"]  # most rows first
    assert (coverage.rows_with_code, coverage.distinct_codes) == (6, 4)
    assert coverage.unmapped_rows == 3 and coverage.unmapped_share == 0.5
    empty = mapping_coverage(pl.Series([], dtype=pl.String), pl.Series(["A"]), mapping="m",
                             column="c", table="t")  # fmt: skip
    assert empty.unmapped_share == 0.0


def test_display_code_escapes_and_truncates() -> None:
    assert display_code("GLU") == "GLU"
    assert display_code("A\x1b[31m") == repr("A\x1b[31m")
    assert display_code("X" * 100).endswith("…") and len(display_code("X" * 100)) == 65


def test_plaintext_dry_run_reports_coverage_and_never_prints_patients(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feeds = write_feed(tmp_path)
    canary = "CANARY-OPHELIA-VANTABLACK"
    frame = generate_lab_rows(
        30, seed=3, file_date=FILE_DATE, bad_rows={"unmapped_code": 4}, canary_names=[canary]
    )
    sample = tmp_path / "LAB_RESULTS_ACME_20261120.csv"
    sample.write_bytes(render_lab_csv(frame))
    args = ["onboard", "dry-run", "lab_results", str(sample), "--plaintext", "--config-dir"]

    assert main([*args, str(feeds)]) == 9  # 4 of 30 rows: over the 5% alert threshold
    captured = capsys.readouterr()
    assert "must be synthetic" in captured.err
    assert "4 unmapped" not in captured.out  # one code, four rows
    assert "1 unmapped on 4 of 30 rows (13.3%)" in captured.out
    assert "26 valid, 4 quarantined" in captured.out
    assert canary not in captured.out + captured.err
    assert not (tmp_path / "warehouse.db").exists()  # nothing loaded, no target opened
    (over,) = [line for line in captured.out.splitlines() if "quarantine_rate_threshold" in line]
    assert over.startswith("over threshold: 13.3% of rows quarantined (4 of 30)")
    assert "quarantine_rate_threshold 5.0%" in over and over.endswith("(exit 9)")


def sample_with(tmp_path: Path, rows: int, bad: dict[str, int], **kw: Any) -> Path:
    frame = generate_lab_rows(rows, seed=5, file_date=FILE_DATE, bad_rows=bad, **kw)
    sample = tmp_path / "LAB_RESULTS_ACME_20261120.csv"
    sample.write_bytes(render_lab_csv(frame))
    return sample


def test_dry_run_exit_follows_the_feed_quarantine_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = sample_with(tmp_path, 40, {"bad_npi": 2})  # 5%: not over 5%
    feeds = write_feed(tmp_path)
    args = ["onboard", "dry-run", "lab_results", str(sample), "--plaintext", "--config-dir"]
    assert main([*args, str(feeds)]) == 0
    assert "quarantine_rate_threshold" not in capsys.readouterr().out

    write_feed(tmp_path, extra={"alerts": {"quarantine_rate_threshold": 0.01}})
    assert main([*args, str(feeds), "--json"]) == 9
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # stdout stays JSON; the one line goes to stderr
    assert report["over_threshold"] is True and report["exit_code"] == 9
    assert "above alerts.quarantine_rate_threshold 1.0%" in captured.err


def test_unmapped_out_writes_a_template_of_codes_only_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canary = "CANARY-OPHELIA-VANTABLACK"
    sample = sample_with(tmp_path, 60, {"unmapped_code": 5}, canary_names=[canary])
    feeds = write_feed(tmp_path)
    out = tmp_path / "to_map.csv"
    args = ["onboard", "dry-run", "lab_results", str(sample), "--plaintext"]
    code = main([*args, "--unmapped-out", str(out), "--config-dir", str(feeds)])
    assert code == 9  # 5 of 60 rows quarantined is over 5%
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert canary not in text
    header, *rows = text.splitlines()
    assert header.split(",") == [*MAPPING_COLUMNS, COUNT_COLUMN]  # the table's own order
    assert rows and all(row.split(",")[1:4] == ["", "", ""] for row in rows)  # to fill in
    assert sum(int(row.rsplit(",", 1)[1]) for row in rows) == 5
    codes = [row.split(",")[0] for row in rows]
    assert codes and not set(codes) & set(mapping_frame()["local_test_code"])

    # Filled in, the template loads as a mapping table: the count column is an extra
    # column, kept by load_mapping and read by no schema.
    filled = tmp_path / "filled.csv"
    filled.write_text(
        header + "\n" + "".join(f"{c},1-1,Test {c},false,3\n" for c in codes), encoding="utf-8"
    )
    table = load_mapping(filled, MAPPING_COLUMNS)
    assert table["local_test_code"].to_list() == codes and COUNT_COLUMN in table.columns
    # Left empty, it does not: nobody loads a half-filled template by mistake.
    with pytest.raises(ConfigError, match="is blank"):
        load_mapping(out, MAPPING_COLUMNS)

    before = out.read_bytes()
    code = main([*args, "--unmapped-out", str(out), "--config-dir", str(feeds)])
    assert code == 2 and "not overwriting" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_unmapped_template_leaves_out_formula_codes() -> None:
    coverage = mapping_coverage(
        pl.Series(["=HYPERLINK(1)", "XX", "XX", "@SUM", "+1", "-2", "YY"]),
        pl.Series(["GLU"]),
        mapping="local_test_code",
        column="local_test_code",
        table="t.csv",
        table_columns=MAPPING_COLUMNS,
    )
    text, left_out = unmapped_template(coverage)
    assert text.splitlines()[1:] == ["XX,,,,2", "YY,,,,1"]
    assert sorted(left_out) == ["+1", "-2", "=HYPERLINK(1)", "@SUM"]


def test_plaintext_dry_run_of_a_broken_file_fails_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feeds = write_feed(tmp_path)
    sample = tmp_path / "sample.csv"
    sample.write_bytes(render_lab_csv(generate_lab_rows(5, seed=1, file_date=FILE_DATE)) + b"x\n")
    code = main(["onboard", "dry-run", "lab_results", str(sample), "--plaintext",
                 "--config-dir", str(feeds)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 5 and "fails whole" in out


def test_plaintext_flag_on_an_encrypted_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feeds = write_feed(tmp_path)
    sample = tmp_path / "sample.pgp"
    sample.write_bytes(b"\x85\x01\x0c" + bytes(40))
    code = main(["onboard", "dry-run", "lab_results", str(sample), "--plaintext",
                 "--config-dir", str(feeds)])  # fmt: skip
    assert code == 2 and "drop --plaintext" in capsys.readouterr().err


# -- deploy ------------------------------------------------------------------------------


def test_deploy_prints_the_steps_and_apply_gates_on_the_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feeds = write_feed(tmp_path)
    ran: list[list[str]] = []

    def runner(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 0)

    assert deploy_command("lab_results", config_dir=feeds, prefect_file=None, apply=False) == 0
    out = capsys.readouterr().out
    assert "batchbridge feeds check lab_results" in out
    assert "prefect deploy --prefect-file " in out and "--name lab_results-nightly" in out

    (tmp_path / "secrets" / "quarantine").unlink()
    code = deploy_command(
        "lab_results", config_dir=feeds, prefect_file=None, apply=True, runner=runner
    )
    assert code == 2 and ran == []
    assert "not deployed" in capsys.readouterr().out

    (tmp_path / "secrets" / "quarantine").write_text("k" * 64)
    code = deploy_command(
        "lab_results", config_dir=feeds, prefect_file=None, apply=True, runner=runner
    )
    assert code == 0
    (argv,) = ran
    assert argv[2:5] == ["batchbridge.cli", "deploy", "--apply"]
