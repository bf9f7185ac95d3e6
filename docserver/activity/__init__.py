"""Writing the docserver's document_activity rows, in order, through database outages.

What lives here:

- :mod:`~docserver.activity.buffer`: :class:`ActivityRow` (one row to write),
  :class:`ActivitySink` (what the service and the app need from a writer) and
  :class:`BufferedActivityWriter`, the backend-neutral bounded queue with its
  retry loop and the read of the documents left 'active' at start-up;
- :mod:`~docserver.activity.postgres`: :class:`PostgresActivityWriter` (psycopg,
  the docserver's DATABASE_URL);
- :mod:`~docserver.activity.supabase`: :class:`SupabaseActivityWriter`
  (PostgREST with SUPABASE_SERVICE_KEY, when there is no DATABASE_URL).

Imports: the two backends import ``buffer``, never each other, and each is the
only place its client library (psycopg; httpx/postgrest/supabase) is imported
for writing activity; they translate its errors into :mod:`docserver.errors`.
``buffer`` imports only :mod:`docserver.errors` and :mod:`docserver.presence`
(the event types). Nothing here imports ``manager`` or ``worker``. This
package exports only the backend-neutral names: import a backend by its module,
so the other backend's client library is not loaded.
"""

from __future__ import annotations

from docserver.activity.buffer import (
    ActivityRow,
    ActivitySink,
    BufferedActivityWriter,
    describe_row,
)

__all__ = ["ActivityRow", "ActivitySink", "BufferedActivityWriter", "describe_row"]
