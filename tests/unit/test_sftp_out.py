"""Outbound SFTP target rules without a server: CSV neutralisation, remote names, counting."""

from __future__ import annotations

import csv
import io
import struct
from typing import Any

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchbridge.config import SftpTargetConfig
from batchbridge.connectors.ssh.connect import parse_version_extensions
from batchbridge.connectors.targets.base import LoadRequest
from batchbridge.connectors.targets.extract import (
    FORMULA_TRIGGERS,
    Sidecar,
    aside_name,
    check_name_template,
    delivery_counts,
    is_leftover,
    neutralise_cell,
    part_name,
    render_csv,
    render_parquet,
    render_remote_name,
    sidecar_name,
    source_stem,
)
from batchbridge.connectors.targets.sftp_out import SftpTarget
from batchbridge.demo.keys import generate_ed25519
from batchbridge.errors import ConfigError, TargetError

# -- formula neutralisation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        ("=1+1", "'=1+1"),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("-", "'-"),
        ("--12", "'--12"),
        ("-1,5", "'-1,5"),  # not a plain number: a decimal comma
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-12.5", "-12.5"),  # plain negative numbers stay readable
        ("+3", "+3"),
        ("-1e-3", "-1e-3"),
        ("-.5", "-.5"),
        ("-12.", "-12."),
        ("-١٢", "'-١٢"),  # non-ASCII digits are not 'plain'
        ("", ""),
        ("plain", "plain"),
        ("a=b", "a=b"),
        (" =1", " =1"),
        ("'quoted", "'quoted"),
    ],
)
def test_neutralise_cell(cell: str, written: str) -> None:
    assert neutralise_cell(cell) == written


def test_csv_is_rfc4180_with_neutralised_text_and_untouched_numbers() -> None:
    frame = pl.DataFrame(
        {
            "text": ["=cmd", "+A1", "-12.5", "@x", "\tx", "\rx", "", None, 'a,"b"'],
            "number": [-1, -2, None, 4, 5, 6, 7, 8, 9],
        }
    )
    assert render_csv(frame) == (
        b"text,number\r\n"
        b"'=cmd,-1\r\n"
        b"'+A1,-2\r\n"
        b"-12.5,\r\n"
        b"'@x,4\r\n"
        b"'\tx,5\r\n"
        b'"\'\rx",6\r\n'
        b'"",7\r\n'  # an empty string is quoted ...
        b",8\r\n"  # ... a null is an empty field
        b'"a,""b""",9\r\n'
    )


def test_csv_neutralises_categorical_and_enum_columns() -> None:
    frame = pl.DataFrame(
        {
            "cat": pl.Series(["=x", "ok"], dtype=pl.Categorical),
            "enum": pl.Series(["@y", "ok"], dtype=pl.Enum(["@y", "ok"])),
        }
    )
    assert render_csv(frame) == b"cat,enum\r\n'=x,'@y\r\nok,ok\r\n"


def test_csv_refuses_nested_columns_without_quoting_values() -> None:
    frame = pl.DataFrame({"tags": [["=secret"]]})
    with pytest.raises(TargetError, match="tags") as caught:
        render_csv(frame)
    assert "secret" not in str(caught.value)


@given(st.lists(st.text(alphabet=st.characters(exclude_categories=["Cs"])), max_size=8))
def test_every_text_cell_reads_back_as_its_neutralised_value(cells: list[str]) -> None:
    data = render_csv(pl.DataFrame({"cell": cells}, schema={"cell": pl.String}))
    records = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert records[0] == ["cell"]
    assert [record[0] if record else "" for record in records[1:]] == [
        neutralise_cell(cell) for cell in cells
    ]
    for record in records[1:]:
        assert not record or not record[0].startswith(FORMULA_TRIGGERS) or _plain(record[0])


def _plain(cell: str) -> bool:
    return neutralise_cell(cell) == cell


