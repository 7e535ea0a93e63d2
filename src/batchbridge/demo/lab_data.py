"""Synthetic lab_results files (no real patients) for tests, the demo and the benchmark.

Everything is vectorised polars: randomness comes from seeded row hashes, so the
same (n, seed, file_date, bad_rows, canary_names) always gives the same frame,
and a million rows take a few seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from batchbridge.validations.schemas.lab_results import COLUMNS

LAB_COLUMNS: tuple[str, ...] = COLUMNS
"""The lab_results file columns, in the order the generator writes them."""


@dataclass(frozen=True)
class LabTest:
    """One orderable test of the synthetic lab, with how to draw plausible results."""

    code: str
    loinc_code: str
    loinc_display: str
    test_name: str
    unit: str = ""
    mean: float = 0.0
    sd: float = 0.0
    decimals: int = 0
    low: float | None = None
    high: float | None = None
    reference_range: str = ""
    values: tuple[str, ...] = ()  # qualitative results; the first is the normal one

    @property
    def quantitative(self) -> bool:
        return not self.values


# Partner test names deliberately include commas and quotes, and one reference range
# spans two lines, so rendered files exercise RFC 4180 quoting.
LAB_TESTS: tuple[LabTest, ...] = (
    LabTest("GLU", "2345-7", "Glucose [Mass/volume] in Serum or Plasma", "Glucose, fasting",
            "mg/dL", 95, 18, 0, 70, 99, "70-99"),
    LabTest("HGB", "718-7", "Hemoglobin [Mass/volume] in Blood", "Hemoglobin", "g/dL",
            14.2, 1.6, 1, 12.0, 17.5, "M: 13.5-17.5\nF: 12.0-15.5"),
    LabTest("K", "2823-3", "Potassium [Moles/volume] in Serum or Plasma", "Potassium",
            "mmol/L", 4.2, 0.4, 1, 3.5, 5.1, "3.5-5.1"),
    LabTest("NA", "2951-2", "Sodium [Moles/volume] in Serum or Plasma", "Sodium", "mmol/L",
            140, 3, 0, 136, 145, "136-145"),
    LabTest("CL", "2075-0", "Chloride [Moles/volume] in Serum or Plasma", "Chloride",
            "mmol/L", 102, 3, 0, 98, 107, "98-107"),
    LabTest("CO2", "2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma",
            "Carbon dioxide, total", "mmol/L", 25, 2.5, 0, 22, 29, "22-29"),
    LabTest("BUN", "3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma",
            "Urea nitrogen (BUN)", "mg/dL", 14, 4, 0, 7, 20, "7-20"),
    LabTest("CREAT", "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "Creatinine",
            "mg/dL", 0.95, 0.2, 2, 0.6, 1.3, "0.60-1.30"),
    LabTest("CA", "17861-6", "Calcium [Mass/volume] in Serum or Plasma", "Calcium", "mg/dL",
            9.4, 0.4, 1, 8.6, 10.3, "8.6-10.3"),
    LabTest("HBA1C", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood",
            'Hemoglobin A1c "HbA1c"', "%", 5.6, 0.7, 1, 4.0, 5.6, "4.0-5.6"),
    LabTest("TSH", "3016-3", "Thyrotropin [Units/volume] in Serum or Plasma",
            "TSH, 3rd generation", "uIU/mL", 2.1, 0.9, 2, 0.4, 4.0, "0.40-4.00"),
    LabTest("WBC", "6690-2", "Leukocytes [#/volume] in Blood by Automated count", "WBC count",
            "10*3/uL", 7.5, 1.8, 1, 4.5, 11.0, "4.5-11.0"),
    LabTest("RBC", "789-8", "Erythrocytes [#/volume] in Blood by Automated count",
            "RBC count", "10*6/uL", 4.8, 0.5, 2, 4.2, 5.9, "4.20-5.90"),
    LabTest("HCT", "4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count",
            "Hematocrit", "%", 42, 4, 1, 38, 50, "38.0-50.0"),
    LabTest("PLT", "777-3", "Platelets [#/volume] in Blood by Automated count",
            "Platelet count", "10*3/uL", 260, 60, 0, 150, 400, "150-400"),
    LabTest("CHOL", "2093-3", "Cholesterol [Mass/volume] in Serum or Plasma",
            "Cholesterol, total", "mg/dL", 190, 35, 0, None, 200, "<200"),
    LabTest("LDL", "13457-7", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation",
            "LDL cholesterol, calculated", "mg/dL", 110, 30, 0, None, 100, "<100"),
    LabTest("HDL", "2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
            "HDL cholesterol", "mg/dL", 52, 12, 0, 40, None, ">40"),
    LabTest("TRIG", "2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "Triglycerides",
            "mg/dL", 140, 50, 0, None, 150, "<150"),
    LabTest("ALT", "1742-6",
            "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
            "ALT (SGPT)", "U/L", 28, 10, 0, 7, 56, "7-56"),
    LabTest("AST", "1920-8",
            "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
            "AST (SGOT)", "U/L", 24, 8, 0, 10, 40, "10-40"),
    LabTest("ALKP", "6768-6", "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma",
            "Alkaline phosphatase", "U/L", 85, 25, 0, 44, 147, "44-147"),
    LabTest("TBIL", "1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma",
            "Bilirubin, total", "mg/dL", 0.7, 0.3, 1, 0.1, 1.2, "0.1-1.2"),
    LabTest("ALB", "1751-7", "Albumin [Mass/volume] in Serum or Plasma", "Albumin", "g/dL",
            4.2, 0.4, 1, 3.5, 5.0, "3.5-5.0"),
    LabTest("PSA", "2857-1", "Prostate specific Ag [Mass/volume] in Serum or Plasma",
            "PSA, total", "ng/mL", 1.8, 1.2, 2, None, 4.0, "<4.00"),
    LabTest("VITD", "62292-8",
            "25-Hydroxyvitamin D2+25-Hydroxyvitamin D3 [Mass/volume] in Serum or Plasma",
            "Vitamin D, 25-OH", "ng/mL", 34, 10, 0, 30, 100, "30-100"),
    LabTest("FERR", "2276-4", "Ferritin [Mass/volume] in Serum or Plasma", "Ferritin",
            "ng/mL", 120, 60, 0, 24, 336, "24-336"),
    LabTest("INR", "6301-6", "INR in Platelet poor plasma by Coagulation assay", "INR",
            "{INR}", 1.0, 0.15, 1, 0.8, 1.2, "0.8-1.2"),
    LabTest("UA-COLOR", "5778-6", "Color of Urine", "Urine color", reference_range="Yellow",
            values=("Yellow", "Straw", "Amber", "Red")),
    LabTest("UA-CLARITY", "5767-9", "Appearance of Urine", "Urine appearance",
            reference_range="Clear", values=("Clear", "Slightly cloudy", "Cloudy")),
    LabTest("COVID-PCR", "94500-6",
            "SARS-CoV-2 (COVID-19) RNA [Presence] in Respiratory specimen by NAA with probe "
            "detection", 'SARS-CoV-2 RNA, "COVID-19" PCR', reference_range="Not detected",
            values=("Not detected", "Detected")),
    LabTest("FLU-A", "80382-5",
            "Influenza virus A Ag [Presence] in Upper respiratory specimen by Rapid immunoassay",
            "Influenza A antigen", reference_range="Negative", values=("Negative", "Positive")),
    LabTest("STREP-A", "78012-2",
            "Streptococcus pyogenes Ag [Presence] in Throat by Rapid immunoassay",
            "Strep A, rapid", reference_range="Negative", values=("Negative", "Positive")),
    LabTest("HCG-UR", "2106-3", "Choriogonadotropin (pregnancy test) [Presence] in Urine",
            "hCG, urine, qualitative", reference_range="Negative",
            values=("Negative", "Positive")),
    LabTest("ABORH", "882-1", "ABO and Rh group [Type] in Blood", "ABO/Rh type",
            values=("O Pos", "A Pos", "B Pos", "AB Pos", "O Neg", "A Neg")),
)  # fmt: skip

FIRST_NAMES: tuple[str, ...] = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas",
    "Sarah", "Carlos", "Karen", "Wei", "Nancy", "Daniel", "Lisa", "Matthew", "Betty",
    "Anthony", "Margaret", "Mark", "Sandra", "José", "Ashley", "Steven", "Kimberly", "Paul",
    "Emily", "Andrew", "Donna", "Joshua", "Michelle", "Kenji", "Aaliyah", "Siobhán", "Zoë",
    'Robert "Bobby"', "Mary-Kate", "Nguyen", "Fatima", "Olusegun", "Priya",
)  # fmt: skip

LAST_NAMES: tuple[str, ...] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
    "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson",
    "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White",
    "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "O'Brien", "Smith-Jones",
    "Van der Berg", "Nguyen", "Kowalski", "Müller", "Núñez", "Okafor", "Patel", "Kim",
    "Smith, Jr.", "De La Cruz", "MacDonald", "Schäfer", "Cohen", "Rossi", "Yamamoto",
    "Ivanova", "Dubois", "Haddad",
)  # fmt: skip

BAD_ROW_REASONS: dict[str, tuple[str, ...]] = {
    "bad_npi": ("ordering_provider_npi:npi_luhn",),
    "bad_dob": ("patient_dob:date_in_range",),
    "invalid_dob": ("patient_dob:iso_date",),
    "missing_dob": ("patient_dob:required",),
    "unmapped_code": ("local_test_code:unmapped_code",),
    "missing_last_name": ("patient_last_name:required",),
    "bad_sex": ("patient_sex:one_of",),
    "bad_mrn": ("patient_mrn:pattern",),
    "bad_zip": ("patient_zip:pattern",),
    "duplicate_id": ("record_id:unique",),
    "collected_after_resulted": ("specimen_collected_at:not_after_resulted_at",),
    "bad_collected_at": ("specimen_collected_at:iso_datetime",),
    "non_numeric_value": ("result_value:numeric_for_quantitative",),
    "missing_unit": ("result_unit:required_when_numeric",),
    "bad_status": ("result_status:one_of",),
}
"""Every kind `generate_lab_rows(bad_rows=…)` can plant, with the reasons it must cause."""

# Kinds that only make sense on rows whose test is quantitative.
_QUANTITATIVE_KINDS = frozenset({"non_numeric_value", "missing_unit"})

_UNMAPPED_CODE = "ZZ-NOT-IN-MAP"
_MRN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def mapping_frame() -> pl.DataFrame:
    """The synthetic lab's LOINC mapping (the content of acme_lab_loinc.csv), all strings."""
    return pl.DataFrame(
        {
            "local_test_code": [t.code for t in LAB_TESTS],
            "loinc_code": [t.loinc_code for t in LAB_TESTS],
            "loinc_display": [t.loinc_display for t in LAB_TESTS],
            "quantitative": ["true" if t.quantitative else "false" for t in LAB_TESTS],
        }
    )


