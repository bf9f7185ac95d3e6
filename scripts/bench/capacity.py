"""The attach scenario's capacity ramp: how many idle agents one manager carries here.

The in-process manager is ramped to N running agents (N in ``capacity_steps``, up
to 1,000). At each step, once the workers settled:

- memory per idle worker (RSS/PSS/USS, the mean over every worker);
- CPU over ``capacity_cpu_window_s``, in percent of one core: the manager (this
  process: the in-process manager, with the harness asleep meanwhile) and the
  docserver (one process serving every agent's connection);
- the machine's limits in use: open files of the manager and of the docserver
  against their soft ``RLIMIT_NOFILE``, kernel tasks against ``pid_max`` /
  ``threads-max`` / ``RLIMIT_NPROC``, available memory;
- ``probes`` new documents attached one at a time.

N is sustained when every probe attached in under 1 s and the ramp itself
(the step's new documents at once) connected within 60 s; the ramp stops at the
first failure. Each step also counts the connections the docserver refused
during it, by reason (its log). Before each step the limits are
projected to the next N (per-agent use measured so far): a step that would exceed
one is not attempted, and the report names the limit and what lifts it. A failed
step names the resource nearest its limit (or a saturated docserver) the same way.

Targets at 1,000 running: every attach < 1 s, PSS per idle worker ≤ 9 MiB,
manager CPU ≤ 5 % of a core.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import psutil

from scripts.bench.stack import ManagerRun, Stack, memory_of, summary

ATTACH_LIMIT_MS = 1000.0
#: A step's ramp (its new documents at once) must have connected within this.
RAMP_LIMIT_MS = 60_000.0
#: Targets at the top step (issue "Fleet", benchmark section).
TOP_STEP = 1000
PSS_TARGET_MIB = 9.0
MANAGER_CPU_TARGET_PERCENT = 5.0
#: A docserver above this share of one core serves no more agents in time.
DOCSERVER_SATURATED_PERCENT = 90.0
#: Use of a limit above this share counts as reached.
NEAR = 0.9


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _tasks() -> int | None:
    """Kernel tasks (processes and threads) on the machine: /proc/loadavg's total."""
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])
    except (OSError, ValueError, IndexError):
        return None


def _nofile(proc: psutil.Process) -> tuple[int, int]:
    """Open files of ``proc`` and its soft RLIMIT_NOFILE."""
    soft = proc.rlimit(psutil.RLIMIT_NOFILE)[0]
    return proc.num_fds(), soft


def limits(docserver_pid: int | None) -> dict[str, Any]:
    """What the machine's limits allow, and how much of them is in use now."""
    manager_fds, manager_nofile = _nofile(psutil.Process())
    out: dict[str, Any] = {
        "manager_fds": manager_fds,
        "manager_nofile": manager_nofile,
        "tasks": _tasks(),
        "pid_max": _read_int("/proc/sys/kernel/pid_max"),
        "threads_max": _read_int("/proc/sys/kernel/threads-max"),
        "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0],
        "available_mib": psutil.virtual_memory().available / 2**20,
        "load_1m": os.getloadavg()[0],
    }
    if docserver_pid is not None:
        out["docserver_fds"], out["docserver_nofile"] = _nofile(psutil.Process(docserver_pid))
    return out


def _task_limit(lim: dict[str, Any]) -> int | None:
    bounds = [lim[k] for k in ("pid_max", "threads_max") if lim.get(k)]
    if lim.get("nproc") not in (None, resource.RLIM_INFINITY):
        bounds.append(lim["nproc"])
    return min(bounds) if bounds else None


def _per_agent(now: dict[str, Any], base: dict[str, Any], n: int, key: str) -> float:
    if n <= 0 or now.get(key) is None or base.get(key) is None:
        return 0.0
    return max(now[key] - base[key], 0) / n


