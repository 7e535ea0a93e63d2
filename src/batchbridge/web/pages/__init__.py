"""The workbench's pages, one router per module: queue, row, bulk actions, balance, runs, audit."""

from fastapi import APIRouter

from batchbridge.web.pages import audit, balance, bulk, queue, rows, runs

ROUTERS: tuple[APIRouter, ...] = (
    queue.router,
    rows.router,
    bulk.router,
    balance.router,
    runs.router,
    audit.router,
)