def test_parquet_keeps_values_and_is_deterministic() -> None:
    frame = pl.DataFrame({"text": ["=x", None], "number": [-1.5, 2.0]})
    data = render_parquet(frame)
    assert data == render_parquet(frame)
    assert pl.read_parquet(io.BytesIO(data)).equals(frame)


# -- remote names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "stem"),
    [
        ("LAB_20240102.csv.pgp", "LAB_20240102"),
        ("lab.v2.TXT.gpg", "lab.v2"),
        ("roster.2024-01-02.asc", "roster.2024-01-02"),
        ("noext", "noext"),
        (".csv", ".csv"),
        ("report.xlsx.pgp", "report.xlsx"),
    ],
)
def test_source_stem(source: str, stem: str) -> None:
    assert source_stem(source) == stem


def name(template: str = "{feed}_{source_stem}.{ext}", **overrides: str) -> str:
    values = {
        "tenant": "acme_lab",
        "feed": "lab_results",
        "source_name": "LAB_20240102.csv.pgp",
        "file_id": "f-1",
        "ext": "csv",
    }
    values.update(overrides)
    return render_remote_name(template, target="drop", **values)


def test_the_default_template_names_one_file_per_source_file() -> None:
    assert name() == "lab_results_LAB_20240102.csv"
    assert name(ext="csv.pgp") == "lab_results_LAB_20240102.csv.pgp"
    assert name("{tenant}/{file_id}.{ext}".replace("/", "-")) == "acme_lab-f-1.csv"
    assert name() == name()  # a rerun of the same file gets the same name


@pytest.mark.parametrize(
    ("source_name", "problem"),
    [
        ("../../etc/passwd", "path separator"),
        ("a\\b.csv", "path separator"),
        ("x\x00y", "NUL"),
        ("x\u202eabc", "bidirectional"),
        ("x" * 300, "longer than"),
        ("x" * 230, "no room"),
    ],
)
def test_unsafe_names_are_refused(source_name: str, problem: str) -> None:
    with pytest.raises(TargetError, match=problem):
        name(source_name=source_name)


def test_a_hidden_or_dash_name_is_refused() -> None:
    with pytest.raises(TargetError, match=r"starts with '\.'"):
        name("{source_stem}.{ext}", source_name=".hidden.csv")
    with pytest.raises(TargetError, match="starts with '-'"):
        name("{source_stem}.{ext}", source_name="-rf.csv")


def test_a_missing_source_name_is_an_error_when_the_template_needs_it() -> None:
    with pytest.raises(TargetError, match="names no source file"):
        name(source_name="")
    assert name("{feed}-{file_id}.{ext}", source_name="") == "lab_results-f-1.csv"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{feed}_{patient}.{ext}", "unknown placeholder {patient}"),
        ("{feed}_{source_stem!r}.{ext}", "no format or conversion"),
        ("{feed}_{source_stem:>9}.{ext}", "no format or conversion"),
        ("{feed}.{ext}", "must contain {source_stem} or {file_id}"),
        ("out/{source_stem}.{ext}", "path separator"),
        ("{source_stem", "malformed"),
        ("{source_stem.__class__}", "unknown placeholder"),
    ],
)
def test_bad_templates_are_config_errors(template: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        check_name_template(template, "drop")


def test_temporary_names_are_hidden_per_load_and_recognised_as_leftovers() -> None:
    final = "lab_results_LAB_1.csv"
    part = part_name(final, "load-1")
    assert part.startswith(f".{final}.") and part.endswith(".part")
    assert part != part_name(final, "load-2")
    assert "/" not in part_name(final, "../../evil")
    for leftover in (part, aside_name(final, "x"), part_name(sidecar_name(final), "y")):
        assert is_leftover(leftover, final)
    for other in (
        final,
        sidecar_name(final),
        part_name("lab_results_LAB_1.csv.x.csv", "load-1"),
        part_name("lab_results_LAB_2.csv", "load-1"),
        f".{final}.not-a-token.part",
        f"{part}.bak",
    ):
        assert not is_leftover(other, final)


# -- sidecar and counting ----------------------------------------------------------------


def test_sidecar_round_trips_in_sha256sum_format() -> None:
    sidecar = Sidecar("a" * 64, "x.csv", "b" * 64, "x.csv.pgp")
    text = sidecar.render()
    assert text == f"{'a' * 64}  x.csv\n{'b' * 64}  x.csv.pgp\n".encode()
    assert Sidecar.parse(text) == sidecar


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xfe", b"abc  x\n", f"{'a' * 64}  x.csv\n".encode(), b"z" * 64 + b"  x\n" * 2],
)
def test_a_sidecar_we_did_not_write_is_ignored(data: bytes) -> None:
    assert Sidecar.parse(data) is None


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [("inserted", (5, 0, 0, 5)), ("updated", (0, 5, 0, 5)), ("unchanged", (0, 0, 5, 5))],
)
def test_a_file_counts_all_its_rows_one_way(outcome: Any, expected: tuple[int, ...]) -> None:
    counts = delivery_counts(outcome, 5)
    assert (counts.inserted, counts.updated, counts.unchanged, counts.confirmed) == expected
    # Reconciliation: inserted + updated + unchanged (+ 0 rejected) == rows sent.
    assert counts.inserted + counts.updated + counts.unchanged == 5


