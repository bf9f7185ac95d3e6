"""The stats box ops read: system-wide figures plus this manager's own.

Figures come in two kinds, kept apart and labelled: **live** ones describe the
agents running now (counts, memory, what their current lives did), **totals**
add up everything since a start (the manager's counters, since this manager
process started) or ever recorded (the database's counters).
Memory is PSS (shared pages divided among the processes that share them), so
the workers' figures add up; RSS counts each shared page once per worker.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from manager.store.base import ExtractionStats, SystemStats

__all__ = ["ManagerStats", "WorkerMemory", "render_stats_box", "stats_document"]


@dataclass(frozen=True, slots=True)
class WorkerMemory:
    """Sums over a manager's live workers, in MiB, from their latest reports."""

    workers: int
    rss_mb: float
    pss_mb: float


@dataclass(frozen=True, slots=True)
class ManagerStats:
    """Figures only a running manager knows."""

    manager_id: str
    #: agent lives here (claiming, starting, running or stopping), against ``capacity``
    running: int
    capacity: int
    #: wanted documents without a life here
    waiting: int
    #: since this manager process started
    evictions: int
    restarts: int
    events_applied: int
    event_lag_s: float | None
    #: sum over this manager's live workers, PSS (None before any worker reported)
    worker_memory_mb: float | None
    #: the same sum in RSS (shared pages counted once per worker)
    worker_memory_rss_mb: float | None = None
    started_at: datetime | None = None


def _fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def render_stats_box(
    system: SystemStats,
    manager: ManagerStats | None = None,
    *,
    now: datetime | None = None,
    extraction: ExtractionStats | None = None,
) -> str:
    """A fixed-width box, one figure per line, for terminals and journald."""
    rows: list[tuple[str, str]] = [
        ("# Live now (connecting or active)", ""),
        ("Agents", str(system.total_agents)),
        ("Active agents", str(system.active_agents)),
        ("Connecting agents", str(system.connecting_agents)),
        ("Documents", str(system.unique_documents)),
        ("Avg memory (PSS)", _fmt(system.avg_memory_mb, " MiB")),
        ("LLM calls (live agents)", str(system.live_llm_calls)),
        ("Locations marked (live agents)", str(system.live_locations_marked)),
        ("", ""),
        ("# All-time totals", ""),
        ("LLM calls", str(system.total_llm_calls)),
        ("Locations marked", str(system.total_locations_marked)),
    ]
    if extraction is not None:
        e = extraction
        rows += [
            ("", ""),
            ("Sentences sent (1 h)", str(e.sentences_sent_1h)),
            ("Memory hits (1 h)", str(e.cache_hits_1h)),
            ("Tokens in/out (1 h)", f"{e.prompt_tokens_1h} / {e.completion_tokens_1h}"),
            ("Failed calls (1 h)", str(e.failures_1h)),
            ("Sentences pending", str(e.pending)),
            ("Sentences given up", str(e.failed)),
            ("Sentences remembered", str(e.remembered)),
        ]
    if manager is not None:
        since = "" if manager.started_at is None else f" {_stamp(manager.started_at)}"
        rows += [
            ("", ""),
            (f"# Manager {manager.manager_id}, live", ""),
            ("Running / cap", f"{manager.running} / {manager.capacity}"),
            ("Waiting", str(manager.waiting)),
            ("Event lag", _fmt(manager.event_lag_s, " s", 3)),
            ("Worker memory (PSS)", _fmt(manager.worker_memory_mb, " MiB")),
            ("Worker memory (RSS)", _fmt(manager.worker_memory_rss_mb, " MiB")),
            ("", ""),
            (f"# Totals since start{since}", ""),
            ("Evictions", str(manager.evictions)),
            ("Restarts", str(manager.restarts)),
            ("Events applied", str(manager.events_applied)),
        ]
    title = f" docagents stats - {_stamp(now or datetime.now(UTC))} "
    width = max(len(title) - 2, *(len(k) + len(v) + 3 for k, v in rows))
    lines = [f"+{title:-^{width + 2}}+"]
    for key, value in rows:
        if not key:
            lines.append(f"+{'-' * (width + 2)}+")
        elif key.startswith("# "):
            lines.append(f"| {key[2:]:<{width}} |")
        else:
            lines.append(f"| {key}:{value:>{width - len(key) - 1}} |")
    lines.append(f"+{'-' * (width + 2)}+")
    return "\n".join(lines)


def stats_document(
    system: SystemStats,
    manager: ManagerStats | None = None,
    *,
    extraction: ExtractionStats | None = None,
) -> dict[str, Any]:
    """The same figures as JSON-ready data (``docagents stats --json``).

    ``system`` is the row of ``get_agent_system_stats()`` as it is; ``live`` and
    ``totals`` are the same figures, grouped and named by what they count;
    ``extraction`` the extraction memory's figures (last hour and now).
    """
    doc: dict[str, Any] = {
        "system": dataclasses.asdict(system),
        "live": {
            "agents": system.total_agents,
            "active_agents": system.active_agents,
            "connecting_agents": system.connecting_agents,
            "documents": system.unique_documents,
            "avg_memory_pss_mb": system.avg_memory_mb,
            "avg_memory_rss_mb": system.avg_rss_mb,
            "llm_calls": system.live_llm_calls,
            "locations_marked": system.live_locations_marked,
        },
        "totals": {
            "llm_calls": system.total_llm_calls,
            "locations_marked": system.total_locations_marked,
        },
    }
    if extraction is not None:
        doc["extraction"] = dataclasses.asdict(extraction)
    if manager is not None:
        data = dataclasses.asdict(manager)
        if manager.started_at is not None:
            data["started_at"] = _stamp(manager.started_at)
        doc["manager"] = data
    return doc
