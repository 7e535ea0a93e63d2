"""Partner files of any size, made in pieces: rows -> CSV -> gpg's stdin, never held whole.

`generate_lab_rows` makes a frame of n rows in one go and `render_lab_csv` one bytes
object of it, which is fine up to a few million rows; 10M rows are ~1.5 GB of
plaintext. Here a file is made `PIECE_ROWS` rows at a time, each piece written into the
stdin of one `gpg --sign --encrypt` (the partner's keyring of the scenario, as
`LabFeedScenario.drop_file` does), so the generator's memory stays at one piece and the
plaintext never touches the disk.

Each piece is `generate_lab_rows` with its own seed, then made part of one file:

- record ids are renumbered on from the pieces before (and from `id_offset`, so several
  files of one run never share a key); a planted duplicate id stays a duplicate;
- MRNs (3 letters + digits) get their patient number moved on the same way, so every
  piece has patients of its own, as a file n times bigger has n times more patients;
- the header comes first, once, and `TRAILER,<rows>` last.

The bad rows of the whole file (`bad_rows_for`) are spread over the pieces.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

    from batchbridge.demo.scenario import LabFeedScenario

FILE_DATE = date(2026, 11, 20)
SEED = 20261120
PIECE_ROWS = 200_000
BAD_ROW_SHARE = 0.005


@dataclass(frozen=True)
class LabFileSpec:
    """One partner file to make: its name, rows, seed, and where its record ids start."""

    name: str
    rows: int
    seed: int
    file_date: date
    id_offset: int = 0

    @property
    def bad_rows(self) -> dict[str, int]:
        """The bad rows planted in the whole file."""
        return bad_rows_for(self.rows)

    @property
    def quarantined(self) -> int:
        """Rows the pipeline must quarantine: every planted one (a duplicate id costs 2)."""
        from batchbridge.demo.bad_rows import expected_quarantined

        return sum(expected_quarantined(bad) for _, _, bad in pieces(self.rows, self.bad_rows))


def bad_rows_for(rows: int) -> dict[str, int]:
    """About BAD_ROW_SHARE of `rows`, spread evenly over every kind (a duplicate id costs 2)."""
    from batchbridge.demo.bad_rows import BAD_ROW_KINDS

    units = len(BAD_ROW_KINDS) + 1  # duplicate_id quarantines the original row as well
    per_kind = max(1, round(rows * BAD_ROW_SHARE / units))
    return dict.fromkeys(BAD_ROW_KINDS, per_kind)


def pieces(rows: int, bad_rows: dict[str, int]) -> list[tuple[int, int, dict[str, int]]]:
    """(first row, rows, bad rows) of each piece; the bad rows of each kind spread evenly."""
    count = max(1, -(-rows // PIECE_ROWS))
    bounds = [rows * i // count for i in range(count + 1)]
    return [
        (
            bounds[i],
            bounds[i + 1] - bounds[i],
            {
                kind: total // count + (1 if i < total % count else 0)
                for kind, total in bad_rows.items()
            },
        )
        for i in range(count)
    ]


def _renumbered(frame: pl.DataFrame, first_row: int) -> pl.DataFrame:
    """Record ids and patient numbers moved on by `first_row` (see the module docstring)."""
    import polars as pl

    mrn = pl.col("patient_mrn")
    ordinary = mrn.str.contains(r"^[A-Z]{3}[0-9]+$")  # not a planted bad MRN
    return frame.with_columns(
        record_id=pl.lit("R")
        + (pl.col("record_id").str.slice(1).cast(pl.Int64) + first_row)
        .cast(pl.String)
        .str.pad_start(9, "0"),
        patient_mrn=pl.when(ordinary)
        .then(
            mrn.str.slice(0, 3)
            + (mrn.str.slice(3).cast(pl.Int64, strict=False) + first_row // 4)
            .cast(pl.String)
            .str.pad_start(7, "0")
        )
        .otherwise(mrn),
    )


def _write_pieces(spec: LabFileSpec, sink: IO[bytes], timings: dict[str, float]) -> int:
    """Write the file's plaintext into `sink` piece by piece; returns its size in bytes."""
    from batchbridge.demo.lab_data import generate_lab_rows

    written = 0
    for index, (first, rows, bad) in enumerate(pieces(spec.rows, spec.bad_rows)):
        started = time.perf_counter()
        frame = generate_lab_rows(
            rows, seed=spec.seed + 7919 * index, file_date=spec.file_date, bad_rows=bad
        )
        frame = _renumbered(frame, spec.id_offset + first)
        generated = time.perf_counter()
        data = frame.write_csv(
            include_header=index == 0, quote_style="necessary", line_terminator="\n"
        ).encode("utf-8")
        del frame
        rendered = time.perf_counter()
        sink.write(data)  # blocks while gpg catches up: counted as encrypt time
        written += len(data)
        done = time.perf_counter()
        timings["generate_s"] += generated - started
        timings["render_s"] += rendered - generated
        timings["encrypt_s"] += done - rendered
    trailer = f"TRAILER,{spec.rows}\n".encode("ascii")
    sink.write(trailer)
    return written + len(trailer)


def write_encrypted_lab_file(scenario: LabFeedScenario, spec: LabFileSpec) -> dict[str, Any]:
    """Make `spec`'s file in the scenario's drop folder (encrypted to us, signed by the partner).

    Returns seconds spent generating rows, rendering CSV and waiting for gpg, and the
    plaintext and ciphertext sizes. The file appears whole (written aside, then renamed).
    """
    partner = scenario.partner
    out = scenario.endpoint.drop_dir / spec.name
    tmp = out.with_name(f".{spec.name}.part")
    command = [
        partner.gpg_binary, "--homedir", str(partner.home), "--batch", "--no-tty",
        "--no-auto-key-retrieve", "--disable-dirmngr", "--trust-model", "always", "--yes",
        "--output", str(tmp), "--recipient", scenario.our_fpr, "--compress-algo", "zlib",
        "--local-user", f"{scenario.partner_fpr}!", "--pinentry-mode", "loopback",
        "--passphrase", "", "--sign", "--encrypt",
    ]  # fmt: skip
    env = {**os.environ, "GNUPGHOME": str(partner.home), "LC_ALL": "C"}
    timings = {"generate_s": 0.0, "render_s": 0.0, "encrypt_s": 0.0}
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    assert process.stdin is not None and process.stderr is not None
    try:
        size = _write_pieces(spec, process.stdin, timings)
        process.stdin.close()
        started = time.perf_counter()
        stderr = process.stderr.read()
        process.wait()
        timings["encrypt_s"] += time.perf_counter() - started
    except BaseException:
        process.kill()
        process.wait()
        tmp.unlink(missing_ok=True)
        raise
    if process.returncode != 0:
        tmp.unlink(missing_ok=True)
        message = stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"gpg --sign --encrypt failed ({process.returncode}): {message}")
    tmp.rename(out)
    return {**timings, "plaintext_bytes": size, "ciphertext_bytes": out.stat().st_size}


def lab_file_path(scenario: LabFeedScenario, spec: LabFileSpec) -> Path:
    """Where `write_encrypted_lab_file` puts `spec`'s file."""
    return scenario.endpoint.drop_dir / spec.name
