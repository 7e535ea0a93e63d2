"""What `batchbridge demo` keeps of an earlier demo in its workdir, and its next partner file.

By default a workdir holding an earlier demo is kept: its ledger (quarantined rows, steward
fixes, releases, discards, the audit log), its warehouse, its keys and secrets (quarantined
rows are encrypted with its quarantine key), mapping table and stewards.yaml. The demo then
drops a new file with a name not seen before, so there is something new to process.
`--fresh` wipes the folder and starts over. A folder that is not a demo is never touched.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path

import polars as pl
from cryptography.hazmat.primitives import serialization

from batchbridge.demo.keys import KeyPair, generate_ed25519
from batchbridge.demo.scenario import lab_file_name
from batchbridge.errors import ConfigError

MARKER = ".batchbridge-demo"
"""Written into every demo workdir: the demo wipes only folders that carry it."""

NEEDED_TO_KEEP: tuple[str, ...] = (
    "feeds/lab_results.yaml",
    "mappings/acme_lab_loinc.csv",
    "partner-gnupg",
    "secrets/sftp_key",
    "secrets/pgp_private.asc",
    "secrets/pgp_passphrase",
    "secrets/partner_public.asc",
    "secrets/pseudonym_key",
    "secrets/quarantine_key",
)
"""What an earlier demo must hold to be carried on (ledger and warehouse are kept if there)."""

DROP_GLOB = "LAB_RESULTS_ACME_*.csv.pgp"


class Start(StrEnum):
    """How the demo treats its workdir."""

    NEW = "new"  # nothing there yet
    KEEP = "keep"  # carry on with the earlier demo
    WIPE = "wipe"  # delete the earlier demo, start over


@dataclass(frozen=True)
class DemoStart:
    """The decision, and the sentence the demo prints about it."""

    action: Start
    reason: str


def _is_demo(workdir: Path) -> bool:
    # Workdirs made before the marker existed are recognised by their layout.
    legacy = (workdir / "feeds" / "lab_results.yaml").is_file() and (
        workdir / "partner-gnupg"
    ).is_dir()
    return (workdir / MARKER).is_file() or legacy


def plan_demo_start(workdir: Path, *, fresh: bool) -> DemoStart:
    """Keep an earlier demo unless `fresh`; ConfigError for a folder that is not a demo."""
    if not workdir.exists():
        return DemoStart(Start.NEW, "new workdir")
    if not workdir.is_dir():
        raise ConfigError(f"demo workdir {workdir} is not a folder")
    if not any(workdir.iterdir()):
        return DemoStart(Start.NEW, "empty workdir")
    if not _is_demo(workdir):
        raise ConfigError(
            f"{workdir} holds files that are not a batchbridge demo; not touching them: "
            "give --workdir a new or empty folder"
        )
    if fresh:
        return DemoStart(Start.WIPE, "--fresh: the earlier demo is deleted, starting over")
    missing = [part for part in NEEDED_TO_KEEP if not (workdir / part).exists()]
    if missing:
        return DemoStart(
            Start.WIPE,
            f"the earlier demo is incomplete (no {', '.join(missing)}): starting over",
        )
    return DemoStart(
        Start.KEEP,
        "keeping the earlier demo: its ledger (quarantine, fixes, releases, audit log), "
        "warehouse, keys, secrets, mapping table and stewards.yaml (--fresh starts over)",
    )


def prepare_workdir(workdir: Path, start: DemoStart) -> None:
    """Wipe (WIPE) or create (NEW) the folder as decided, and mark it as a demo's."""
    if start.action is Start.WIPE:
        if not _is_demo(workdir):
            raise ConfigError(f"{workdir} is not a batchbridge demo; not deleting it")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text(
        "Made by `batchbridge demo`: synthetic data only. `batchbridge demo --fresh` "
        "deletes this folder.\n",
        encoding="utf-8",
    )


def client_key(workdir: Path, start: DemoStart) -> KeyPair:
    """Our SSH login key: the earlier demo's (its secret stays as it is), else a new one."""
    if start.action is not Start.KEEP:
        return generate_ed25519()
    private = (workdir / "secrets" / "sftp_key").read_text(encoding="ascii")
    key = serialization.load_ssh_private_key(private.encode("ascii"), password=None)
    public = key.public_key().public_bytes(
        encoding=serialization.Encoding.OpenSSH, format=serialization.PublicFormat.OpenSSH
    )
    return KeyPair(private_openssh=private, public_line=public.decode("ascii"))


def next_demo_file(drop_dir: Path, file_date: date) -> tuple[str, int]:
    """A partner file name not in `drop_dir` yet, and its sequence number (1 for the first).

    The first file gets the plain name; later ones carry their sequence number, so a
    rerun of the demo on the same day still brings a file the ledger has not seen.
    """
    existing = {path.name for path in drop_dir.glob(DROP_GLOB)} if drop_dir.is_dir() else set()
    seq = len(existing) + 1
    name = lab_file_name(file_date) if seq == 1 else lab_file_name(file_date, seq)
    while name in existing:
        seq += 1
        name = lab_file_name(file_date, seq)
    return name, seq


def renumber_records(frame: pl.DataFrame, seq: int) -> pl.DataFrame:
    """Record ids of the demo's `seq`-th file: R… for the first, R<seq>-… after.

    The synthetic rows number their records from R000000001 in every file; a later file
    with the same ids would update the first file's rows instead of adding its own.
    """
    if seq == 1:
        return frame
    return frame.with_columns(pl.col("record_id").str.replace(r"^R", f"R{seq}-"))
