"""The workers' use of ``multiprocessing`` internals is pinned to verified interpreters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from manager.errors import ConfigurationError
from manager.workers.forkserver import VERIFIED_PYTHONS, check_python

ROOT = Path(__file__).resolve().parents[2]


def test_the_running_interpreter_is_verified() -> None:
    running = (sys.implementation.name, sys.version_info.major, sys.version_info.minor)
    assert running in VERIFIED_PYTHONS
    check_python(sys.implementation.name, (sys.version_info.major, sys.version_info.minor))


@pytest.mark.parametrize(
    ("implementation", "version"),
    [("cpython", (3, 14)), ("cpython", (3, 10)), ("cpython", (4, 0)), ("pypy", (3, 11))],
)
def test_an_unverified_interpreter_is_refused_with_one_clear_message(
    implementation: str, version: tuple[int, int]
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        check_python(implementation, version)
    message = str(refused.value)
    assert f"{implementation} {version[0]}.{version[1]}" in message
    assert "CPython 3.11, 3.12, 3.13" in message


def test_the_guard_runs_when_the_module_is_imported() -> None:
    """A fresh interpreter that claims to be 3.14 cannot import the module at all."""
    script = (
        "import sys, collections\n"
        "V = collections.namedtuple('V', 'major minor micro releaselevel serial')\n"
        "sys.version_info = V(3, 14, 0, 'final', 0)\n"
        "import manager.workers.forkserver\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "ConfigurationError" in done.stderr
    assert "this is cpython 3.14" in done.stderr
