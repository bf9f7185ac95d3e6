"""structlog configuration shared by the worker and the manager processes.

``LOG_FORMAT=console`` renders human-readable lines, ``json`` one JSON object per
line (for journald / log shippers). Standard-library logging (uvicorn, psycopg,
openai) goes through the same renderer. Call :func:`configure_logging` once per
process, including in each forked worker.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal

import structlog

__all__ = ["configure_logging", "log_format_from_environment"]


def log_format_from_environment() -> Literal["console", "json"]:
    """``LOG_FORMAT`` as the settings would read it, for processes without settings yet."""
    return "json" if os.environ.get("LOG_FORMAT", "").strip().lower() == "json" else "console"


def configure_logging(
    log_format: Literal["console", "json"] = "console", level: str = "INFO"
) -> None:
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        # filter_by_level first: a dropped event costs a level check, not the whole chain.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processor=renderer)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "openai", "websockets", "uvicorn.access", "pgserver"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
