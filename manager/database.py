"""Which database a command talks to: ``DATABASE_URL``, or the embedded Postgres."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from manager.config import Settings
from manager.embedded import EmbeddedPostgres

__all__ = ["database_conninfo"]


@contextlib.contextmanager
def database_conninfo(settings: Settings) -> Iterator[str]:
    """Yield a libpq connection string; hold the embedded server while inside."""
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    embedded = EmbeddedPostgres(settings.docagents_home)
    conninfo = embedded.start()
    try:
        yield conninfo
    finally:
        embedded.release()
