"""The stats box ops read: system-wide figures plus this manager's own."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from manager.store.base import ExtractionStats, SystemStats

__all__ = ["ManagerStats", "render_stats_box", "stats_document"]


@dataclass(frozen=True, slots=True)
class ManagerStats:
    """Figures only a running manager knows."""

    manager_id: str
    running: int
    capacity: int
    waiting: int
    evictions: int
    restarts: int
    events_applied: int
    event_lag_s: float | None
    worker_memory_mb: float


def _fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def render_stats_box(
    system: SystemStats,
    manager: ManagerStats | None = None,
    *,
    now: datetime | None = None,
    extraction: ExtractionStats | None = None,
) -> str:
    """A fixed-width box, one figure per line, for terminals and journald."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    rows: list[tuple[str, str]] = [
        ("Total agents", str(system.total_agents)),
        ("Active agents", str(system.active_agents)),
        ("Connecting agents", str(system.connecting_agents)),
        ("Unique documents", str(system.unique_documents)),
        ("Avg memory", _fmt(system.avg_memory_mb, " MB")),
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
        rows += [
            ("", ""),
            ("Manager", manager.manager_id),
            ("Running / cap", f"{manager.running} / {manager.capacity}"),
            ("Waiting", str(manager.waiting)),
            ("Evictions", str(manager.evictions)),
            ("Restarts", str(manager.restarts)),
            ("Events applied", str(manager.events_applied)),
            ("Event lag", _fmt(manager.event_lag_s, " s", 3)),
            ("Worker memory", _fmt(manager.worker_memory_mb, " MB")),
        ]
    title = f" docagents stats - {stamp} "
    width = max(len(title) - 2, *(len(k) + len(v) + 3 for k, v in rows))
    lines = [f"+{title:-^{width + 2}}+"]
    for key, value in rows:
        if not key:
            lines.append(f"+{'-' * (width + 2)}+")
            continue
        lines.append(f"| {key}:{value:>{width - len(key) - 1}} |")
    lines.append(f"+{'-' * (width + 2)}+")
    return "\n".join(lines)


def stats_document(
    system: SystemStats,
    manager: ManagerStats | None = None,
    *,
    extraction: ExtractionStats | None = None,
) -> dict[str, Any]:
    """The same figures as JSON-ready data (``docagents stats --json``)."""
    doc: dict[str, Any] = {"system": dataclasses.asdict(system)}
    if extraction is not None:
        doc["extraction"] = dataclasses.asdict(extraction)
    if manager is not None:
        doc["manager"] = dataclasses.asdict(manager)
    return doc
