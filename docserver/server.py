"""Synchronous entry point used by the CLI: settings, logging, then :func:`service.run`."""

from __future__ import annotations

import sys

import anyio
import pydantic
import structlog

from docserver.service import DocserverError, run
from docserver.settings import DocserverSettings
from docserver.store import DocumentStoreError

__all__ = ["load_settings", "main", "serve"]

log = structlog.get_logger(__name__)


def load_settings() -> DocserverSettings:
    return DocserverSettings()


def serve(settings: DocserverSettings, *, database_url: str) -> None:
    """Run in the foreground until SIGINT/SIGTERM. Raises DocserverError on start failures."""
    try:
        anyio.run(_run, settings, database_url)
    except DocumentStoreError as exc:
        raise DocserverError(str(exc)) from exc


async def _run(settings: DocserverSettings, database_url: str) -> None:
    await run(settings, database_url=database_url)


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
    except DocserverError as exc:
        log.error("docserver_failed", error=str(exc))  # noqa: TRY400 (no traceback wanted)
        return 1
    return 0
