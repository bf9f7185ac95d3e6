"""The agent token of the embedded stack, kept in ``DOCAGENTS_HOME/agent-token``.

``docagents up`` without ``DOCSERVER_AGENT_TOKEN`` generates a token once and
keeps it in this file (mode 0600), so the docserver, the manager and a
``docagents worker DOC`` started by hand on the same home all agree: the
debugging worker then connects as an agent (never counted as a person) without
anyone copying the token around. An explicit ``DOCSERVER_AGENT_TOKEN`` always
wins and is never written to disk.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from manager.errors import ConfigurationError

__all__ = ["agent_token_path", "load_agent_token", "load_or_create_agent_token"]

_FILE_NAME = "agent-token"


def agent_token_path(home: Path) -> Path:
    return home / _FILE_NAME


def load_agent_token(home: Path) -> SecretStr | None:
    """The token ``docagents up`` keeps under ``home``, or None."""
    try:
        text = agent_token_path(home).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {agent_token_path(home)}: {exc}") from exc
    return SecretStr(text) if text else None


def load_or_create_agent_token(home: Path) -> SecretStr:
    """The kept token, or a new one written with mode 0600 (first ``up`` on ``home``)."""
    found = load_agent_token(home)
    if found is not None:
        return found
    path = agent_token_path(home)
    token = secrets.token_urlsafe(32)
    try:
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another `up` on the same home was faster: use its token
        found = load_agent_token(home)
        if found is None:
            raise ConfigurationError(f"{path} exists but is empty") from None
        return found
    except OSError as exc:
        raise ConfigurationError(f"cannot write {path}: {exc}") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    return SecretStr(token)
