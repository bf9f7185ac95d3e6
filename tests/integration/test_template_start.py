"""manager.workers.forkserver.start_early: the template starts before the manager's imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

_PROBE = textwrap.dedent(
    """
    import json, sys
    sys.argv = json.loads(sys.argv[1])
    import multiprocessing.forkserver as fs
    from manager.workers.forkserver import start_early
    start_early(sys.argv)
    pid = fs._forkserver._forkserver_pid
    heavy = sorted(m for m in ("pydantic", "structlog", "psycopg", "anyio") if m in sys.modules)
    import os, time
    # Python starts the forkserver with vfork + exec, and returns once the child
    # let go of our memory: the kernel may not have set up the new program's
    # environment yet (its environ reads empty for a moment).
    environ, deadline = b"", time.monotonic() + 10
    while pid and not environ and time.monotonic() < deadline:
        environ = open(f"/proc/{pid}/environ", "rb").read()
        time.sleep(0 if environ else 0.005)
    print(json.dumps({
        "pid": pid,
        "heavy_modules_loaded": heavy,
        "template_has_secret": b"s3cret" in environ,
        "template_has_notify": b"NOTIFY_SOCKET" in environ,
        "template_has_other": b"KEEP_ME=1" in environ,
        "secret_back": os.environ.get("DATABASE_URL"),
    }))
    """
)


def probe(argv: list[str]) -> dict[str, object]:
    env = {
        **os.environ,
        "DATABASE_URL": "postgresql://u:s3cret@h/db",
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "KEEP_ME": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # The template's own log lines share this stdout.
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))


@pytest.mark.parametrize(
    "argv", [["/venv/bin/docagents", "manager"], ["/x/manager/cli/__main__.py", "up"]]
)
def test_manager_commands_start_the_template_first_without_secrets(argv: list[str]) -> None:
    seen = probe(argv)
    assert seen["pid"]  # the forkserver runs ...
    assert seen["heavy_modules_loaded"] == []  # ... before anything heavy was imported here
    assert seen["template_has_secret"] is False  # invariant 6
    assert seen["template_has_notify"] is False  # only the manager talks to systemd
    assert seen["template_has_other"] is True
    assert seen["secret_back"] == "postgresql://u:s3cret@h/db"  # the manager's settings need it


@pytest.mark.parametrize(
    "argv",
    [
        ["/venv/bin/docagents", "migrate"],
        ["/venv/bin/docagents"],
        ["/venv/bin/pytest", "manager"],  # another program that imports the CLI
    ],
)
def test_other_commands_and_programs_start_nothing(argv: list[str]) -> None:
    assert probe(argv)["pid"] is None
