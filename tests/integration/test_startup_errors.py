"""A database that is not there stops ``docagents manager`` at once, in one line.

"Connection refused" and "unknown host" are not worth retrying within the start
(under systemd the unit's restart retries): exit 69, one line naming host, port
and database, never the password. How long it takes is measured by the
operator's clock, not asserted here: the start makes one connection attempt and
never opens the pool (whose retries took 10 s and logged four warnings).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DOCAGENTS = str(Path(sys.executable).with_name("docagents"))
SECRET = "s3cret-pw-never-shown"


@pytest.mark.parametrize(
    ("url", "named"),
    [
        (f"postgresql://u:{SECRET}@127.0.0.1:1/x", "127.0.0.1:1/x"),
        (f"postgresql://u:{SECRET}@no-such-host.invalid:5433/x", "no-such-host.invalid:5433/x"),
    ],
    ids=["refused", "unknown-host"],
)
@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_unreachable_database_exits_69_with_one_line(
    url: str, named: str, verbose: bool, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("LOG_LEVEL", "LOG_FORMAT")}
    env.update(DATABASE_URL=url, DOCAGENTS_HOME=str(tmp_path / "home"))
    if verbose:
        env["LOG_LEVEL"] = "DEBUG"
    out = subprocess.run(
        [DOCAGENTS, "manager"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 69, out.stderr
    assert SECRET not in out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out.stderr
    assert named in errors[0]
    assert errors[0].startswith("Error: database unavailable: cannot connect to the database")
    # No pool was opened: no retry warnings, before or after the line.
    assert "error connecting" not in out.stderr
    if not verbose:
        assert out.stderr == errors[0] + "\n"
