"""All database access of the manager.

Only this package (and the listener it owns) imports psycopg or supabase. The
supervisor talks to a :class:`~manager.store.base.Store`; backends implement it.
"""
