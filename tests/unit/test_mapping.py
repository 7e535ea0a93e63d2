"""Mapping tables: the shipped LOINC map loads, and broken tables name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchbridge.demo.lab_data import mapping_frame
from batchbridge.errors import ConfigError
from batchbridge.validations.mapping import load_mapping
from batchbridge.validations.schemas.lab_results import LAB_RESULTS, MAPPING_COLUMNS

SHIPPED = Path(__file__).resolve().parents[2] / "deployments" / "mappings" / "acme_lab_loinc.csv"


def write(tmp_path: Path, text: str, name: str = "map.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_shipped_mapping_loads_and_matches_the_generator() -> None:
    table = load_mapping(SHIPPED, MAPPING_COLUMNS)
    assert table.columns == list(MAPPING_COLUMNS)
    assert 25 <= table.height <= 40
    assert table.equals(mapping_frame())
    assert set(table["quantitative"]) == {"true", "false"}
    assert LAB_RESULTS.mapping_columns["local_test_code"] == MAPPING_COLUMNS


def test_all_strings_trimmed_booleans_normalised_blank_lines_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "\ufefflocal_test_code,loinc_code,loinc_display,quantitative,note\n"
        ' GLU ,2345-7,"Glucose, serum",TRUE,x\n'
        "\n"
        'UA,5778-6,"Color\nof urine",False,\n',
    )
    table = load_mapping(path, MAPPING_COLUMNS)
    assert table.rows() == [
        ("GLU", "2345-7", "Glucose, serum", "true", "x"),
        ("UA", "5778-6", "Color\nof urine", "false", ""),
    ]
    assert all(str(dtype) == "String" for dtype in table.dtypes)


def test_default_key_is_the_first_column(tmp_path: Path) -> None:
    path = write(tmp_path, "code,name\nA,x\nA,y\n")
    with pytest.raises(
        ConfigError, match=r"map\.csv: line 3: duplicate code 'A' \(first defined on line 2\)"
    ):
        load_mapping(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("local_test_code,loinc_code,loinc_display,quantitative\nA,1-1,a,true\nA,2-2,b,false\n",
         "line 3: duplicate local_test_code 'A'"),
        ("local_test_code,loinc_code,loinc_display,quantitative\nA,1-1,a,yes\n",
         "line 2: column 'quantitative' must be true or false"),
        ("local_test_code,loinc_code,loinc_display,quantitative\nA,1-1,a,\n",
         "line 2: column 'quantitative' is blank"),
        ("local_test_code,loinc_code,loinc_display,quantitative\nA,,a,true\n",
         "line 2: column 'loinc_code' is blank"),
        ("local_test_code,loinc_code,loinc_display,quantitative\nA,1-1,a\n",
         "line 2: expected 4 fields, found 3"),
        ("local_test_code,loinc_code,loinc_display,quantitative\nA,1-1,\"a,true\n",
         "malformed CSV"),
        ("local_test_code,loinc_code,quantitative\nA,1-1,true\n", "missing columns: loinc_display"),
        ("", "empty mapping file"),
    ],
)  # fmt: skip
def test_broken_tables_name_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text, "acme.csv")
    with pytest.raises(ConfigError) as caught:
        load_mapping(path, MAPPING_COLUMNS)
    assert "acme.csv" in str(caught.value)
    assert expected in str(caught.value)


def test_missing_file_and_bad_encoding(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_mapping(tmp_path / "nope.csv", MAPPING_COLUMNS)
    path = tmp_path / "latin.csv"
    path.write_bytes(b"local_test_code\nJos\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_mapping(path, ("local_test_code",))
