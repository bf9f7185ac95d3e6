"""The Supabase backend: :class:`SupabaseStore`, over a project's PostgREST.

``store`` is the :class:`~manager.store.base.Store`, ``rest`` the PostgREST
session that translates every HTTP and PostgREST error. It never imports the
Postgres backend.
"""

from __future__ import annotations

from manager.store.supabase.store import SupabaseStore

__all__ = ["SupabaseStore"]
