"""The ``docagents`` command.

Each subcommand loads :class:`~manager.config.Settings` (environment + ``.env``),
configures logging, and resolves the database (``DATABASE_URL`` or the embedded
Postgres under ``DOCAGENTS_HOME``). Secrets are never printed.
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
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import anyio  # noqa: E402
import click  # noqa: E402
import pydantic  # noqa: E402
import structlog  # noqa: E402

from manager.config import Settings  # noqa: E402
from manager.database import database_conninfo  # noqa: E402
from manager.embedded import EmbeddedPostgres  # noqa: E402
from manager.errors import DocagentsError  # noqa: E402
from worker.logs import configure_logging  # noqa: E402

log = structlog.get_logger(__name__)


def load_settings() -> Settings:
    try:
        return Settings()
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        )
        failure = click.ClickException(f"invalid configuration: {problems}")
        failure.exit_code = 78  # EX_CONFIG: under systemd, RestartPreventExitStatus=78
        raise failure from exc


#: Commands that print data: their stdout is the data, and stderr stays empty
#: unless something goes wrong or ``-v`` asks for the log (at ``LOG_LEVEL``).
DATA_COMMANDS = frozenset({"stats", "agents", "psql", "migrate", "down", "managers", "token"})


def _log_level(settings: Settings, command: str | None, verbose: bool) -> str:
    if verbose or command not in DATA_COMMANDS:
        return settings.log_level
    configured = logging.getLevelName(settings.log_level.upper())
    quiet = max(logging.WARNING, configured if isinstance(configured, int) else 0)
    return logging.getLevelName(quiet)


def _verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``-v`` after a data command: its log on stderr at ``LOG_LEVEL``."""
    if value and isinstance(ctx.find_object(Settings), Settings):
        settings = ctx.find_object(Settings)
        assert settings is not None
        configure_logging(settings.log_format, settings.log_level)


