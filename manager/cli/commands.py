"""The ``docagents`` command: the group, and the commands that run or change things.

``migrate``, ``psql``, ``drain``, ``worker``, ``down``, ``docserver``, ``manager``
and ``up`` live here; the commands that print data (``stats``, ``agents``,
``managers``, ``token``) live in :mod:`manager.cli.inspect` and are added to the
group below. The group loads :class:`~manager.config.Settings` (environment +
``.env``) and configures logging (:mod:`manager.cli.verbosity`); each command
resolves the database (``DATABASE_URL`` or the embedded Postgres under
``DOCAGENTS_HOME``) as it needs. Secrets are never printed.

This module is the console script's entry (``manager.cli.commands:main``), so
its first lines run before anything heavy is imported: the secrets leave the
process's initial environment, and ``manager``/``up`` start the worker template
(:func:`manager.workers.forkserver.start_early`) so that it imports its modules
while this process imports its own.
"""

from __future__ import annotations

import sys

from manager.secret_env import hide_secrets
from manager.workers.forkserver import start_early

# Secrets leave this process's initial environment (/proc/<pid>/environ): may re-exec.
hide_secrets(sys.argv)
# `manager` and `up`: the worker template imports beside the imports below.
start_early(sys.argv)

import functools  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402

import anyio  # noqa: E402
import click  # noqa: E402
import pydantic  # noqa: E402

from manager.cli import inspect  # noqa: E402
from manager.cli.exits import EX_CONFIG, config_failure, daemon_failure, fail  # noqa: E402
from manager.cli.verbosity import log_level, verbose_option  # noqa: E402
from manager.config import Settings  # noqa: E402
from manager.database import database_conninfo  # noqa: E402
from manager.embedded import EmbeddedPostgres  # noqa: E402
from manager.errors import DocagentsError  # noqa: E402
from manager.ops.limits import raise_open_files_limit  # noqa: E402
from worker.logs import configure_logging  # noqa: E402


def load_settings() -> Settings:
    try:
        return Settings()
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        )
        failure = click.ClickException(f"invalid configuration: {problems}")
        failure.exit_code = EX_CONFIG  # under systemd: RestartPreventExitStatus=78
        raise failure from exc


