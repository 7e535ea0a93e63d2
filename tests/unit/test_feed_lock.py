"""The feed lock: one holder at a time, released when the holder ends or dies."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

from sqlalchemy import create_engine

from batchbridge.ledger.locks import feed_lock


def _hold_forever(url: str, ready: object) -> None:
    engine = create_engine(url)
    with feed_lock(engine, tenant="t", feed="f") as got:
        assert got
        ready.set()  # type: ignore[attr-defined]
        time.sleep(60)


def test_second_holder_is_refused_until_release(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    with feed_lock(engine, tenant="t", feed="f") as first:
        assert first
        with feed_lock(engine, tenant="t", feed="f") as second:
            assert not second
        with feed_lock(engine, tenant="t", feed="other") as other_feed:
            assert other_feed
    with feed_lock(engine, tenant="t", feed="f") as again:
        assert again


def test_lock_dies_with_a_killed_holder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=_hold_forever, args=(url, ready))
    holder.start()
    try:
        assert ready.wait(30)
        engine = create_engine(url)
        with feed_lock(engine, tenant="t", feed="f") as got:
            assert not got
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
        with feed_lock(engine, tenant="t", feed="f", wait_seconds=5) as got:
            assert got
    finally:
        if holder.is_alive():
            holder.kill()
