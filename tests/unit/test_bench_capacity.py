"""The capacity ramp's verdicts on the machine's limits (scripts/bench/capacity.py)."""

from __future__ import annotations

from typing import Any

from scripts.bench.capacity import failure, projected_limit, saturated


def use(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "manager_fds": 28,
        "manager_nofile": 20_000,
        "docserver_fds": 11,
        "docserver_nofile": 20_000,
        "tasks": 200,
        "pid_max": 32_768,
        "threads_max": 192_726,
        "nproc": 96_363,
        "available_mib": 20_000.0,
        "load_1m": 1.0,
    }
    values.update(overrides)
    return values


def test_no_limit_near_when_the_next_step_fits() -> None:
    base = use()
    at_700 = use(manager_fds=28 + 3 * 700, docserver_fds=11 + 700, tasks=200 + 700)
    assert projected_limit(at_700, base, 700, 1000, uss_mib=8.5) is None


def test_the_managers_open_files_stop_the_ramp_with_what_lifts_them() -> None:
    # 3 descriptors per worker: at 1,000 the manager needs ~3,028 of a soft 1,024.
    base = use(manager_nofile=1024)
    at_300 = use(manager_fds=28 + 900, manager_nofile=1024)
    why = projected_limit(at_300, base, 300, 1000, uss_mib=8.5)
    assert why is not None and why.startswith("open files of the manager: 1000 agents need ~3028")
    assert "RLIMIT_NOFILE" in why and "LimitNOFILE" in why


def test_the_docservers_open_files_too() -> None:
    base = use(docserver_nofile=1024)
    at_700 = use(manager_fds=28 + 2100, docserver_fds=11 + 700, docserver_nofile=1024)
    why = projected_limit(at_700, base, 700, 1000, uss_mib=8.5)
    assert why is not None and why.startswith("open files of the docserver")


def test_tasks_and_memory() -> None:
    base = use(pid_max=1200)
    why = projected_limit(use(tasks=900, pid_max=1200), base, 700, 1000, uss_mib=8.5)
    assert why is not None and why.startswith("kernel tasks") and "pid_max" in why
    # 300 more idle workers of 8.5 MiB need ~2,550 MiB: 3,000 available do, 2,000 do not.
    assert projected_limit(use(available_mib=3000.0), use(), 700, 1000, uss_mib=8.5) is None
    why = projected_limit(use(available_mib=2000.0), use(), 700, 1000, uss_mib=8.5)
    assert why is not None and why.startswith("memory: 1000 agents need ~2550 of 2000")


def test_a_saturated_docserver_or_machine_explains_a_failed_step() -> None:
    assert saturated({"manager_percent": 3.0, "docserver_percent": 40.0}, use()) is None
    why = saturated({"manager_percent": 3.0, "docserver_percent": 97.0}, use())
    assert why is not None and "docserver's single process" in why
    why = saturated({"manager_percent": 3.0}, use(load_1m=50.0))
    assert why is not None and why.startswith("CPU: load average 50.0")


def step(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "n": 1000,
        "ramp_ok": True,
        "probes_ok": True,
        "ramp_s": 20.0,
        "cpu": {"manager_percent": 4.0, "docserver_percent": 13.0},
        "limits": use(load_1m=3.0),
        "docserver_refusals": {},
    }
    values.update(overrides)
    return values


def test_a_slow_ramp_names_the_docservers_refusals() -> None:
    why = failure(
        step(
            ramp_ok=False,
            ramp_s=82.4,
            docserver_refusals={"agent credential already in use": 2443},
        ),
        use(),
        8.5,
    )
    assert why == (
        "the ramp to 1000 took 82 s (> 60 s); the docserver refused 2443 agent connections"
        " ('agent credential already in use'); no machine limit near"
    )


def test_a_slow_attach_names_a_saturated_docserver() -> None:
    why = failure(
        step(probes_ok=False, cpu={"manager_percent": 4.0, "docserver_percent": 99.0}),
        use(),
        8.5,
    )
    assert why.startswith("an attach took ≥ 1 s; the docserver's single process (99 %")
