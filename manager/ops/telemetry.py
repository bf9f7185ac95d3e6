"""Prometheus metrics and ``/healthz`` for the manager (on ``METRICS_PORT``; off unless set).

:class:`ManagerMetrics` owns one registry (not the global one, so tests and two
managers in one process do not collide). :class:`MetricsServer` serves it with
uvicorn inside the manager's event loop; a blocked loop therefore cannot answer
``/healthz`` either, which is what a liveness probe wants.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
import uvicorn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["Health", "ManagerMetrics", "MetricsServer"]

log = structlog.get_logger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ManagerMetrics:
    """Every metric the manager exports, prefixed ``docagents_``.

    The names are a contract: ``ops/prometheus/rules.yml`` and
    ``ops/grafana/docagents.json`` use them (a test reads them from a live
    ``/metrics``). Only ``docagents_manager_info`` carries labels of its own
    (``manager_id``, ``version``); Prometheus adds ``job`` and ``instance``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.info = Gauge(
            "docagents_manager_info",
            "Always 1; labels say which manager and which version",
            ["manager_id", "version"],
            registry=r,
        )
        self.ready = Gauge(
            "docagents_manager_ready", "1 once recovered and following events", registry=r
        )
        self.database_reachable = Gauge(
            "docagents_database_reachable",
            "1 while the activity source is connected and the writer is healthy",
            registry=r,
        )
        self.writer_pending = Gauge(
            "docagents_writer_pending",
            "Writes waiting for the database (buffered while it is unreachable)",
            registry=r,
        )
        self.writer_dropped = Counter(
            "docagents_writer_dropped_samples",
            "Metrics samples dropped because the write buffer was full",
            registry=r,
        )
        self.loop_lag = Gauge(
            "docagents_event_loop_lag_seconds", "How late the manager's heartbeat woke", registry=r
        )
        self.event_lag = Gauge(
            "docagents_activity_event_lag_seconds",
            "Age of the last document_activity row applied, when it was applied",
            registry=r,
        )
        self.llm_failures = Counter(
            "docagents_llm_failures",
            "LLM calls that failed (after the client's retries)",
            registry=r,
        )
        self.memory_pss = Gauge(
            "docagents_worker_memory_pss_bytes",
            "Sum of the live workers' PSS (shared pages divided among their users)",
            registry=r,
        )
        self.memory_rss = Gauge(
            "docagents_worker_memory_rss_bytes",
            "Sum of the live workers' RSS (shared pages counted once per worker)",
            registry=r,
        )
        self.running = Gauge(
            "docagents_agents_running",
            "Agent lives on this manager (claiming, starting, running or stopping)",
            registry=r,
        )
        self.waiting = Gauge("docagents_agents_waiting", "Wanted documents waiting", registry=r)
        self.capacity = Gauge("docagents_agents_capacity", "MAX_CONCURRENT_AGENTS", registry=r)
        self.spawns = Counter("docagents_worker_spawns", "Workers started", registry=r)
        self.evictions = Counter("docagents_evictions", "LRU evictions", registry=r)
        self.restarts = Counter("docagents_worker_restarts", "Workers restarted", registry=r)
        self.crashes = Counter("docagents_worker_crashes", "Unexpected worker exits", registry=r)
        self.events_applied = Counter(
            "docagents_activity_events_applied", "document_activity rows applied", registry=r
        )
        self.llm_calls = Counter("docagents_llm_calls", "LLM calls made by workers", registry=r)
        self.locations_marked = Counter(
            "docagents_locations_marked", "geoMark marks applied", registry=r
        )
        self.llm_sentences_sent = Counter(
            "docagents_llm_sentences_sent", "Sentences sent to the model", registry=r
        )
        self.llm_cache_hits = Counter(
            "docagents_llm_cache_hits",
            "Sentences marked from the extraction memory, not sent",
            registry=r,
        )
        self.llm_sentences_failed = Counter(
            "docagents_llm_sentences_failed",
            "Sentences whose extraction call failed (each attempt; retried later)",
            registry=r,
        )
        self.llm_sentences_given_up = Counter(
            "docagents_llm_sentences_given_up",
            "Sentences given up (the model refused them alone, or failed too often)",
            registry=r,
        )
        self.lease_renew_failures = Counter(
            "docagents_lease_renew_failures", "Lease renewals not answered in time", registry=r
        )
        self.failovers = Counter(
            "docagents_failovers", "Agent lives of dead managers ended by this one", registry=r
        )
        self.fenced = Counter(
            "docagents_fenced",
            "Workers the docserver retired because a newer agent took their document",
            registry=r,
        )
        self.attach_latency = Histogram(
            "docagents_attach_latency_seconds",
            "From the activity event to the worker's connected message",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_latency = Histogram(
            "docagents_llm_latency_seconds",
            "LLM response time reported by workers",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True, slots=True)
class Health:
    """The ``/healthz`` answer: 200 when healthy, else 503; ``details`` go into its JSON."""

    healthy: bool
    details: dict[str, Any] = field(default_factory=dict)


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _NoSignalServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the manager owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class MetricsServer:
    """``GET /metrics`` (Prometheus text format) and ``GET /healthz`` (200 or 503, JSON)."""

    def __init__(
        self,
        metrics: ManagerMetrics,
        health: Callable[[], Health],
        *,
        host: str = "127.0.0.1",
        port: int,
    ) -> None:
        self._metrics = metrics
        self._health = health
        self._config = uvicorn.Config(
            self._app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            interface="asgi3",
        )
        self._server = _NoSignalServer(self._config)
        self._started = False

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        servers = self._server.servers
        if not servers or not servers[0].sockets:
            raise RuntimeError("metrics server not started")
        return int(servers[0].sockets[0].getsockname()[1])

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        if self._started:
            raise RuntimeError("MetricsServer.run() called twice")
        self._started = True
        # Bind here, so a busy port raises OSError to the caller (uvicorn would
        # call sys.exit on its own bind failure).
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets; with
        # proto 0 every response written in two parts waits out a delayed ACK (40 ms).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._config.host, self._config.port))
        except OSError:
            sock.close()
            raise
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._serve, sock)
            try:
                while not self._server.started:  # noqa: ASYNC110 (uvicorn has a flag, not an event)
                    await anyio.sleep(0.01)
                log.info("metrics_server_listening", port=self.port)
                task_status.started()
                await anyio.sleep_forever()
            finally:
                # Let uvicorn close its sockets and connections itself.
                self._server.should_exit = True

    async def _serve(self, sock: socket.socket) -> None:
        with anyio.CancelScope(shield=True), sock:
            await self._server.serve([sock])

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope.get("path", "")
        if path == "/metrics":
            await _respond(send, 200, self._metrics.render(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            health = self._health()
            body = json.dumps({"healthy": health.healthy, **health.details}, default=str)
            await _respond(send, 200 if health.healthy else 503, body.encode(), "application/json")
        else:
            await _respond(send, 404, b"not found\n", "text/plain")


async def _respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type.encode()), (b"cache-control", b"no-store")],
        }
    )
    await send({"type": "http.response.body", "body": body})
