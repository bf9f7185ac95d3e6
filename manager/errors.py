"""The manager's exception tree.

::

    DocagentsError                 base of everything the manager raises on purpose
     ├── ConfigurationError        settings that cannot work (missing binaries, bad URL)
     ├── EmbeddedPostgresError     the embedded Postgres could not be started or stopped
     ├── MigrationError            a migration file failed; nothing of it was applied
     └── StoreError                the database refused or could not be reached
          └── StoreUnavailable     transient: connection lost, retry later

Foreign exceptions (psycopg, OS, subprocess) are translated where they are
caught, with ``raise ... from``.
"""

from __future__ import annotations


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