def projected_limit(
    now: dict[str, Any], base: dict[str, Any], n: int, target: int, uss_mib: float
) -> str | None:
    """The limit that ``target`` running agents would exceed (from the use per agent
    measured at ``n``), with what lifts it; None if none would."""
    more = target - n
    checks: list[tuple[str, float, float | None, str]] = []
    for who in ("manager", "docserver"):
        fds = f"{who}_fds"
        if now.get(fds) is not None:
            need = now[fds] + _per_agent(now, base, n, fds) * more
            checks.append(
                (
                    f"open files of the {who}",
                    need,
                    now[f"{who}_nofile"],
                    "raise its soft RLIMIT_NOFILE (ulimit -n, systemd LimitNOFILE=) to "
                    f"≥ {int(need * 1.2)} (the hard limit allows up to "
                    f"{resource.getrlimit(resource.RLIMIT_NOFILE)[1]})",
                )
            )
    if now.get("tasks") is not None:
        need = now["tasks"] + _per_agent(now, base, n, "tasks") * more
        checks.append(
            (
                "kernel tasks (processes and threads)",
                need,
                _task_limit(now),
                "raise kernel.pid_max / kernel.threads-max (sysctl) or RLIMIT_NPROC "
                "(ulimit -u, systemd TasksMax=)",
            )
        )
    checks.append(
        (
            "memory",
            uss_mib * more,
            now["available_mib"],
            "more RAM, or fewer agents per host (MAX_CONCURRENT_AGENTS)",
        )
    )
    for what, need, limit, lift in checks:
        if limit and need > limit * NEAR:
            return f"{what}: {target} agents need ~{need:.0f} of {limit:.0f}; {lift}"
    return None


def saturated(cpu: dict[str, float], lim: dict[str, Any]) -> str | None:
    """A failed step's cause when a process, not a table, ran out: a docserver at a
    full core, or a machine whose load exceeds its cores."""
    docserver = cpu.get("docserver_percent")
    if docserver is not None and docserver >= DOCSERVER_SATURATED_PERCENT:
        return (
            f"the docserver's single process ({docserver:.0f} % of a core) is saturated; "
            "run several docservers, each serving a share of the documents"
        )
    cores = psutil.cpu_count() or 1
    if lim["load_1m"] > 2 * cores:
        return (
            f"CPU: load average {lim['load_1m']:.1f} on {cores} cores; more cores, or fewer "
            "agents per host"
        )
    return None


def refusals(stack: Stack, since: dict[str, int] | None = None) -> dict[str, int]:
    """The docserver's refused connections by reason (its log), minus ``since``."""
    counts: dict[str, int] = {}
    log = stack.docserver.log() if stack.docserver is not None else ""
    for line in log.splitlines():
        if '"connection_refused"' not in line:
            continue
        try:
            reason = str(json.loads(line).get("reason"))
        except ValueError:
            continue
        counts[reason] = counts.get(reason, 0) + 1
    for reason, n in (since or {}).items():
        counts[reason] = counts.get(reason, 0) - n
    return {reason: n for reason, n in counts.items() if n > 0}


def failure(step: dict[str, Any], base: dict[str, Any], uss_mib: float) -> str:
    """Why a step failed: a slow ramp (with the docserver's refusals during it), an
    attach of ≥ 1 s, and the saturated process or the limit nearest when known."""
    n, cpu, lim = step["n"], step["cpu"], step["limits"]
    causes: list[str] = []
    if not step["ramp_ok"]:
        slow = f"the ramp to {n} took {step['ramp_s']:.0f} s (> {RAMP_LIMIT_MS / 1000:.0f} s)"
        refused = step.get("docserver_refusals") or {}
        if refused:
            slow += "; the docserver refused " + ", ".join(
                f"{count} agent connections ({reason!r})" for reason, count in refused.items()
            )
        causes.append(slow)
    if not step["probes_ok"]:
        causes.append("an attach took ≥ 1 s")
    cause = saturated(cpu, lim) or projected_limit(lim, base, n, n, uss_mib)
    causes.append(cause or "no machine limit near")
    return "; ".join(causes)


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


async def cpu_percent(docserver_pid: int | None, window_s: float) -> dict[str, float]:
    """CPU of the manager (this process) and of the docserver, % of one core."""
    procs = {"manager_percent": psutil.Process()}
    if docserver_pid is not None:
        procs["docserver_percent"] = psutil.Process(docserver_pid)
    before = {k: _cpu_seconds(p) for k, p in procs.items()}
    started = time.perf_counter()
    await anyio.sleep(window_s)
    elapsed = time.perf_counter() - started
    return {k: (_cpu_seconds(p) - before[k]) / elapsed * 100 for k, p in procs.items()}


