"""How much the commands log: data commands keep stderr quiet unless ``-v``.

A data command's stdout is its data, so its log on stderr says only warnings
and errors; ``docagents -v <command>`` or ``<command> -v`` brings back the log at
``LOG_LEVEL``. Every other command logs at ``LOG_LEVEL``.
"""

from __future__ import annotations

import logging

import click

from manager.config import Settings
from worker.logs import configure_logging

__all__ = ["DATA_COMMANDS", "log_level", "verbose_option"]

#: Commands that print data: their stdout is the data, and stderr stays empty
#: unless something goes wrong or ``-v`` asks for the log (at ``LOG_LEVEL``).
DATA_COMMANDS = frozenset({"stats", "agents", "psql", "migrate", "down", "managers", "token"})


def log_level(settings: Settings, command: str | None, verbose: bool) -> str:
    """The level ``command`` logs at: ``LOG_LEVEL``, or at least WARNING for a data command."""
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
