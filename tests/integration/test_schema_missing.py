"""A database without the docagents schema is named as such by both store backends
(SchemaMissing, translated at the store boundary), and the manager refuses to start
on it with a one-line hint, whatever words the server's message uses."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from manager.errors import SchemaMissing
from manager.store.postgres import PostgresStore
from manager.store.supabase import SupabaseStore
from tests.integration.supabase_doubles import serve_supabase

pytestmark = pytest.mark.anyio


async def test_postgres_names_a_missing_schema(empty_database_url: str) -> None:
    store = await PostgresStore.connect(empty_database_url)
    try:
        with pytest.raises(SchemaMissing, match="schema is missing"):
            await store.latest_events()
        with pytest.raises(SchemaMissing):
            await store.claim_document("doc", "agent-1", "m1", None)
    finally:
        await store.aclose()


async def test_supabase_names_a_missing_schema(empty_database_url: str) -> None:
    """PostgREST answers 404 PGRST202 for a function it cannot find; the store's
    connect probe (get_agent_system_stats) already says what is wrong."""
    async with serve_supabase(empty_database_url) as double:
        with pytest.raises(SchemaMissing, match="schema is missing"):
            await SupabaseStore.connect(double.url, SecretStr(double.key))
