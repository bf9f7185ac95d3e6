"""The manager's exception tree, and how its messages keep secrets out.

::

    DocagentsError                 base of everything the manager raises on purpose
     ├── ConfigurationError        settings that cannot work (missing binaries, bad URL,
     │    │                        a key or password the server refuses)
     │    └── ManagerAlreadyRunning   another live process holds this MANAGER_ID's lease
     │                                (manager.fleet.leases)
     ├── EmbeddedPostgresError     the embedded Postgres could not be started or stopped
     ├── MigrationError            a migration file failed; nothing of it was applied
     └── StoreError                the database refused or could not be reached
          ├── StoreUnavailable     transient: connection lost, retry later
          └── SchemaMissing        a docagents table or function is not there (run migrate)

Foreign exceptions (psycopg, httpx, postgrest, supabase, websockets, OS,
subprocess) are translated where they are caught, with ``raise ... from``: the
store backends translate every database and HTTP error into :class:`StoreError`,
:class:`StoreUnavailable` or :class:`ConfigurationError`, and the activity
sources log theirs and reconnect. A message never carries a password or a key:
:func:`redact` takes one out of a foreign error's text before it is used.
"""

from __future__ import annotations

from typing import Protocol

__all__ = [
    "ConfigurationError",
    "DocagentsError",
    "EmbeddedPostgresError",
    "MigrationError",
    "SchemaMissing",
    "StoreError",
    "StoreUnavailable",
    "redact",
]


class DocagentsError(Exception):
    """Base class of docagents errors."""


class ConfigurationError(DocagentsError):
    """The configuration cannot work; the message says what to change."""


class EmbeddedPostgresError(DocagentsError):
    """The embedded Postgres could not be started, attached to, or stopped."""


class MigrationError(DocagentsError):
    """A migration failed; its transaction was rolled back."""


class StoreError(DocagentsError):
    """The database refused a statement or could not be reached."""


class StoreUnavailable(StoreError):
    """The database is unreachable right now; the caller may buffer and retry."""


class SchemaMissing(StoreError):
    """A table or function of the docagents schema does not exist: the database was
    never migrated (``docagents migrate``), or is another application's."""


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


def redact(text: str, secret: _Secret | str | None) -> str:
    """``text`` with every occurrence of ``secret`` (a ``SecretStr`` or its value)
    replaced by ``<redacted>``.

    Standard library only: this module is imported before the forkserver starts.
    """
    value = secret if secret is None or isinstance(secret, str) else secret.get_secret_value()
    return text.replace(value, "<redacted>") if value else text
