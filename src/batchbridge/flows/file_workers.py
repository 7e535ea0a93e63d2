"""A run's files at once: Prefect's thread-pool task runner, one SFTP and target set per worker.

`parallel_files` in the feed's YAML bounds how many files of one run are processed at
the same time (1, the default, keeps them in order, one after another). Each worker
thread takes a kit from a queue: a `FeedRun` sharing the run's ledger, decryptor and
report but with its own SFTP connection and its own target connections (a target
serializes its loads on its connection, so sharing one would serialize the files).
Ledger rows, reports and counts are the same as in order; only the order of the
report's files follows the discovery order, not the finishing order.

For a cluster, Prefect's DaskTaskRunner (prefect-dask) takes the thread pool's place:
see docs/production.md.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace
from queue import Queue
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from batchbridge.connectors.sources.base import RemoteFile
from batchbridge.connectors.sources.registry import open_source
from batchbridge.connectors.targets.registry import open_target
from batchbridge.flows.feed_run import FeedRun
from batchbridge.flows.nightly_file import process_file
from batchbridge.ledger.run_report import FileReport

FileToDo = tuple[RemoteFile, bytes | None]
"""A file to process and its manifest (None when the contract asks for none)."""


@task(name="file", cache_policy=NONE, persist_result=False, task_run_name="file {remote.name}")
def process_file_task(
    kits: Queue[FeedRun], remote: RemoteFile, force: bool, manifest: bytes | None
) -> FileReport | None:
    """One file with a worker's connections (taken from `kits`, given back after)."""
    run = kits.get()
    try:
        return process_file(run, remote, force=force, manifest=manifest)
    finally:
        kits.put(run)


def process_files(
    run: FeedRun, todo: list[FileToDo], *, force: bool, workers: int
) -> list[FileReport]:
    """Every file of `todo`, up to `workers` at once; their reports in `todo`'s order."""
    count = min(workers, len(todo))
    if count <= 1:
        reports = [process_file(run, remote, force=force, manifest=m) for remote, m in todo]
        return [report for report in reports if report is not None]
    kits: Queue[FeedRun] = Queue()
    kits.put(run)
    with ExitStack() as stack:
        for _ in range(count - 1):
            kits.put(_worker_run(run, stack))
        pool: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=count)
        with pool as runner:
            futures = [
                runner.submit(
                    process_file_task,
                    # quote: Prefect need not look inside the kits for upstream futures.
                    {"kits": quote(kits), "remote": remote, "force": force, "manifest": m},
                )
                for remote, m in todo
            ]
            found = [future.result() for future in futures]
    return [report for report in found if report is not None]


def _worker_run(run: FeedRun, stack: ExitStack) -> FeedRun:
    """`run` with connections of its own (closed when `stack` closes)."""
    source = open_source(run.loaded)
    stack.callback(source.close)
    targets = []
    for target_config in run.loaded.config.targets:
        target = open_target(run.loaded, target_config)
        stack.callback(target.close)
        targets.append(target)
    return replace(run, source=source, targets=targets)