async def ramp(
    stack: Stack,
    run: ManagerRun,
    cfg: dict[str, Any],
    *,
    burst: Callable[[Stack, ManagerRun, list[str]], Awaitable[dict[str, Any]]],
    one: Callable[..., Awaitable[float]],
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Ramp through the capacity steps: (memory by N, capacity, the ramp's documents).

    ``burst(stack, run, docs)`` attaches documents at once, ``one(stack, run, doc,
    within=...)`` one document (the attach scenario's own measures).
    """
    docserver = stack.docserver.process if stack.docserver is not None else None
    docserver_pid = docserver.pid if docserver is not None else None
    base = limits(docserver_pid)
    steps = sorted(set(cfg["memory_at"]) | set(cfg["capacity_steps"]))
    memory: dict[str, Any] = {}
    capacity: dict[str, Any] = {"steps": [], "sustained": 0, "limits_at_start": base}
    docs: list[str] = []
    now, uss = base, 0.0
    for n in steps:
        blocked = projected_limit(now, base, len(docs), n, uss) if docs else None
        if blocked is not None:
            capacity["steps"].append({"n": n, "ok": False, "why": blocked, "limits": now})
            capacity["stopped_by"] = blocked
            break
        refused = refusals(stack)
        new = [f"ramp-{i}" for i in range(len(docs), n)]
        started = time.perf_counter()
        try:
            result = await burst(stack, run, new)
        except TimeoutError:
            lim = limits(docserver_pid)
            why = projected_limit(lim, base, max(len(docs), 1), n, uss) or "ramp timed out"
            capacity["steps"].append({"n": n, "ok": False, "why": why, "limits": lim})
            capacity["stopped_by"] = why
            break
        docs += new
        ramp_s = time.perf_counter() - started
        await anyio.sleep(cfg["settle_s"])
        mem = memory_of(run.worker_pids())
        uss = mem["uss_mib"]
        if n in cfg["memory_at"]:
            memory[str(n)] = mem
        if n not in cfg["capacity_steps"]:
            continue
        cpu = await cpu_percent(docserver_pid, cfg["capacity_cpu_window_s"])
        now = limits(docserver_pid)
        probes: list[float] = []
        ok = True
        for i in range(cfg["probes"]):
            doc = f"probe{n}-{i}"
            try:
                probes.append(await one(stack, run, doc, within=10))
            except TimeoutError:
                ok = False
                break
            stack.events([doc], "idle")
            await anyio.sleep(0.05)
        probes_ok = ok and max(probes) < ATTACH_LIMIT_MS
        ramp_ok = result["all_connected_ms"] < RAMP_LIMIT_MS
        ok = probes_ok and ramp_ok
        step: dict[str, Any] = {
            "n": n,
            "ok": ok,
            "probes_ok": probes_ok,
            "ramp_ok": ramp_ok,
            "ramp_s": ramp_s,
            "probe_ms": summary(probes),
            "memory": mem,
            "cpu": cpu,
            "limits": now,
            "load_1m": now["load_1m"],
            "docserver_refusals": refusals(stack, since=refused),
        }
        if not ok:
            step["why"] = failure(step, base, uss)
            capacity["stopped_by"] = step["why"]
        capacity["steps"].append(step)
        if not ok:
            break
        capacity["sustained"] = n
    return memory, capacity, docs


def report_rows(a: dict[str, Any], row: Callable[..., str]) -> list[str]:
    """The capacity rows of the report (``row`` is report._row)."""
    cap = a.get("capacity") or {}
    steps = [s for s in cap.get("steps", []) if "probe_ms" in s]
    out = [
        row(
            "concurrent agents, every attach < 1 s",
            cap.get("sustained"),
            "",
            f"≥ {TOP_STEP}",
            None if not steps else cap.get("sustained", 0) >= TOP_STEP,
        )
    ]
    for s in steps:
        n = s["n"]
        out.append(
            row(
                f"ramp to {n} (its new documents at once), all connected",
                s["ramp_s"],
                " s",
                f"< {RAMP_LIMIT_MS / 1000:.0f} s",
                s.get("ramp_ok"),
            )
        )
        out.append(
            row(
                f"slowest attach at {n} running",
                s["probe_ms"]["max"],
                " ms",
                "< 1000 ms",
                s["probe_ms"]["max"] < ATTACH_LIMIT_MS,
            )
        )
        top = n >= TOP_STEP
        out.append(
            row(
                f"PSS per idle worker at {n} running",
                s["memory"]["pss_mib"],
                " MiB",
                f"≤ {PSS_TARGET_MIB:g} MiB" if top else "",
                s["memory"]["pss_mib"] <= PSS_TARGET_MIB if top else None,
            )
        )
        out.append(
            row(
                f"manager CPU, {n} idle agents",
                s["cpu"]["manager_percent"],
                " %",
                f"≤ {MANAGER_CPU_TARGET_PERCENT:g} %" if top else "",
                s["cpu"]["manager_percent"] <= MANAGER_CPU_TARGET_PERCENT if top else None,
            )
        )
        if "docserver_percent" in s["cpu"]:
            out.append(
                row(
                    f"docserver CPU, {n} idle agents", s["cpu"]["docserver_percent"], " %", "", None
                )
            )
    if cap.get("stopped_by"):
        out.append(row(f"ramp stopped: {cap['stopped_by']}", None, "", "", False))
    return out
