"""The long-running commands raise their soft open-file limit to the hard one."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from manager.ops import limits

ROOT = Path(__file__).resolve().parents[2]


def test_the_soft_limit_is_raised_to_the_hard_one(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _kind: (1024, 524288))
    monkeypatch.setattr(resource, "setrlimit", lambda _kind, pair: calls.append(pair))
    assert limits.raise_open_files_limit() == (1024, 524288)
    assert calls == [(524288, 524288)]


def test_an_unlimited_hard_limit_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _kind: (1024, resource.RLIM_INFINITY))
    monkeypatch.setattr(resource, "setrlimit", lambda _kind, pair: calls.append(pair))
    assert limits.raise_open_files_limit() == (1024, limits.CEILING)
    assert calls == [(limits.CEILING, resource.RLIM_INFINITY)]


def test_a_refused_raise_keeps_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_kind: int, _pair: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    monkeypatch.setattr(resource, "getrlimit", lambda _kind: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", refuse)
    assert limits.raise_open_files_limit() == (1024, 1024)


def test_nothing_changes_at_the_hard_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _kind: (4096, 4096))
    monkeypatch.setattr(resource, "setrlimit", lambda *_: pytest.fail("no change needed"))
    assert limits.raise_open_files_limit() == (4096, 4096)


def test_a_real_process_gets_the_hard_limit() -> None:
    """In a child whose soft limit starts low, the function really raises it."""
    script = (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "from manager.ops.limits import raise_open_files_limit, CEILING\n"
        "before, after = raise_open_files_limit()\n"
        "now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]\n"
        "expected = CEILING if hard == resource.RLIM_INFINITY else min(hard, CEILING)\n"
        "assert (before, after, now) == (256, expected, expected), (before, after, now)\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=60)
