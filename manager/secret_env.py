"""Keeping secrets out of ``/proc/<pid>/environ`` (standard library only; runs first).

``os.environ`` can be scrubbed, but the kernel keeps showing a process's *initial*
environment in ``/proc/<pid>/environ`` to anyone who may read it. So a docagents
command started with secrets in its environment (:data:`HIDDEN`) re-executes
itself at once with an environment without them, handing the values over
through an inherited pipe (``DOCAGENTS_SECRETS_FD``); the new process puts them
back into ``os.environ`` (which changes no ``/proc`` view). ``docagents up``
hands the docserver its secrets the same way (:func:`spawn_env`).

Secrets may also come from files, as systemd's ``LoadCredential=`` provides
them: ``$CREDENTIALS_DIRECTORY/<NAME>`` (or the lower-case name), e.g.
``LoadCredential=DATABASE_URL:/etc/docagents/database_url``. A variable already
set wins over a file.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path, PurePath

__all__ = [
    "HANDOFF_VAR",
    "HIDDEN",
    "hide_secrets",
    "is_docagents_command",
    "load_credentials_directory",
    "spawn_env",
]

#: Never left in a docagents process's initial environment.
HIDDEN = (
    "DATABASE_URL",
    "PGPASSWORD",
    "SUPABASE_SERVICE_KEY",
    "DOCSERVER_AGENT_TOKEN",
    "DOCSERVER_JWT_SECRET",
    "SUPABASE_JWT_SECRET",
)
HANDOFF_VAR = "DOCAGENTS_SECRETS_FD"


def load_credentials_directory(environ: MutableMapping[str, str]) -> list[str]:
    """Fill unset :data:`HIDDEN` names from ``$CREDENTIALS_DIRECTORY``; returns the names."""
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return []
    loaded = []
    for name in HIDDEN:
        if name in environ:
            continue
        for candidate in (Path(directory) / name, Path(directory) / name.lower()):
            try:
                value = candidate.read_text().strip()
            except OSError:
                continue
            if value:
                environ[name] = value
                loaded.append(name)
            break
    return loaded


def _pipe_with(secrets: Mapping[str, str]) -> int:
    """A readable, inheritable pipe end that yields ``secrets`` as JSON."""
    payload = json.dumps(dict(secrets)).encode()
    read_end, write_end = os.pipe()
    try:
        if len(payload) > 60_000:
            raise ValueError("secrets too large for a pipe hand-over")
        os.write(write_end, payload)
    finally:
        os.close(write_end)
    os.set_inheritable(read_end, True)
    return read_end


def spawn_env(environ: Mapping[str, str], secrets: Mapping[str, str]) -> tuple[dict[str, str], int]:
    """An environment for a docagents child without secrets, and the fd carrying them.

    Pass the fd in ``pass_fds`` and close it in the parent after the child started.
    """
    env = {k: v for k, v in environ.items() if k not in HIDDEN and k != HANDOFF_VAR}
    read_end = _pipe_with({k: v for k, v in secrets.items() if v})
    env[HANDOFF_VAR] = str(read_end)
    return env, read_end


def _receive(fd_text: str) -> dict[str, str]:
    try:
        with os.fdopen(int(fd_text), "rb") as pipe:
            received = json.loads(pipe.read() or b"{}")
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in received.items()} if isinstance(received, dict) else {}


def is_docagents_command(program: str) -> bool:
    """Whether ``argv[0]`` is a docagents command: the console script, or
    ``manager/cli/__main__.py`` (what ``python -m manager.cli`` puts there)."""
    path = PurePath(program)
    return path.name == "docagents" or path.parts[-3:] == ("manager", "cli", "__main__.py")


def hide_secrets(argv: Sequence[str]) -> None:
    """In a docagents command: secrets out of the initial environment (may re-exec)."""
    if len(argv) < 1 or not is_docagents_command(argv[0]):
        return
    handed = os.environ.pop(HANDOFF_VAR, None)
    if handed is not None:
        for name, value in _receive(handed).items():
            os.environ.setdefault(name, value)
        load_credentials_directory(os.environ)
        return
    secrets = {name: os.environ[name] for name in HIDDEN if name in os.environ}
    if not secrets:
        load_credentials_directory(os.environ)
        return
    env, read_end = spawn_env(os.environ, secrets)
    del read_end  # inherited across exec by its number in DOCAGENTS_SECRETS_FD
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)  # noqa: S606 (ourselves)