def expected_quarantined(bad_rows: Mapping[str, int] | None) -> int:
    """How many rows `generate_lab_rows(bad_rows=…)` makes invalid.

    Each planted row is distinct; a duplicate id quarantines both the copy and the
    row it copies, so 'duplicate_id': k accounts for 2k rows.
    """
    if not bad_rows:
        return 0
    return sum(bad_rows.values()) + bad_rows.get("duplicate_id", 0)


def _hash_seed(*parts: int) -> int:
    """A valid polars hash seed (unsigned 64-bit) from any integers, negative seeds too."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + part) % 2**64
    return value


class _Random:
    """Seeded per-row randomness from polars' row hashing (fast and reproducible)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self._salt = 0
        self._index = pl.int_range(0, n, eager=True, dtype=pl.UInt64)

    def ints(self, upper: int) -> pl.Series:
        """Uniform integers in [0, upper)."""
        self._salt += 1
        return self._index.hash(_hash_seed(self.seed, self._salt)) % max(upper, 1)

    def uniform(self) -> pl.Series:
        """Uniform floats in (0, 1)."""
        return (self.ints(2**52).cast(pl.Float64) + 0.5) / float(2**52)

    def normal(self) -> pl.Series:
        """Standard normal draws (Box-Muller)."""
        u1, u2 = self.uniform(), self.uniform()
        return (-2.0 * u1.log()).sqrt() * (2.0 * 3.141592653589793 * u2).cos()


