"""All database access of the manager.

- :mod:`~manager.store.base`: the :class:`~manager.store.base.Store` protocol, the
  seam the rest of the manager talks to (with the records of
  :mod:`~manager.store.records`);
- :mod:`~manager.store.rows`: rows of either backend into those records;
- :mod:`~manager.store.postgres` and :mod:`~manager.store.supabase`: the two
  backends, which do not import each other;
- :mod:`~manager.store.writer`: buffered, ordered writes of agent state over a store;
- :mod:`~manager.store.migrations` and :mod:`~manager.store.inspection`: applying
  ``migrations/`` and the ops commands' read-only queries (Postgres only).

Only this package imports psycopg, supabase or postgrest (apart from the
activity sources' own links: the LISTEN connection of :mod:`manager.events.listen`,
the Realtime client of :mod:`manager.events.realtime`); their errors become
:mod:`manager.errors`' here.
May import :mod:`manager.database`, :mod:`manager.embedded`, :mod:`manager.config`
and :mod:`manager.errors` only.
"""