# -- the target's checks before connecting -----------------------------------------------


def config(**overrides: Any) -> SftpTargetConfig:
    values: dict[str, Any] = {
        "name": "partner_drop",
        "host": "sftp.partner.test",
        "username": "acme",
        "remote_dir": "/inbox",
        "host_keys": [generate_ed25519().public_line],
        "private_key": "env:NOT_NEEDED_BEFORE_CONNECTING",
        "columns": ["patient_ref", "result_value"],
    }
    values.update(overrides)
    return SftpTargetConfig(**values)


def test_the_extract_holds_the_key_and_configured_columns_in_source_order() -> None:
    target = SftpTarget(config(), feed="lab_results")
    frame = pl.DataFrame(
        {
            "record_id": ["R2", "R1"],
            "patient_ref": ["p2", "p1"],
            "result_value": ["-1", "=2"],
            "internal": ["x", "y"],
            "_row": [2, 1],
        }
    )
    request = LoadRequest(
        tenant="acme_lab",
        natural_key=("record_id",),
        load_id="l-1",
        file_id="f-1",
        rows=frame,
        source_name="LAB_1.csv.pgp",
    )
    extract = target._extract(request)
    assert extract.name == "lab_results_LAB_1.csv"
    assert extract.rows == 2
    assert extract.plaintext == (b"record_id,patient_ref,result_value\r\nR1,p1,'=2\r\nR2,p2,-1\r\n")


def test_bad_target_configs_fail_before_connecting() -> None:
    with pytest.raises(ConfigError, match="must contain"):
        SftpTarget(config(file_name="{feed}.{ext}"), feed="lab_results")
    with pytest.raises(ConfigError, match="reserved"):
        SftpTarget(config(columns=["_row"]), feed="lab_results")
    with pytest.raises(ConfigError, match=r"targets\[partner_drop\]\.host_keys\[0\]"):
        SftpTarget(config(host_keys=["ssh-ed25519 not-base64!"]), feed="lab_results")
    with pytest.raises(ConfigError, match="encryptor"):
        SftpTarget(config(pgp={"recipient_public_keys": ["env:RECEIVER"]}), feed="lab_results")


def test_server_extensions_are_read_from_the_version_packet() -> None:
    def pair(name: bytes, value: bytes) -> bytes:
        return struct.pack(">I", len(name)) + name + struct.pack(">I", len(value)) + value

    data = pair(b"posix-rename@openssh.com", b"1") + pair(b"fsync@openssh.com", b"1")
    assert parse_version_extensions(data) == {
        "posix-rename@openssh.com": b"1",
        "fsync@openssh.com": b"1",
    }
    assert parse_version_extensions(data + b"\x00\x00\x00\x09trunc") == {
        "posix-rename@openssh.com": b"1",
        "fsync@openssh.com": b"1",
    }
    assert parse_version_extensions(b"") == {}
