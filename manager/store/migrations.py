"""Apply ``migrations/NNNN_name.sql`` in order, each exactly once.

Each file runs in its own transaction and is recorded in ``schema_migrations``;
a session advisory lock makes concurrent ``docagents migrate`` runs safe (the
second waits, then finds nothing left to do).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
import structlog

from manager.errors import ConfigurationError, MigrationError, StoreUnavailable
from manager.store.postgres import refused_by_configuration

__all__ = ["Migration", "apply_migrations", "discover_migrations"]

log = structlog.get_logger(__name__)

#: pg_advisory_lock key: the first 8 bytes of sha256("docagents.migrate"), signed.
_LOCK_KEY = int.from_bytes(hashlib.sha256(b"docagents.migrate").digest()[:8], "big", signed=True)
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover_migrations() -> list[Migration]:
    """The migration files shipped with this package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("migrations").iterdir():
        match = _FILE_RE.match(entry.name)
        if match:
            found.append(Migration(match[1], match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return found


async def apply_migrations(conninfo: str) -> list[str]:
    """Apply what is missing; return the versions applied by this call."""
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    except psycopg.OperationalError as exc:
        if refused_by_configuration(exc):
            raise ConfigurationError(f"the database refused the connection: {exc}") from exc
        raise StoreUnavailable(f"cannot connect to the database: {exc}") from exc
    applied_now: list[str] = []
    async with conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", [_LOCK_KEY])
        try:
            await conn.execute(_CREATE_TABLE)
            cur = await conn.execute("SELECT version, checksum FROM schema_migrations")
            done = dict(await cur.fetchall())
            for migration in discover_migrations():
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        log.warning(
                            "migration_changed_after_apply",
                            version=migration.version,
                            name=migration.name,
                        )
                    continue
                try:
                    async with conn.transaction():
                        await conn.execute(migration.sql.encode())
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum) "
                            "VALUES (%s, %s, %s)",
                            [migration.version, migration.name, migration.checksum],
                        )
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {migration.version}_{migration.name} failed: {exc}"
                    ) from exc
                log.info("migration_applied", version=migration.version, name=migration.name)
                applied_now.append(migration.version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])
    return applied_now