def _pick(choices: Sequence[str], index: pl.Series) -> pl.Series:
    return pl.Series(list(choices), dtype=pl.String).gather(index)


def _npi_with_check_digit(base: pl.Series) -> pl.Series:
    """Append the NPI Luhn check digit (prefix 80840 contributes 24) to 9-digit bases."""
    total = pl.Series([24] * len(base), dtype=pl.Int64)
    for i in range(9):
        digit = (base // (10 ** (8 - i))) % 10
        if i % 2 == 0:  # the rightmost base digit (i = 8) and every second one leftwards
            doubled = digit * 2
            total = total + doubled - (doubled > 9).cast(pl.Int64) * 9
        else:
            total = total + digit
    check = (10 - total % 10) % 10
    return (base * 10 + check).cast(pl.String)


def _format_datetimes(utc: pl.Series, timezone: str, style: pl.Series) -> pl.Series:
    """Render instants in a mix of ISO 8601 spellings partners really send."""
    local = utc.dt.convert_time_zone(timezone)
    frame = pl.DataFrame({"local": local, "utc": utc, "style": style})
    return frame.select(
        pl.when(pl.col("style") == 0)
        .then(pl.col("local").dt.strftime("%Y-%m-%dT%H:%M:%S"))
        .when(pl.col("style") == 1)
        .then(pl.col("local").dt.strftime("%Y-%m-%dT%H:%M:%S%.3f"))
        .when(pl.col("style") == 2)
        .then(pl.col("utc").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        .when(pl.col("style") == 3)
        .then(pl.col("local").dt.strftime("%Y-%m-%dT%H:%M:%S%:z"))
        .otherwise(pl.col("local").dt.strftime("%Y-%m-%d %H:%M"))
    ).to_series()


def generate_lab_rows(
    n: int,
    *,
    seed: int,
    file_date: date,
    bad_rows: dict[str, int] | None = None,
    canary_names: list[str] | None = None,
    timezone: str = "America/Chicago",
) -> pl.DataFrame:
    """`n` lab_results rows as strings, valid unless planted otherwise.

    bad_rows: kind -> count, kinds from BAD_ROW_REASONS; each kind is planted on
    distinct rows that are otherwise valid, so every planted row has exactly the
    kind's reasons (see `expected_quarantined` for the total).
    canary_names: each name becomes the first name of one valid row and the last
    name of another, and the first name of one planted bad row when there are
    any: PHI-leak tests search every output for them.
    Naive timestamps are wall-clock times in `timezone`, 06:00-23:00, so they
    never fall into a DST gap or overlap.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    bad_rows = dict(bad_rows or {})
    canary_names = list(canary_names or [])
    unknown = sorted(set(bad_rows) - set(BAD_ROW_REASONS))
    if unknown:
        raise ValueError(f"unknown bad_rows kinds {unknown}; known: {sorted(BAD_ROW_REASONS)}")
    planted = expected_quarantined(bad_rows)
    needed = planted + 2 * len(canary_names)
    if needed > n:
        raise ValueError(f"{n} rows are too few for {needed} planted rows")

    rng = _Random(n, seed)
    frame = _valid_rows(n, rng, file_date, timezone)
    if planted or canary_names:
        frame = _plant(frame, rng, file_date, bad_rows, canary_names)
    return frame.select(LAB_COLUMNS)


def _valid_rows(n: int, rng: _Random, file_date: date, timezone: str) -> pl.DataFrame:
    # Patients: about four results each; MRN, names, birth date, sex and ZIP are
    # drawn from hashes of the patient number so they repeat with the patient.
    patients = max(1, n // 4)
    patient = rng.ints(patients)
    digits = max(7, len(str(patients)))

    def per_patient(salt: int, upper: int) -> pl.Series:
        return patient.hash(_hash_seed(rng.seed, -1, salt)) % upper

    earliest_dob = date(1925, 1, 1)
    span_days = max(1, (file_date - earliest_dob).days - 1)
    providers = min(500, max(1, n))
    provider_base = 100_000_000 + (
        pl.int_range(0, providers, eager=True, dtype=pl.UInt64).hash(_hash_seed(rng.seed, -2))
        % 200_000_000
    ).cast(pl.Int64)
    draws = pl.DataFrame(
        {
            "patient": patient,
            "mrn_letters": pl.DataFrame(
                {f"c{i}": _pick(_MRN_ALPHABET, per_patient(10 + i, 26)) for i in range(3)}
            )
            .select(pl.concat_str(pl.all()))
            .to_series(),
            "first": _pick(FIRST_NAMES, per_patient(1, len(FIRST_NAMES))),
            "last": _pick(LAST_NAMES, per_patient(2, len(LAST_NAMES))),
            "dob_days": per_patient(3, span_days).cast(pl.Int64),
            "sex_draw": per_patient(4, 100),
            "zip5": per_patient(5, 100_000),
            "plus4": per_patient(6, 10_000),
            "zip_kind": per_patient(7, 5),
            "npi": _npi_with_check_digit(provider_base).gather(rng.ints(providers)),
            # Collected 06:00-18:00 local the day before the file, resulted 10 min to
            # 5 h later (before 23:00): never near a 02:00 DST change.
            "collected_s": rng.ints(12 * 3600).cast(pl.Int64),
            "turnaround_s": (600 + rng.ints(5 * 3600 - 600)).cast(pl.Int64),
        }
    )
    day_start = pl.lit(file_date - timedelta(days=1)).cast(pl.Datetime("us"))
    sex = (
        pl.when(pl.col("sex_draw") < 47)
        .then(pl.lit("F"))
        .when(pl.col("sex_draw") < 94)
        .then(pl.lit("M"))
        .when(pl.col("sex_draw") < 96)
        .then(pl.lit("f"))  # lower case is valid: the transform normalises it
        .when(pl.col("sex_draw") < 98)
        .then(pl.lit("O"))
        .otherwise(pl.lit("U"))
    )
    zip5 = pl.col("zip5").cast(pl.String).str.pad_start(5, "0")
    people = draws.select(
        record_id=pl.lit("R") + pl.int_range(1, n + 1).cast(pl.String).str.pad_start(9, "0"),
        patient_mrn=pl.col("mrn_letters")
        + (pl.col("patient") + 1).cast(pl.String).str.pad_start(digits, "0"),
        patient_first_name=pl.col("first"),
        patient_last_name=pl.col("last"),
        patient_dob=(pl.lit(earliest_dob) + pl.duration(days=pl.col("dob_days"))).dt.strftime(
            "%Y-%m-%d"
        ),
        patient_sex=sex,
        patient_zip=pl.when(pl.col("zip_kind") == 0)
        .then(zip5 + "-" + pl.col("plus4").cast(pl.String).str.pad_start(4, "0"))
        .otherwise(zip5),
        ordering_provider_npi=pl.col("npi"),
        collected_local=day_start + pl.duration(hours=6, seconds=pl.col("collected_s")),
        turnaround_s=pl.col("turnaround_s"),
    ).with_columns(
        resulted_local=pl.col("collected_local") + pl.duration(seconds=pl.col("turnaround_s"))
    )
    collected_utc = (
        people["collected_local"].dt.replace_time_zone(timezone).dt.convert_time_zone("UTC")
    )
    resulted_utc = (
        people["resulted_local"].dt.replace_time_zone(timezone).dt.convert_time_zone("UTC")
    )
    people = people.drop("collected_local", "resulted_local", "turnaround_s").with_columns(
        specimen_collected_at=_format_datetimes(collected_utc, timezone, rng.ints(5)),
        resulted_at=_format_datetimes(resulted_utc, timezone, rng.ints(5)),
    )

    tests = pl.DataFrame(
        {
            "code": [t.code for t in LAB_TESTS],
            "name": [t.test_name for t in LAB_TESTS],
            "unit": [t.unit for t in LAB_TESTS],
            "mean": [t.mean for t in LAB_TESTS],
            "sd": [t.sd for t in LAB_TESTS],
            "decimals": [t.decimals for t in LAB_TESTS],
            "low": [t.low for t in LAB_TESTS],
            "high": [t.high for t in LAB_TESTS],
            "range": [t.reference_range for t in LAB_TESTS],
            "values": [list(t.values) for t in LAB_TESTS],
        },
        schema_overrides={
            "values": pl.List(pl.String),
            "mean": pl.Float64,
            "sd": pl.Float64,
            "low": pl.Float64,
            "high": pl.Float64,
        },
    )
    rows = tests[rng.ints(len(LAB_TESTS))].with_columns(
        z=rng.normal(), pick=rng.ints(1_000_000), blank_range=rng.ints(20) == 0, status=rng.ints(20)
    )
    number = (pl.col("mean") + pl.col("sd") * pl.col("z")).clip(lower_bound=0)
    value_text = (
        pl.when(pl.col("values").list.len() > 0)
        .then(pl.col("values").list.get(pl.col("pick") % pl.col("values").list.len().clip(1)))
        .when(pl.col("decimals") == 0)
        .then(number.round(0).cast(pl.Int64).cast(pl.String))
        .when(pl.col("decimals") == 1)
        .then(number.round(1).cast(pl.String))
        .otherwise(number.round(2).cast(pl.String))
    )
    rows = rows.with_columns(value=value_text, number=number)
    quantitative = pl.col("values").list.len() == 0
    flag = (
        pl.when(quantitative & (pl.col("number") < pl.col("low")))
        .then(pl.lit("L"))
        .when(quantitative & (pl.col("number") > pl.col("high")))
        .then(pl.lit("H"))
        .when(quantitative)
        .then(pl.lit("N"))
        .when(pl.col("value") == pl.col("values").list.first())
        .then(pl.lit(""))
        .otherwise(pl.lit("A"))
    )
    status = (
        pl.when(pl.col("status") == 0)
        .then(pl.lit("C"))
        .when(pl.col("status") == 1)
        .then(pl.lit("P"))
        .otherwise(pl.lit("F"))
    )
    results = rows.select(
        local_test_code=pl.col("code"),
        test_name=pl.col("name"),
        result_value=pl.col("value"),
        result_unit=pl.col("unit"),
        reference_range=pl.when(pl.col("blank_range")).then(pl.lit("")).otherwise(pl.col("range")),
        abnormal_flag=flag,
        result_status=status,
        _quantitative=quantitative,
    )
    return people.hstack(results)


def _plant(
    frame: pl.DataFrame,
    rng: _Random,
    file_date: date,
    bad_rows: dict[str, int],
    canary_names: list[str],
) -> pl.DataFrame:
    n = frame.height
    order = pl.int_range(0, n, eager=True).shuffle(seed=rng.seed)
    quantitative = frame["_quantitative"]
    used = pl.Series([False] * n)

    def take(count: int, *, quantitative_only: bool = False) -> pl.Series:
        nonlocal used
        mask = ~used.gather(order)
        if quantitative_only:
            mask = mask & quantitative.gather(order)
        chosen = order.filter(mask).head(count)
        if chosen.len() < count:
            raise ValueError(f"not enough suitable rows to plant {count} bad rows")
        used = used.scatter(chosen, True)
        return chosen

    columns = {name: frame[name] for name in frame.columns}
    bad_indices: list[pl.Series] = []

    def set_values(column: str, rows: pl.Series, values: pl.Series | str) -> None:
        replacement = values if isinstance(values, pl.Series) else pl.Series([values] * rows.len())
        columns[column] = columns[column].scatter(rows, replacement)

    for kind in sorted(bad_rows):
        count = bad_rows[kind]
        if count <= 0:
            continue
        rows = take(count, quantitative_only=kind in _QUANTITATIVE_KINDS)
        bad_indices.append(rows)
        if kind == "bad_npi":
            npi = columns["ordering_provider_npi"].gather(rows)
            wrong = (npi.str.slice(9, 1).cast(pl.Int64) + 1) % 10
            set_values("ordering_provider_npi", rows, npi.str.slice(0, 9) + wrong.cast(pl.String))
        elif kind == "bad_dob":
            set_values("patient_dob", rows, (file_date + timedelta(days=30)).isoformat())
        elif kind == "invalid_dob":
            set_values("patient_dob", rows, "1980-02-30")
        elif kind == "missing_dob":
            set_values("patient_dob", rows, "")
        elif kind == "unmapped_code":
            set_values("local_test_code", rows, _UNMAPPED_CODE)
        elif kind == "missing_last_name":
            set_values("patient_last_name", rows, "")
        elif kind == "bad_sex":
            set_values("patient_sex", rows, "X")
        elif kind == "bad_mrn":
            set_values("patient_mrn", rows, "ab-12")
        elif kind == "bad_zip":
            set_values("patient_zip", rows, "1234")
        elif kind == "duplicate_id":
            originals = take(count)
            bad_indices.append(originals)
            set_values("record_id", rows, columns["record_id"].gather(originals))
        elif kind == "collected_after_resulted":
            collected = columns["specimen_collected_at"].gather(rows)
            resulted = columns["resulted_at"].gather(rows)
            set_values("specimen_collected_at", rows, resulted)
            set_values("resulted_at", rows, collected)
        elif kind == "bad_collected_at":
            set_values("specimen_collected_at", rows, "2024-13-45T99:00:00")
        elif kind == "non_numeric_value":
            set_values("result_value", rows, "see comment")
        elif kind == "missing_unit":
            set_values("result_unit", rows, "")
        elif kind == "bad_status":
            set_values("result_status", rows, "X")

    bad_pool = pl.concat(bad_indices) if bad_indices else pl.Series([], dtype=pl.Int64)
    for position, canary in enumerate(canary_names):
        valid_pair = take(2)
        set_values("patient_first_name", valid_pair.head(1), canary)
        set_values("patient_last_name", valid_pair.tail(1), canary)
        if bad_pool.len():
            set_values("patient_first_name", bad_pool.slice(position % bad_pool.len(), 1), canary)
    return pl.DataFrame(columns)


def render_lab_csv(
    df: pl.DataFrame, *, trailer: bool = True, crlf: bool = False, bom: bool = False
) -> bytes:
    """The frame as a partner file: RFC 4180 CSV, optional 'TRAILER,<n>', CRLF and BOM.

    Columns are written in the frame's order (reorder the frame to test header order).
    """
    newline = "\r\n" if crlf else "\n"
    body = df.write_csv(quote_style="necessary", line_terminator=newline).encode("utf-8")
    parts = [b"\xef\xbb\xbf" if bom else b"", body]
    if trailer:
        parts.append(f"TRAILER,{df.height}{newline}".encode("ascii"))
    return b"".join(parts)
