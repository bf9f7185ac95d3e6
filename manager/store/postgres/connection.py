"""Connecting to Postgres, and what a failed connection means.

The one place where psycopg's connection errors become the manager's:
:func:`check_connectable` tells a refused login or an absent server (which
retrying cannot fix: :class:`~manager.errors.ConfigurationError`, or
:class:`~manager.errors.StoreUnavailable` naming where it looked) from a server
that is only slow or starting. :func:`check_pooled` is the pool's cheap check
of an idle connection. Messages never carry the connection string (it may hold
a password): :func:`database_target` and :func:`brief` say where and what.
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict

from manager.errors import ConfigurationError, StoreUnavailable

__all__ = [
    "brief",
    "check_connectable",
    "check_pooled",
    "database_target",
    "libpq_environment",
    "refused_by_configuration",
    "unreachable",
]

#: SQLSTATEs of a connection refused for what it asked, not for the network: a role or
#: password the server rejects (invalid_authorization_specification, invalid_password)
#: or a database that does not exist (invalid_catalog_name).
_REFUSED_BY_CONFIGURATION = frozenset({"28000", "28P01", "3D000"})
_REFUSED_PHRASES = ("password authentication failed", "no pg_hba.conf entry", "does not exist")

#: libpq's words for a server that is not there at all: nothing listens on the port,
#: no such host name, no such socket. Retrying within the start cannot help (under
#: systemd, the unit's restart does the retrying).
_UNREACHABLE_PHRASES = (
    "connection refused",
    "could not translate host name",
    "name or service not known",
    "nodename nor servname",
    "temporary failure in name resolution",
    "no such file or directory",
    "no route to host",
    "network is unreachable",
)

#: The libpq environment variable of each connection parameter handed to ``psql``.
_LIBPQ_VARIABLES = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "connect_timeout": "PGCONNECT_TIMEOUT",
}


async def check_connectable(conninfo: str, *, timeout_s: float) -> None:
    """One connection attempt, so a refusal or an absent server is reported at once.

    Raises :class:`ConfigurationError` when the server rejects the credentials or the
    database name (systemd must not restart that in a loop), and
    :class:`StoreUnavailable` naming host, port and database when no server answers
    there (refused, unknown host). Any other failure (a timeout, a server starting
    up, too many connections) is left to the caller's retries.
    """
    try:
        conn = await psycopg.AsyncConnection.connect(
            conninfo, connect_timeout=max(1, round(timeout_s))
        )
    except psycopg.OperationalError as exc:
        if refused_by_configuration(exc):
            raise ConfigurationError(f"the database refused the connection: {brief(exc)}") from exc
        if unreachable(exc):
            raise StoreUnavailable(
                f"cannot connect to the database {database_target(conninfo)}: {_reason(exc)}"
            ) from exc
        return
    await conn.close()


async def check_pooled(conn: psycopg.AsyncConnection[Any]) -> None:
    """The pool's check before it hands out ``conn``: raise if it is unusable.

    An idle connection has nothing to read unless the server said something on
    its own: a termination notice, an EOF or a reset when the server (or its
    backend) went away, or a notification. Only then is the round-trip check
    worth paying; it raises on a dead connection and consumes anything else. A
    quiet socket is handed out as it is, so a burst of calls costs no extra
    round trips.
    """
    if conn.closed or conn.pgconn.status != psycopg.pq.ConnStatus.OK:
        raise psycopg.OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN | select.POLLPRI)
    if poller.poll(0):
        await psycopg_pool.AsyncConnectionPool.check_connection(conn)


def refused_by_configuration(exc: psycopg.OperationalError) -> bool:
    """Whether a failed connection attempt is the settings' fault (retrying cannot help)."""
    if exc.sqlstate in _REFUSED_BY_CONFIGURATION:
        return True
    text = str(exc)
    return any(phrase in text for phrase in _REFUSED_PHRASES)


def unreachable(exc: psycopg.OperationalError) -> bool:
    """Whether a failed attempt found no server at all (rather than a busy or starting one)."""
    text = str(exc).lower()
    return any(phrase in text for phrase in _UNREACHABLE_PHRASES)


def database_target(conninfo: str) -> str:
    """``host:port/dbname`` of a connection string (never its password or user)."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "(unparsable DATABASE_URL)"
    hosts = str(params.get("host") or params.get("hostaddr") or "localhost").split(",")
    ports = str(params.get("port") or "5432").split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    where = ",".join(
        f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in zip(hosts, ports, strict=False)
    )
    database = params.get("dbname") or params.get("user") or ""
    return f"{where}/{database}" if database else where


def libpq_environment(conninfo: str) -> dict[str, str]:
    """libpq environment variables (PGHOST, PGPASSWORD, ...) for a connection string.

    Used to hand a database to ``psql`` without putting a password on its
    command line, where ``ps`` would show it.
    """
    return {
        _LIBPQ_VARIABLES[key]: str(value)
        for key, value in conninfo_to_dict(conninfo).items()
        if key in _LIBPQ_VARIABLES and value is not None
    }


def brief(exc: psycopg.Error) -> str:
    """The server's message (or the first line of libpq's), never the conninfo."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc)
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__


def _reason(exc: psycopg.Error) -> str:
    """libpq's reason after its "connection to server ... failed:" prefix."""
    text = brief(exc)
    return text.rsplit(" failed: ", 1)[-1].strip() or text
