"""Migrations: fresh apply, idempotence, concurrency, and the Supabase-only parts."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from manager.store.migrations import apply_migrations, discover_migrations

pytestmark = pytest.mark.anyio


def _tables(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    ).fetchall()
    return {r[0] for r in rows}


async def test_fresh_apply_then_noop(empty_database_url: str) -> None:
    versions = [m.version for m in discover_migrations()]
    assert await apply_migrations(empty_database_url) == versions
    assert await apply_migrations(empty_database_url) == []
    with psycopg.connect(empty_database_url) as conn:
        assert {"document_activity", "agent_connections", "agent_metrics"} <= _tables(conn)
        recorded = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
        assert recorded == versions
        funcs = {
            r[0]
            for r in conn.execute(
                "SELECT proname FROM pg_proc JOIN pg_namespace n ON n.oid = pronamespace "
                "WHERE n.nspname = 'public'"
            )
        }
    assert {
        "get_agent_system_stats",
        "get_manager_active_agents",
        "increment_agent_metric",
        "claim_document",
        "end_agent_life",
        "record_agent_metrics",
        "record_agent_metrics_once",
        "set_agent_status",
    } <= funcs


def test_two_concurrent_migrate_processes(empty_database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": empty_database_url, "LOG_LEVEL": "warning"}
    cmd = [sys.executable, "-m", "manager.cli", "migrate"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sum("applied migrations" in out for out in outputs) == 1
    assert sum("up to date" in out for out in outputs) == 1
    with psycopg.connect(empty_database_url) as conn:
        count = conn.execute("SELECT count(*), count(DISTINCT version) FROM schema_migrations")
        assert count.fetchone() == (len(discover_migrations()), len(discover_migrations()))


async def test_failed_migration_is_rolled_back(empty_database_url: str) -> None:
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        # A table the first migration wants to create already exists: it must fail whole.
        conn.execute("CREATE TABLE agent_metrics (x int)")
    from manager.errors import MigrationError

    with pytest.raises(MigrationError, match="0001_schema"):
        await apply_migrations(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        assert "document_activity" not in _tables(conn)
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (0,)


async def test_supabase_roles_get_policies_grants_and_publication(
    empty_database_url: str,
) -> None:
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        for role in ("service_role", "authenticated"):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
            if not exists:
                conn.execute(f"CREATE ROLE {role} NOLOGIN")
        conn.execute("CREATE PUBLICATION supabase_realtime")
    try:
        await apply_migrations(empty_database_url)
        with psycopg.connect(empty_database_url) as conn:
            published = {
                r[0]
                for r in conn.execute(
                    "SELECT tablename FROM pg_publication_tables"
                    " WHERE pubname = 'supabase_realtime'"
                )
            }
            assert published == {"document_activity", "agent_connections", "agent_metrics"}
            rls = dict(
                conn.execute(
                    "SELECT relname, relrowsecurity FROM pg_class WHERE relname IN "
                    "('document_activity', 'agent_connections', 'agent_metrics')"
                ).fetchall()
            )
            assert all(rls.values()), rls
            policies = {
                (r[0], r[1], tuple(r[2]))
                for r in conn.execute("SELECT tablename, cmd, roles FROM pg_policies")
            }
            for table in ("document_activity", "agent_connections", "agent_metrics"):
                assert (table, "ALL", ("service_role",)) in policies
                assert (table, "SELECT", ("authenticated",)) in policies
            grants = {
                (r[0], r[1], r[2])
                for r in conn.execute(
                    "SELECT grantee, table_name, privilege_type "
                    "FROM information_schema.role_table_grants WHERE table_schema = 'public'"
                )
            }
            assert ("service_role", "agent_connections", "INSERT") in grants
            assert ("authenticated", "agent_metrics", "SELECT") in grants
            assert ("authenticated", "agent_metrics", "INSERT") not in grants
    finally:
        with psycopg.connect(empty_database_url, autocommit=True) as conn:
            conn.execute("DROP PUBLICATION IF EXISTS supabase_realtime")


def test_plain_postgres_has_no_policies(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_policies").fetchone() == (0,)
