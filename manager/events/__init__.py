"""Activity sources: where the manager hears that a document became active or idle.

A notification (NOTIFY, Supabase Realtime) is only a wake-up hint; the truth is
``document_activity`` read through the store by id cursor.

- :mod:`~manager.events.cursor`: the backend-neutral id cursor and reader every
  source shares;
- :mod:`~manager.events.listen`: the Postgres source (LISTEN on one connection);
- :mod:`~manager.events.realtime`: the Supabase source (a Realtime subscription).

The two sources do not import each other. May import :mod:`manager.store`,
:mod:`manager.errors` and :mod:`manager.config` only.
"""
