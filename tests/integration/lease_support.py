"""Leases for tests that claim documents directly (claim_document needs a valid lease)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg


def hold_lease(
    target: str | psycopg.Connection[Any],
    manager_id: str,
    *,
    ttl_s: float = 3600.0,
    host: str | None = "test-host",
    pid: int | None = None,
) -> uuid.UUID:
    """Give ``manager_id`` a lease (by a new instance id) valid ``ttl_s``; its instance id."""
    instance = uuid.uuid4()
    statement = (
        "SELECT acquired AS held"
        " FROM acquire_manager_lease(%s, %s, %s, %s, %s, 0, 0, 'leading', NULL)"
    )
    params = (manager_id, instance, host, pid, ttl_s)
    if isinstance(target, str):
        with psycopg.connect(target, autocommit=True) as conn:
            row = conn.execute(statement, params).fetchone()
    else:
        row = target.execute(statement, params).fetchone()
    held = None if row is None else (row["held"] if isinstance(row, dict) else row[0])
    assert held, f"lease of {manager_id} is held by another instance"
    return instance


def expire_lease(target: str | psycopg.Connection[Any], manager_id: str) -> None:
    """Make ``manager_id``'s lease expired now (as if its manager stopped renewing)."""
    statement = "UPDATE manager_leases SET expires_at = now() WHERE manager_id = %s"
    if isinstance(target, str):
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(statement, (manager_id,))
    else:
        target.execute(statement, (manager_id,))
