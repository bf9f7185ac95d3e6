"""Shared fixtures: a real Postgres for the whole session, one database per test.

The session starts one embedded Postgres (the same code path as ``docagents up``)
under a temporary ``DOCAGENTS_HOME``, builds a template database by running the
migrations, and gives each test that asks for ``database_url`` its own database
cloned from the template (``CREATE DATABASE ... TEMPLATE``: milliseconds).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import anyio
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from manager.embedded import EmbeddedPostgres
from manager.store.migrations import apply_migrations

TEMPLATE_DB = "docagents_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def pg_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pg", numbered=True)


@pytest.fixture(scope="session")
def pg_admin_url(pg_home: Path) -> Iterator[str]:
    """Connection string of the session's embedded Postgres (database ``postgres``)."""
    embedded = EmbeddedPostgres(pg_home)
    url = embedded.start()
    try:
        yield url
    finally:
        embedded.release()


def with_dbname(conninfo: str, dbname: str) -> str:
    params = conninfo_to_dict(conninfo)
    params["dbname"] = dbname
    return make_conninfo(**params)


@pytest.fixture(scope="session")
def template_url(pg_admin_url: str) -> str:
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TEMPLATE_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DB)))
    url = with_dbname(pg_admin_url, TEMPLATE_DB)
    anyio.run(apply_migrations, url)
    return url


def create_database(admin_url: str, *, template: str | None) -> str:
    name = f"test_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if template:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def database_url(pg_admin_url: str, template_url: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = create_database(pg_admin_url, template=TEMPLATE_DB)
    try:
        yield with_dbname(pg_admin_url, name)
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture
def empty_database_url(pg_admin_url: str, template_url: str) -> Iterator[str]:
    """A fresh database with no migrations applied."""
    name = create_database(pg_admin_url, template=None)
    try:
        yield with_dbname(pg_admin_url, name)
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to this test's database."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn
