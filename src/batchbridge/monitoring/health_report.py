"""Health check results as terminal text and as the Prefect markdown artifact (no PHI)."""

from __future__ import annotations

from batchbridge.monitoring.health_model import FeedHealth

STATUS_WORD = {"ok": "ok", "warning": "WARNING", "error": "FAILED", "skipped": "skipped"}


def render_health_text(health: FeedHealth) -> str:
    """Terminal lines: a summary, then one line per check."""
    counts = health.counts()
    lines = [
        f"feed {health.feed} (tenant {health.tenant or '?'}): {health.status.upper()} — "
        f"{counts['error']} failed, {counts['warning']} warning(s), {counts['ok']} ok, "
        f"{counts['skipped']} skipped"
    ]
    width = max((len(c.name) for c in health.checks), default=0)
    for check in health.checks:
        lines.append(f"  {STATUS_WORD[check.severity]:<8} {check.name:<{width}}  {check.detail}")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_health_markdown(health: FeedHealth) -> str:
    """The Prefect artifact: a status line and a table of checks (no PHI in any cell)."""
    counts = health.counts()
    rows = [
        f"# {health.feed} health: **{health.status}**",
        "",
        f"tenant `{health.tenant or '?'}`, checked at {health.checked_at} — "
        f"{counts['error']} failed, {counts['warning']} warning(s), {counts['ok']} ok, "
        f"{counts['skipped']} skipped",
        "",
        "| check | status | detail |",
        "| --- | --- | --- |",
    ]
    rows += [
        f"| {_cell(c.name)} | {STATUS_WORD[c.severity]} | {_cell(c.detail)} |"
        for c in health.checks
    ]
    return "\n".join(rows)


def health_artifact_key(feed: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes."""
    return f"{feed.replace('_', '-')}-health"
