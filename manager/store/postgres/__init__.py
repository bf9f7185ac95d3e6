"""The Postgres backend: :class:`PostgresStore`, and connecting to a Postgres.

``store`` is the :class:`~manager.store.base.Store` over a psycopg pool,
``queries`` its named SQL, ``connection`` what a failed connection means (also
used by the migrations and the CLI). It never imports the Supabase backend.
"""

from __future__ import annotations

from manager.store.postgres.connection import (
    check_connectable,
    libpq_environment,
    refused_by_configuration,
)
from manager.store.postgres.store import PostgresStore

__all__ = [
    "PostgresStore",
    "check_connectable",
    "libpq_environment",
    "refused_by_configuration",
]
