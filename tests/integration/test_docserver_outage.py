"""The database goes away while people leave: rows are buffered and arrive, in order, later.

"Away" is real for the docserver: its database stops accepting connections
(``ALLOW_CONNECTIONS false``) and its open connection is terminated, so every
insert and reconnect fails until the database is allowed back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import anyio
import psycopg
import pytest
from docserver_support import YClient, running_docserver, wait_for_rows
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def set_database_reachable(admin_url: str, database_url: str, reachable: bool) -> None:
    name = conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.Literal(reachable)
            )
        )
        if not reachable:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


async def test_idle_written_after_database_comes_back_in_order(
    tmp_path: Path, database_url: str, pg_admin_url: str
) -> None:
    async with running_docserver(tmp_path, database_url) as server:
        async with YClient(server.ws_url("outage")).connected():
            await wait_for_rows(database_url, "outage", [("active", 1)])
            set_database_reachable(pg_admin_url, database_url, False)
        try:
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(database_url, connect_timeout=2).close()
            # after the grace the 'idle' cannot be written; another document comes and goes
            async with YClient(server.ws_url("second")).connected():
                pass
            with anyio.fail_after(15):
                while '"activity_database_unreachable"' not in server.log():  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            await anyio.sleep(1)  # well past the grace: the rows wait in the buffer
            down_until = datetime.now(UTC)
        finally:
            set_database_reachable(pg_admin_url, database_url, True)

        await wait_for_rows(database_url, "outage", [("active", 1), ("idle", 0)], within=30)
        await wait_for_rows(database_url, "second", [("active", 1), ("idle", 0)], within=30)
        with psycopg.connect(database_url, autocommit=True) as conn:
            rows = conn.execute(
                'SELECT document_id, event_type, "timestamp" FROM document_activity ORDER BY id'
            ).fetchall()
        for document_id in ("outage", "second"):
            assert [e for d, e, _ in rows if d == document_id] == ["active", "idle"]
        # ids follow the order in which things happened, across documents too
        # each row carries the time its event happened, not when it was written
        assert all(ts < down_until for _, _, ts in rows)
        assert [ts for _, _, ts in rows] == sorted(ts for _, _, ts in rows)
        assert '"activity_database_back"' in server.log()
