"""``docagents managers``: the fleet's leases as a table or JSON lines (pure rendering).

Each lease's state is :func:`manager.fleet.leases.lease_state`'s: ``leading``,
``renewing`` (renewals overdue, not yet expired), ``expired``, ``draining`` or
``stopped``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from manager.fleet.leases import free_slots, lease_agents, lease_state
from manager.store.base import ManagerLease

__all__ = ["lease_document", "render_leases"]


def lease_document(lease: ManagerLease, *, renew_s: float) -> dict[str, Any]:
    """One manager as a JSON object (``docagents managers --json``, one per line);
    ``renew_s`` is ``LEASE_RENEW_S`` (when a renewal is overdue)."""
    return {
        "manager_id": lease.manager_id,
        "instance_id": str(lease.instance_id),
        "host": lease.host,
        "pid": lease.pid,
        "state": lease_state(lease, renew_s=renew_s),
        "agents": lease_agents(lease),
        "capacity": lease.capacity,
        "free_slots": free_slots(lease),
        "lease_age_s": None if lease.lease_age_s is None else round(lease.lease_age_s, 3),
        "started_at": lease.started_at.isoformat(),
        "renewed_at": lease.renewed_at.isoformat(),
        "expires_at": lease.expires_at.isoformat(),
    }


def render_leases(leases: Sequence[ManagerLease], *, renew_s: float) -> str:
    """A table: id, host, pid, agents, free slots, lease age, state; then a summary
    (a live manager is one whose lease has not expired)."""
    header = ("MANAGER", "HOST", "PID", "AGENTS", "FREE", "LEASE AGE", "STATE")
    rows = [header]
    for lease in leases:
        free = free_slots(lease)
        age = lease.lease_age_s
        rows.append(
            (
                lease.manager_id,
                lease.host or "-",
                "-" if lease.pid is None else str(lease.pid),
                str(lease_agents(lease)),
                "-" if free is None else str(free),
                "-" if age is None else f"{age:.1f}s",
                lease_state(lease, renew_s=renew_s),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    live = sum(1 for lease in leases if lease.state in ("leading", "draining"))
    lines.append(f"{live} live manager(s), {len(leases)} lease(s)")
    return "\n".join(lines)
