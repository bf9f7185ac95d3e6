"""The state `docagents managers` reports for a lease: leading, renewing, expired,
draining or stopped (manager.fleet.leases.lease_state), in the table and the JSON."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from manager.fleet.leases import lease_state, renewal_overdue_after
from manager.fleet.report import lease_document, render_leases
from manager.store.base import ManagerLease

RENEW_S = 2.0


def lease(state: str = "leading", age_s: float | None = 0.5, **kwargs: object) -> ManagerLease:
    renewed = datetime(2026, 1, 1, tzinfo=UTC)
    values: dict[str, object] = {
        "manager_id": "m1",
        "instance_id": uuid.uuid4(),
        "host": "h1",
        "pid": 4242,
        "started_at": renewed - timedelta(minutes=5),
        "renewed_at": renewed,
        "expires_at": renewed + timedelta(seconds=10),
        "capacity": 10,
        "agents": 3,
        "state": state,
        "lease_age_s": age_s,
        "live_agents": 3,
    }
    values.update(kwargs)
    return ManagerLease(**values)  # type: ignore[arg-type]


def test_a_renewal_is_overdue_after_two_intervals() -> None:
    # One interval between renewals, at most one more waiting for the answer.
    assert renewal_overdue_after(RENEW_S) == 4.0
    assert renewal_overdue_after(0.5) == 1.0


@pytest.mark.parametrize(
    ("state", "age_s", "expected"),
    [
        ("leading", 0.0, "leading"),
        ("leading", 1.9, "leading"),
        ("leading", 4.0, "leading"),  # exactly on time still counts as on time
        ("leading", 4.01, "renewing"),
        ("leading", 9.9, "renewing"),
        ("leading", None, "leading"),  # a row without an age (not listed) says what it is
        ("expired", 12.0, "expired"),  # the database decides expiry, never this reader
        ("expired", 3.0, "expired"),  # a shorter TTL than this reader's renewal
        ("draining", 6.0, "draining"),  # the drain an operator asked for stays visible
        ("draining", 0.2, "draining"),
        ("stopped", 30.0, "stopped"),
    ],
)
def test_lease_state(state: str, age_s: float | None, expected: str) -> None:
    assert lease_state(lease(state, age_s), renew_s=RENEW_S) == expected


def test_renewing_is_measured_against_the_readers_renewal_interval() -> None:
    overdue = lease("leading", 1.5)
    assert lease_state(overdue, renew_s=0.5) == "renewing"
    assert lease_state(overdue, renew_s=2.0) == "leading"


def test_json_and_table_report_renewing_and_keep_it_live_with_free_slots() -> None:
    leases = [
        lease("leading", 0.4, manager_id="a"),
        lease("leading", 6.0, manager_id="b"),
        lease("expired", 11.0, manager_id="c"),
        lease("draining", 0.3, manager_id="d"),
    ]
    docs = {d["manager_id"]: d for d in (lease_document(x, renew_s=RENEW_S) for x in leases)}
    assert {m: d["state"] for m, d in docs.items()} == {
        "a": "leading",
        "b": "renewing",
        "c": "expired",
        "d": "draining",
    }
    # A renewing manager still holds its lease: its free slots are real.
    assert docs["b"]["free_slots"] == 7 and docs["c"]["free_slots"] is None
    json.dumps(list(docs.values()))  # JSON-serialisable as printed
    table = render_leases(leases, renew_s=RENEW_S).splitlines()
    states = {line.split()[0]: line.split()[-1] for line in table[1:-1]}
    assert states == {"a": "leading", "b": "renewing", "c": "expired", "d": "draining"}
    assert table[-1] == "3 live manager(s), 4 lease(s)"
