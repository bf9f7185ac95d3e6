"""Synchronous entry point used by the CLI: settings, logging, then :func:`service.run`."""

from __future__ import annotations

import functools
import sys

import anyio
import pydantic
import structlog
from pydantic import SecretStr

from docserver.activity import ActivitySink
from docserver.errors import DocserverConfigError, DocserverError
from docserver.service import run
from docserver.settings import DocserverSettings

__all__ = ["load_settings", "main", "serve"]

log = structlog.get_logger(__name__)


def load_settings() -> DocserverSettings:
    return DocserverSettings()


def serve(
    settings: DocserverSettings,
    *,
    database_url: str | None = None,
    supabase_url: str | None = None,
    supabase_key: SecretStr | None = None,
) -> None:
    """Run in the foreground until SIGINT/SIGTERM.

    Activity rows go to Postgres (``database_url``), or through Supabase's REST API
    when ``supabase_url`` and ``supabase_key`` are given instead. Raises
    :class:`~docserver.errors.DocserverConfigError` when the configuration cannot
    work and another :class:`~docserver.errors.DocserverError` when the docserver
    cannot start or has to stop.
    """
    writer: ActivitySink | None = None
    if database_url is None:
        if not (supabase_url and supabase_key):
            raise DocserverConfigError("set DATABASE_URL, or SUPABASE_URL and SUPABASE_SERVICE_KEY")
        # imported here: a Postgres docserver never loads the Supabase client
        from docserver.activity.supabase import SupabaseActivityWriter

        writer = SupabaseActivityWriter(
            supabase_url, supabase_key, max_buffer=settings.docserver_activity_buffer
        )
    anyio.run(
        functools.partial(
            run,
            settings,
            database_url=database_url,
            writer=writer,
            supabase_url=supabase_url,
            supabase_key=supabase_key,
        )
    )


def main(*, database_url: str) -> int:
    from docserver.logs import configure_logging

    try:
        settings = load_settings()
    except pydantic.ValidationError as exc:
        sys.stderr.write(f"invalid configuration: {exc}\n")
        return 2
    configure_logging(settings.log_format, settings.log_level)
    if not database_url:
        log.error("database_url_missing", hint="set DATABASE_URL or use `docagents docserver`")
        return 2
    try:
        serve(settings, database_url=database_url)
    except DocserverConfigError as exc:
        log.error("docserver_misconfigured", error=str(exc))  # noqa: TRY400
        return 78
    except DocserverError as exc:
        log.error("docserver_failed", error=str(exc))  # noqa: TRY400 (no traceback wanted)
        return 1
    return 0
