"""The commands that print data: ``stats``, ``agents``, ``managers``, ``token``.

Their stdout is the data (a box, a table, JSON lines, a token); see
:data:`manager.cli.verbosity.DATA_COMMANDS` for what they log.
"""

from __future__ import annotations

import json
import time

import anyio
import click

from manager.cli.exits import EX_CONFIG, fail
from manager.cli.verbosity import verbose_option
from manager.config import Settings
from manager.database import database_conninfo
from manager.errors import DocagentsError

__all__ = ["agents", "managers", "stats", "token"]


@click.command()
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
        raise fail(exc) from exc
    except KeyboardInterrupt:
        return


def _format_uptime(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


@click.command()
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
        raise fail(exc) from exc
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


@click.command()
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
        raise fail(exc) from exc
    if as_json:
        for lease in leases:
            click.echo(json.dumps(lease_document(lease, renew_s=settings.lease_renew_s)))
        return
    click.echo(render_leases(leases, renew_s=settings.lease_renew_s))


_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_ttl(value: str) -> float:
    unit = value[-1:].lower()
    try:
        return float(value[:-1]) * _TTL_UNITS[unit] if unit in _TTL_UNITS else float(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: use seconds or 30m, 1h, 2d") from exc


@click.command()
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
        failure.exit_code = EX_CONFIG
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
