"""Synthetic patient_roster files (no real patients) for tests and the demo."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import date, timedelta

import polars as pl

from batchbridge.validations.schemas.patient_roster import COLUMNS

ROSTER_COLUMNS: tuple[str, ...] = COLUMNS

PLANS: tuple[tuple[str, str], ...] = (
    ("HMO1", "Riverside HMO Gold"),
    ("PPO2", "Riverside PPO Silver"),
    ("MCD", "State Medicaid"),
    ("MCR", "Medicare Advantage"),
)
"""(plan_code, plan_name) rows of the test plan table."""

BAD_ROW_REASONS: dict[str, tuple[str, ...]] = {
    "missing_member_id": ("member_id:required",),
    "bad_mrn": ("mrn:pattern",),
    "bad_birth_date": ("birth_date:date_format",),
    "future_birth_date": ("birth_date:not_in_future",),
    "bad_gender": ("gender:one_of",),
    "bad_phone": ("phone:ten_digits",),
    "bad_email": ("email:plausible_email",),
    "bad_npi": ("pcp_npi:npi_luhn",),
    "unmapped_plan": ("plan_code:unmapped_code",),
    "ends_before_start": ("effective_to:not_before_effective_from",),
}
"""Kind of planted bad row -> the exact reasons the schema gives it."""

_GIVEN = ("Ana", "Ben", "Chloé", "Dmitri", "Eve", "Farah", "Günter", "Hana", "Ivo", "José")
_FAMILY = ("Abara", "Brandt", "Çelik", "Dubois", "Eriksen", "Fernández", "Gallo", "Hale")


def plan_table() -> pl.DataFrame:
    """The plan mapping as a frame (write it as CSV for a feed's `mappings:`)."""
    return pl.DataFrame({"plan_code": [p[0] for p in PLANS], "plan_name": [p[1] for p in PLANS]})


def _npi(rng: random.Random) -> str:
    base = [rng.randint(0, 9) for _ in range(9)]
    base[0] = rng.choice((1, 2))
    digits = [8, 0, 8, 4, 0, *base]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if position % 2 == 0 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return "".join(map(str, base)) + str((10 - total % 10) % 10)


def _us(day: date) -> str:
    return day.strftime("%m/%d/%Y")


def generate_roster_rows(
    n: int,
    *,
    seed: int,
    file_date: date,
    bad_rows: dict[str, int] | None = None,
    canary_names: Sequence[str] = (),
    member_ids: Sequence[str] | None = None,
) -> pl.DataFrame:
    """`n` roster rows as strings, valid unless planted otherwise (one reason each).

    `member_ids` picks the members (default M000001…); canary names become given
    names of valid rows and, when bad rows are planted, of the first bad row too.
    """
    rng = random.Random(seed)
    ids = list(member_ids) if member_ids is not None else [f"M{i:06d}" for i in range(1, n + 1)]
    if len(ids) != n:
        raise ValueError("member_ids must have n entries")
    rows: list[dict[str, str]] = []
    for position, member_id in enumerate(ids):
        birth = date(1940, 1, 1) + timedelta(days=rng.randint(0, 25_000))
        start = file_date - timedelta(days=rng.randint(30, 2_000))
        rows.append(
            {
                "member_id": member_id,
                "mrn": f"RC{int(member_id.lstrip('M') or 0):08d}",
                "given": rng.choice(_GIVEN),
                "family": rng.choice(_FAMILY),
                "birth_date": _us(birth),
                "gender": rng.choice(("male", "female", "other", "unknown", "Female")),
                "phone": rng.choice(
                    ("", f"(555) 1{position % 100:02d}-{rng.randint(0, 9999):04d}")
                ),
                "email": rng.choice(("", f"member{position}@example.org")),
                "pcp_npi": rng.choice(("", _npi(rng))),
                "plan_code": rng.choice(PLANS)[0],
                "effective_from": _us(start),
                "effective_to": rng.choice(("", _us(start + timedelta(days=365)))),
            }
        )
    planted = [kind for kind, count in (bad_rows or {}).items() for _ in range(count)]
    if len(planted) + len(canary_names) > n:
        raise ValueError(f"{n} rows are too few for the planted rows")
    for index, kind in enumerate(planted):
        _plant(rows[n - 1 - index], kind, file_date)
    for index, name in enumerate(canary_names):
        rows[index]["given"] = name
    if planted and canary_names:
        rows[n - 1]["family"] = canary_names[0]
    return pl.DataFrame(rows, schema=dict.fromkeys(ROSTER_COLUMNS, pl.String))


def _plant(row: dict[str, str], kind: str, file_date: date) -> None:
    if kind == "missing_member_id":
        row["member_id"] = ""
    elif kind == "bad_mrn":
        row["mrn"] = "rc-12"
    elif kind == "bad_birth_date":
        row["birth_date"] = "1980-02-03"
    elif kind == "future_birth_date":
        row["birth_date"] = _us(file_date + timedelta(days=40))
    elif kind == "bad_gender":
        row["gender"] = "M"
    elif kind == "bad_phone":
        row["phone"] = "555-0100"
    elif kind == "bad_email":
        row["email"] = "member at example.org"
    elif kind == "bad_npi":
        row["pcp_npi"] = "1234567890"
    elif kind == "unmapped_plan":
        row["plan_code"] = "GOLDX"
    elif kind == "ends_before_start":
        row["effective_from"] = "06/01/2026"
        row["effective_to"] = "05/31/2026"
    else:
        raise ValueError(f"unknown bad row kind {kind!r}; known: {sorted(BAD_ROW_REASONS)}")


def render_roster(
    frame: pl.DataFrame,
    *,
    sender: str = "RIVERSIDE",
    file_date: date,
    declared: int | None = None,
    encoding: str = "latin-1",
    pad: bool = True,
) -> bytes:
    """The frame as the clinic writes it: 'H|sender|yyyymmdd|count', header, '|' rows.

    `pad` adds trailing spaces to some fields (the spec says they are trimmed).
    """
    count = frame.height if declared is None else declared
    lines = [f"H|{sender}|{file_date:%Y%m%d}|{count}", "|".join(frame.columns)]
    for index, row in enumerate(frame.iter_rows()):
        cells = [c + ("  " if pad and index % 3 == 0 and c else "") for c in row]
        lines.append("|".join(cells))
    return ("\r\n".join(lines) + "\r\n").encode(encoding)


def roster_file_name(file_date: date) -> str:
    """`roster_<yyyymmdd>.txt.gpg`, as the spec names the files."""
    return f"roster_{file_date:%Y%m%d}.txt.gpg"
