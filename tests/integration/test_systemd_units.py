"""The systemd units pass `systemd-analyze verify` (installed by scripts/setup --test)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).parents[2] / "systemd"
INSTALL_PREFIX = "/opt/docagents/.venv"


def _install_copy(tmp_path: Path, name: str) -> Path:
    """The unit as installed: ExecStart points at this checkout's virtualenv."""
    text = (UNITS / name).read_text().replace(INSTALL_PREFIX, sys.prefix)
    target = tmp_path / name
    target.write_text(text)
    return target


@pytest.mark.parametrize("name", ["docagents-manager.service", "docagents-docserver.service"])
def test_systemd_analyze_verify(tmp_path: Path, name: str) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: scripts/setup --test installs package 'systemd'"
    unit = _install_copy(tmp_path, name)
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def _service_section(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser["Service"]


def test_manager_unit_settings() -> None:
    service = _service_section("docagents-manager.service")
    assert service["Type"] == "notify"
    assert service["Restart"] == "on-failure"
    assert service["KillMode"] == "mixed"
    assert int(service["WatchdogSec"]) > 0
    # Longer than the manager's own shutdown bound (SHUTDOWN_TIMEOUT_S, 8 s default).
    from manager.config import Settings

    assert int(service["TimeoutStopSec"]) > Settings.model_fields["shutdown_timeout_s"].default
    # SIGTERM beside other managers hands the agents over first, then detaches.
    stopping = (
        Settings.model_fields["drain_timeout_s"].default
        + Settings.model_fields["shutdown_timeout_s"].default
    )
    assert int(service["TimeoutStopSec"]) > stopping
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert service[key] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/docagents"
    assert service["User"] == "docagents"
    assert service["StateDirectory"] == "docagents"
    assert service["EnvironmentFile"].startswith("/etc/docagents/")
