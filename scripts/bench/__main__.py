"""Run the benchmark suite and write ``bench-results/<stamp>/`` (JSON, report.md, plots).

python -m scripts.bench            # the full suite (~10 min on 2 cores)
python -m scripts.bench --quick    # a small version (~2 min)
python -m scripts.bench --only attach,events
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import anyio
import psutil

from manager.workers.forkserver import scrub_secret_environment
from scripts.bench import attach, events, fleet, floors, marks, memory, recovery, report
from scripts.bench.stack import REPO, Stack, raise_fd_limit
from worker.logs import configure_logging

SCENARIOS = {
    "attach": attach.run,
    "events": events.run,
    "marks": marks.run,
    "memory": memory.run,
    "recovery": recovery.run,
    "fleet": fleet.run,
}

FULL: dict[str, Any] = {
    "sequential": 200,
    "bursts": [100, 300],
    "burst_trials": 3,
    "memory_at": [10, 100, 300],
    "capacity_steps": [100, 300, 500, 700, 1000],
    "capacity_cpu_window_s": 10.0,
    "probes": 10,
    "settle_s": 3.0,
    "events": 30_000,
    "event_batch": 1000,
    "sentences": 100,
    "llm_sentences": 50,
    "cpu_agents": 200,
    "recovery_agents": 100,
    "recovery_trials": 3,
    "cpu_window_s": 20.0,
    "reopen_sentences": 200,
    "first_pass_sentences": 2000,
    "first_pass_typed": 20,
    "fleet_documents": 150,
    "fleet_trials": 3,
    "fleet_lease_ttl_s": 10.0,
    "fleet_lease_renew_s": 2.0,
}
QUICK: dict[str, Any] = {
    **FULL,
    "sequential": 30,
    "bursts": [50],
    "burst_trials": 1,
    "memory_at": [10, 50],
    "capacity_steps": [50],
    "capacity_cpu_window_s": 3.0,
    "probes": 5,
    "settle_s": 1.0,
    "events": 5_000,
    "sentences": 8,
    "llm_sentences": 5,
    "cpu_agents": 30,
    "recovery_agents": 20,
    "recovery_trials": 1,
    "cpu_window_s": 6.0,
    "reopen_sentences": 50,
    "first_pass_sentences": 300,
    "first_pass_typed": 5,
    "fleet_documents": 30,
    "fleet_trials": 1,
}


async def main_async(cfg: dict[str, Any], only: list[str], out_dir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {
        "config": cfg,
        "machine": {
            "cpus": psutil.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "fd_limit": raise_fd_limit(),
            "load_1m_at_start": os.getloadavg()[0],
            "cpu_reference_ms_at_start": floors.cpu_reference_ms(),
        },
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with tempfile.TemporaryDirectory(prefix="docagents-bench-") as tmp:
        async with Stack.running(Path(tmp)) as stack:
            for name in only:
                print(f"== {name}", flush=True)
                # The harness's own objects (earlier scenarios' results, the stack) out
                # of the collector's way: a full collection of this process would show
                # up as a 100 ms stall in latencies it measures (its clients run here).
                gc.collect()
                gc.freeze()
                speeds = results["machine"].setdefault("cpu_reference_ms_before", {})
                speeds[name] = floors.cpu_reference_ms()
                started = time.perf_counter()
                try:
                    results[name] = await SCENARIOS[name](stack, cfg)
                except Exception as exc:  # a failed scenario is reported, the rest still run
                    traceback.print_exc()
                    results[name] = {"error": repr(exc)}
                    stack.reset_documents()
                results[name + "_duration_s"] = time.perf_counter() - started
                (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="docagents benchmark suite")
    parser.add_argument("--quick", action="store_true", help="a small version (~2 min)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results")
    args = parser.parse_args()
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    configure_logging("console", os.environ.get("BENCH_LOG_LEVEL", "WARNING"))
    scrub_secret_environment()
    cfg = QUICK if args.quick else FULL
    out_dir = args.out / (time.strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = anyio.run(main_async, cfg, only, out_dir)
    results["total_s"] = time.perf_counter() - started
    results["machine"]["load_1m_at_end"] = os.getloadavg()[0]
    results["machine"]["cpu_reference_ms_at_end"] = floors.cpu_reference_ms()
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    report.write(results, out_dir)
    print(f"report: {out_dir / 'report.md'}")


if __name__ == "__main__":
    main()
