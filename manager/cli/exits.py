"""How a command fails: the ``click`` exception and its exit code.

:data:`EX_CONFIG` (78) for a configuration that cannot work (systemd:
``RestartPreventExitStatus=78``, no restart loop), :data:`EX_UNAVAILABLE` (69)
for a database that cannot be reached at start (systemd restarts later), 1
otherwise. The messages
never contain secrets (the errors are built without them).
"""

from __future__ import annotations

import click
import structlog

from manager.errors import ConfigurationError, DocagentsError, StoreUnavailable

__all__ = ["EX_CONFIG", "EX_UNAVAILABLE", "config_failure", "daemon_failure", "fail"]

log = structlog.get_logger(__name__)

#: sysexits.h: configuration error (systemd unit: RestartPreventExitStatus=78).
EX_CONFIG = 78
#: sysexits.h: a service is unavailable (the database, at start).
EX_UNAVAILABLE = 69


def fail(exc: DocagentsError) -> click.ClickException:
    """A docagents error as a command failure (exit 1)."""
    return click.ClickException(str(exc))


def config_failure(message: str) -> click.ClickException:
    """A configuration that cannot work (exit 78, EX_CONFIG)."""
    failure = click.ClickException(message)
    failure.exit_code = EX_CONFIG
    return failure


def daemon_failure(exc: DocagentsError) -> click.ClickException:
    """A start failure of ``manager``/``up``, with an exit code systemd can tell apart.

    Configuration errors exit 78 (EX_CONFIG; the unit has ``RestartPreventExitStatus=78``,
    so a wrong key is not restarted in a loop); an unreachable database exits 69.
    The messages never contain secrets (the errors are built without them).
    """
    if isinstance(exc, ConfigurationError):
        failure = click.ClickException(f"configuration error: {exc}")
        failure.exit_code = EX_CONFIG
    elif isinstance(exc, StoreUnavailable):
        failure = click.ClickException(f"database unavailable: {exc}")
        failure.exit_code = EX_UNAVAILABLE
    else:
        failure = fail(exc)
    log.debug("manager_start_failed", error=str(exc), exit_code=failure.exit_code)
    return failure
