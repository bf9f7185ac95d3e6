"""The Prometheus endpoint and /healthz over a real socket."""

from __future__ import annotations

import anyio
import httpx
import pytest

from manager.ops.telemetry import Health, ManagerMetrics, MetricsServer

pytestmark = pytest.mark.anyio


async def test_metrics_and_health() -> None:
    metrics = ManagerMetrics()
    state = {"healthy": True}
    server = MetricsServer(metrics, lambda: Health(state["healthy"], {"database": "ok"}), port=0)
    metrics.spawns.inc(3)
    metrics.running.set(2)
    metrics.attach_latency.observe(0.02)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(server.run)
            base = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient() as client:
                text = (await client.get(f"{base}/metrics")).text
                assert "docagents_worker_spawns_total 3.0" in text
                assert "docagents_agents_running 2.0" in text
                assert "docagents_attach_latency_seconds_count 1.0" in text
                ok = await client.get(f"{base}/healthz")
                assert (ok.status_code, ok.json()) == (200, {"healthy": True, "database": "ok"})
                state["healthy"] = False
                bad = await client.get(f"{base}/healthz")
                assert bad.status_code == 503
                assert (await client.get(f"{base}/nope")).status_code == 404
            tg.cancel_scope.cancel()


async def test_busy_port_is_an_error() -> None:
    first = MetricsServer(ManagerMetrics(), lambda: Health(True), port=0)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(first.run)
            second = MetricsServer(ManagerMetrics(), lambda: Health(True), port=first.port)
            with pytest.raises(OSError):
                await second.run()
            tg.cancel_scope.cancel()
