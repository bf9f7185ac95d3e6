"""The stats box keeps live figures and totals apart, and says memory is PSS."""

from __future__ import annotations

from datetime import UTC, datetime

from manager.ops.stats import ManagerStats, render_stats_box, stats_document
from manager.store.base import SystemStats

SYSTEM = SystemStats(
    total_agents=0,
    active_agents=0,
    connecting_agents=0,
    avg_memory_mb=None,
    total_llm_calls=12,
    total_locations_marked=6,
    unique_documents=0,
    avg_rss_mb=None,
    live_llm_calls=0,
    live_locations_marked=0,
)
MANAGER = ManagerStats(
    manager_id="host-1",
    running=0,
    capacity=10,
    waiting=0,
    evictions=1,
    restarts=2,
    events_applied=40,
    event_lag_s=0.01,
    worker_memory_mb=0.0,
    worker_memory_rss_mb=0.0,
    started_at=datetime(2026, 12, 2, 4, 0, tzinfo=UTC),
)


def lines_of(box: str) -> list[str]:
    return [line.strip("|+- ").strip() for line in box.splitlines()]


def test_no_agent_running_shows_marks_only_as_a_total() -> None:
    box = render_stats_box(SYSTEM, MANAGER, now=datetime(2026, 12, 2, 5, 0, tzinfo=UTC))
    lines = lines_of(box)
    assert "docagents stats - 2026-12-02T05:00:00Z" in lines[0]
    live = lines.index("Live now (connecting or active)")
    totals = lines.index("All-time totals")
    mine = lines.index("Manager host-1, live")
    since = lines.index("Totals since start 2026-12-02T04:00:00Z")
    assert live < totals < mine < since
    section = lines[live:totals]
    assert any(
        line.startswith("Locations marked (live agents):") and line.endswith("0")
        for line in section
    )
    assert any(line.startswith("Avg memory (PSS):") for line in section)
    assert any(
        line.startswith("Locations marked:") and line.endswith("6") for line in lines[totals:mine]
    )
    assert any(line.startswith("Worker memory (PSS):") for line in lines[mine:since])
    assert any(line.startswith("Restarts:") and line.endswith("2") for line in lines[since:])
    widths = {len(line) for line in box.splitlines()}
    assert len(widths) == 1  # a box


def test_json_groups_live_and_totals() -> None:
    doc = stats_document(SYSTEM, MANAGER)
    assert doc["live"]["locations_marked"] == 0
    assert doc["totals"]["locations_marked"] == 6
    assert doc["system"]["total_locations_marked"] == 6
    assert doc["manager"]["started_at"] == "2026-12-02T04:00:00Z"