verbose_option = click.option(
    "-v",
    "--verbose",
    is_flag=True,
    expose_value=False,
    callback=_verbose,
    help="Also log to stderr (at LOG_LEVEL).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="docagents", prog_name="docagents")
@click.option("-v", "--verbose", is_flag=True, help="Data commands also log to stderr.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """docagents: one AI agent per live collaborative document."""
    settings = load_settings()
    level = _log_level(settings, ctx.invoked_subcommand, verbose)
    configure_logging(settings.log_format, level)
    ctx.obj = settings


def _fail(exc: DocagentsError) -> click.ClickException:
    return click.ClickException(str(exc))


def _config_failure(message: str) -> click.ClickException:
    failure = click.ClickException(message)
    failure.exit_code = 78  # EX_CONFIG
    return failure


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
        raise _fail(exc) from exc
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
        raise _fail(exc) from exc
    sys.exit(completed)


def _run_psql(executable: str, conninfo: str, args: tuple[str, ...]) -> int:
    import subprocess

    from manager.store.postgres import libpq_environment

    # The connection goes through the environment, not argv (ps shows argv).
    env = {**os.environ, **libpq_environment(conninfo)}
    return subprocess.call([executable, *args], env=env)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--watch", is_flag=True, help="Refresh the box every --interval seconds.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes.")
@verbose_option
@click.pass_obj
def stats(settings: Settings, as_json: bool, watch: bool, interval: float) -> None:
    """Print the system-wide agent figures (get_agent_system_stats()) and the
    extraction figures (get_extraction_stats())."""
    from manager.ops.stats import render_stats_box, stats_document
    from manager.store.postgres import PostgresStore

    async def fetch(conninfo: str):  # type: ignore[no-untyped-def]
        store = await PostgresStore.connect(conninfo)
        try:
            return await store.system_stats(), await store.extraction_stats()
        finally:
            await store.aclose()

    try:
        with database_conninfo(settings) as conninfo:
            while True:
                figures, extraction = anyio.run(fetch, conninfo)
                if as_json:
                    click.echo(json.dumps(stats_document(figures, extraction=extraction)))
                else:
                    if watch:
                        click.echo("\033[2J\033[H", nl=False)
                    click.echo(render_stats_box(figures, extraction=extraction))
                if not watch:
                    return
                time.sleep(interval)
    except DocagentsError as exc:
        raise _fail(exc) from exc
    except KeyboardInterrupt:
        return


def _format_uptime(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the agents as JSON lines.")
@verbose_option
@click.pass_obj
def agents(settings: Settings, as_json: bool) -> None:
    """List live agents: document, status, pid, uptime, memory, cpu, LLM calls, marks,
    sentences pending and given up (extraction), manager."""
    from manager.store.inspection import fetch_live_agents

    try:
        with database_conninfo(settings) as conninfo:
            rows = anyio.run(fetch_live_agents, conninfo)
    except DocagentsError as exc:
        raise _fail(exc) from exc
    if as_json:
        for agent in rows:
            record = {
                **{k: getattr(agent, k) for k in agent.__slots__},  # type: ignore[attr-defined]
                "connected_at": agent.connected_at.isoformat(),
                "uptime": agent.uptime.total_seconds(),
            }
            click.echo(json.dumps(record))
        return
    header = (
        "DOCUMENT",
        "STATUS",
        "PID",
        "UPTIME",
        "PSS MiB",
        "CPU %",
        "LLM",
        "MARKS",
        "PENDING",
        "FAILED",
        "MANAGER",
    )
    table = [header]
    for agent in rows:
        table.append(
            (
                agent.document_id if len(agent.document_id) <= 40 else agent.document_id[:39] + "…",
                agent.status,
                str(agent.agent_pid or "-"),
                _format_uptime(agent.uptime.total_seconds()),
                "-" if agent.pss_mb is None else f"{agent.pss_mb:.1f}",
                "-" if agent.cpu_percent is None else f"{agent.cpu_percent:.1f}",
                str(agent.llm_calls_count),
                str(agent.locations_marked_count),
                str(agent.extraction_pending),
                str(agent.extraction_failed),
                agent.manager_id,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    click.echo(f"{len(rows)} live agent(s)")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the managers as JSON lines.")
@click.pass_obj
def managers(settings: Settings, as_json: bool) -> None:
    """List the fleet's managers: id, host, pid, agents, free slots, lease age, state."""
    from manager.backends import open_backend
    from manager.fleet.report import lease_document, render_leases

    async def fetch():  # type: ignore[no-untyped-def]
        async with open_backend(settings) as backend:
            return await backend.store.list_leases()

    try:
        leases = anyio.run(fetch)
    except DocagentsError as exc:
        raise _fail(exc) from exc
    if as_json:
        for lease in leases:
            click.echo(json.dumps(lease_document(lease, renew_s=settings.lease_renew_s)))
        return
    click.echo(render_leases(leases, renew_s=settings.lease_renew_s))


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
        raise _fail(exc) from exc
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
            raise _config_failure(str(exc)) from exc
        if token is None:
            raise _config_failure(
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
        raise _fail(exc) from exc
    click.echo("embedded Postgres stopped" if stopped else "embedded Postgres was not running")


@main.command()
@click.pass_obj
def docserver(settings: Settings) -> None:
    """Run the y-websocket document server that writes document_activity (foreground)."""
    from docserver.server import load_settings as load_docserver_settings
    from docserver.server import serve as serve_docserver
    from docserver.service import DocserverConfigError, DocserverError
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
        raise _fail(exc) from exc
    except DocserverConfigError as exc:
        failure = click.ClickException(f"configuration error: {exc}")
        failure.exit_code = 78  # EX_CONFIG: systemd does not restart it
        raise failure from exc
    except DocserverError as exc:
        raise click.ClickException(str(exc)) from exc


_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_ttl(value: str) -> float:
    unit = value[-1:].lower()
    try:
        return float(value[:-1]) * _TTL_UNITS[unit] if unit in _TTL_UNITS else float(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: use seconds or 30m, 1h, 2d") from exc


@main.command()
@click.option("--sub", "subject", required=True, help="The token's subject (a user id).")
@click.option(
    "--doc", "documents", multiple=True, required=True, help="Document id or pattern (demo-*)."
)
@click.option("--ttl", default="1h", show_default=True, help="Lifetime: seconds, or 30m, 1h, 2d.")
@click.option("--read-only", is_flag=True, help="Grant read-only access (docs_ro claim).")
def token(subject: str, documents: tuple[str, ...], ttl: str, read_only: bool) -> None:
    """Mint a docserver JWT (HS256, DOCSERVER_JWT_SECRET or SUPABASE_JWT_SECRET)."""
    from docserver.auth import mint_token
    from docserver.server import load_settings as load_docserver_settings

    docserver_settings = load_docserver_settings()
    secret = docserver_settings.jwt_secret
    if secret is None:
        failure = click.ClickException("set DOCSERVER_JWT_SECRET (or SUPABASE_JWT_SECRET)")
        failure.exit_code = 78
        raise failure
    click.echo(
        mint_token(
            secret=secret.get_secret_value(),
            subject=subject,
            documents=list(documents),
            read_only=read_only,
            ttl_s=_parse_ttl(ttl),
            audience=docserver_settings.docserver_jwt_audience,
            issuer=docserver_settings.docserver_jwt_issuer,
            now=time.time(),
        )
    )


@main.command(name="manager")
@click.pass_obj
def manager_command(settings: Settings) -> None:
    """Run the manager daemon in the foreground (run `docagents migrate` first)."""
    try:
        _check_database_first(settings)
        from manager.cli.up import run_manager_foreground

        code = run_manager_foreground(settings)
    except DocagentsError as exc:
        raise _daemon_failure(exc) from exc
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
        raise _daemon_failure(exc) from exc
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


def _daemon_failure(exc: DocagentsError) -> click.ClickException:
    """A start failure of ``manager``/``up``, with an exit code systemd can tell apart.

    Configuration errors exit 78 (EX_CONFIG; the unit has ``RestartPreventExitStatus=78``,
    so a wrong key is not restarted in a loop); an unreachable database exits 69.
    The messages never contain secrets (the errors are built without them).
    """
    from manager.cli.up import EX_CONFIG, EX_UNAVAILABLE
    from manager.errors import ConfigurationError, StoreUnavailable

    if isinstance(exc, ConfigurationError):
        failure = click.ClickException(f"configuration error: {exc}")
        failure.exit_code = EX_CONFIG
    elif isinstance(exc, StoreUnavailable):
        failure = click.ClickException(f"database unavailable: {exc}")
        failure.exit_code = EX_UNAVAILABLE
    else:
        failure = _fail(exc)
    log.debug("manager_start_failed", error=str(exc), exit_code=failure.exit_code)
    return failure


if __name__ == "__main__":
    main()