#: The commands that hold a descriptor per agent or per connection.
_LONG_RUNNING = frozenset({"up", "manager", "docserver"})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="docagents", prog_name="docagents")
@click.option("-v", "--verbose", is_flag=True, help="Data commands also log to stderr.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """docagents: one AI agent per live collaborative document."""
    settings = load_settings()
    level = log_level(settings, ctx.invoked_subcommand, verbose)
    configure_logging(settings.log_format, level)
    if ctx.invoked_subcommand in _LONG_RUNNING:
        raise_open_files_limit()
    ctx.obj = settings


@main.command()
@verbose_option
@click.pass_obj
def migrate(settings: Settings) -> None:
    """Apply the SQL migrations that are missing (safe to run concurrently)."""
    from manager.store.migrations import apply_migrations

    try:
        with database_conninfo(settings) as conninfo:
            applied = anyio.run(apply_migrations, conninfo)
    except DocagentsError as exc:
        raise fail(exc) from exc
    if applied:
        click.echo(f"applied migrations: {', '.join(applied)}")
    else:
        click.echo("database is up to date")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def psql(settings: Settings, psql_args: tuple[str, ...]) -> None:
    """Open psql on the configured database."""
    executable = shutil.which("psql")
    if executable is None and settings.database_url is None:
        from manager.embedded import bundled_psql

        executable = bundled_psql()
    if executable is None:
        raise click.ClickException(
            "psql is not installed: install the PostgreSQL client (e.g. apt-get install "
            "postgresql-client) or use any SQL client with your DATABASE_URL"
        )
    try:
        with database_conninfo(settings) as conninfo:
            completed = _run_psql(executable, conninfo, psql_args)
    except DocagentsError as exc:
        raise fail(exc) from exc
    sys.exit(completed)


def _run_psql(executable: str, conninfo: str, args: tuple[str, ...]) -> int:
    import subprocess

    from manager.store.postgres import libpq_environment

    # The connection goes through the environment, not argv (ps shows argv).
    env = {**os.environ, **libpq_environment(conninfo)}
    return subprocess.call([executable, *args], env=env)


@main.command()
@click.argument("manager_id")
@click.pass_obj
def drain(settings: Settings, manager_id: str) -> None:
    """Drain MANAGER_ID: it takes no new documents and detaches its agents for the others."""
    from manager.backends import open_backend

    async def ask() -> bool:
        async with open_backend(settings) as backend:
            return await backend.store.drain_manager(manager_id)

    try:
        drained = anyio.run(ask)
    except DocagentsError as exc:
        raise fail(exc) from exc
    if not drained:
        raise click.ClickException(f"no live manager {manager_id!r} (see `docagents managers`)")
    click.echo(f"{manager_id}: draining (its agents move to the other managers)")


@main.command()
@click.argument("document_id")
@click.pass_obj
def worker(settings: Settings, document_id: str) -> None:
    """Run one agent on DOCUMENT_ID in the foreground (debugging; no manager, no database).

    It connects as an agent, never as a person: with DOCSERVER_AGENT_TOKEN, or the
    token `docagents up` keeps under DOCAGENTS_HOME.
    """
    from manager.cli.agent_token import agent_token_path, load_agent_token
    from worker.main import run_standalone

    if settings.docserver_agent_token is None:
        try:
            token = load_agent_token(settings.docagents_home)
        except DocagentsError as exc:
            raise config_failure(str(exc)) from exc
        if token is None:
            raise config_failure(
                "no agent credential: set DOCSERVER_AGENT_TOKEN (the docserver's), or run "
                f"`docagents up` once so {agent_token_path(settings.docagents_home)} exists; "
                "without one this worker would join as a person"
            )
        settings = settings.model_copy(update={"docserver_agent_token": token})
    anyio.run(run_standalone, settings.worker_settings(), document_id, backend="asyncio")


@main.command()
@verbose_option
@click.pass_obj
def down(settings: Settings) -> None:
    """Stop the embedded Postgres under DOCAGENTS_HOME, whoever holds it."""
    try:
        stopped = EmbeddedPostgres(settings.docagents_home).stop_now()
    except DocagentsError as exc:
        raise fail(exc) from exc
    click.echo("embedded Postgres stopped" if stopped else "embedded Postgres was not running")


@main.command()
@click.pass_obj
def docserver(settings: Settings) -> None:
    """Run the y-websocket document server that writes document_activity (foreground)."""
    from docserver.errors import DocserverConfigError, DocserverError
    from docserver.server import load_settings as load_docserver_settings
    from docserver.server import serve as serve_docserver
    from manager.ops.proctitle import set_title

    set_title("docagents docserver")

    try:
        docserver_settings = load_docserver_settings()
    except pydantic.ValidationError as exc:
        raise click.ClickException(f"invalid docserver configuration: {exc}") from exc
    from manager.backends import select_backend

    try:
        if select_backend(settings) == "supabase":
            serve_docserver(
                docserver_settings,
                supabase_url=settings.supabase_url,
                supabase_key=settings.supabase_service_key,
            )
        else:
            with database_conninfo(settings) as conninfo:
                serve_docserver(docserver_settings, database_url=conninfo)
    except DocagentsError as exc:
        raise fail(exc) from exc
    except DocserverConfigError as exc:
        failure = click.ClickException(f"configuration error: {exc}")
        failure.exit_code = EX_CONFIG  # systemd does not restart it
        raise failure from exc
    except DocserverError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command(name="manager")
@click.pass_obj
def manager_command(settings: Settings) -> None:
    """Run the manager daemon in the foreground (run `docagents migrate` first)."""
    try:
        _check_database_first(settings)
        from manager.cli.up import run_manager_foreground

        code = run_manager_foreground(settings)
    except DocagentsError as exc:
        raise daemon_failure(exc) from exc
    sys.exit(code)


@main.command()
@click.pass_obj
def up(settings: Settings) -> None:
    """Run everything in the foreground: database, migrations, docserver, manager."""
    try:
        _check_database_first(settings)
        from manager.cli.up import run_up

        code = run_up(settings)
    except DocagentsError as exc:
        raise daemon_failure(exc) from exc
    sys.exit(code)


def _check_database_first(settings: Settings) -> None:
    """With ``DATABASE_URL``: one connection attempt before the daemon's modules load.

    A refused connection, an unknown host or refused credentials then stop the
    command in the time it takes to import the database driver, not the whole
    daemon (about a second less on a busy host).
    """
    if settings.database_url is None:
        return
    from manager.store.postgres import check_connectable

    anyio.run(
        functools.partial(
            check_connectable, settings.database_url.get_secret_value(), timeout_s=10.0
        )
    )


for command in (inspect.stats, inspect.agents, inspect.managers, inspect.token):
    main.add_command(command)


if __name__ == "__main__":
    main()
