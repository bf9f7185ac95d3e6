"""sd_notify against a real datagram socket."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from manager.ops.sdnotify import SystemdNotifier


def _receiver(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path if not path.startswith("@") else "\0" + path[1:])
    sock.settimeout(2)
    return sock


def test_notifications_reach_the_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with _receiver(path) as sock:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
        assert notifier.enabled
        assert notifier.watchdog_interval_s == 4.0
        assert notifier.ready("running 0/10")
        assert sock.recv(4096) == b"READY=1\nSTATUS=running 0/10"
        notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        notifier.stopping()
        assert sock.recv(4096) == b"STOPPING=1"
        notifier.close()


def test_abstract_namespace_socket() -> None:
    name = f"@docagents-test-{os.getpid()}"
    with _receiver(name) as sock:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": name})
        assert notifier.status("hello")
        assert sock.recv(4096) == b"STATUS=hello"
        notifier.close()


def test_outside_systemd_is_a_no_op() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog_interval_s is None


def test_watchdog_for_another_pid_is_ignored() -> None:
    notifier = SystemdNotifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert notifier.watchdog_interval_s is None
