"""Which argv[0] is a docagents command: decided once, for the secrets scrub and the
early start of the worker template."""

from __future__ import annotations

import pytest

from manager.secret_env import is_docagents_command


@pytest.mark.parametrize(
    ("program", "expected"),
    [
        ("/opt/docagents/.venv/bin/docagents", True),
        ("/repo/manager/cli/__main__.py", True),
        ("manager/cli/__main__.py", True),
        ("/repo/other/cli/__main__.py", False),
        ("/repo/manager/cli/commands.py", False),
        ("-c", False),
        ("/usr/bin/python3", False),
    ],
)
def test_a_docagents_command_is_the_console_script_or_python_m_manager_cli(
    program: str, expected: bool
) -> None:
    assert is_docagents_command(program) is expected
