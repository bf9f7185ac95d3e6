"""Agent lives: the shell that carries out the supervisor's decisions for one life.

:class:`LifeRunner` executes ``Claim`` (one claim through the batcher),
``Spawn`` (start the worker, read its pipe, ping it, stop it when asked, wait
for its exit), ``Stop`` and ``Kill``, and reports back what happened
(``claimed``, ``claim_refused``, ``claim_unanswered``, ``worker_connected``,
``worker_activity``, ``worker_error``, ``worker_unhealthy``, ``worker_exited``),
passing the actions the supervisor answers to the daemon's ``dispatch``. Every
message a worker sends is turned into writer calls (buffered rows) and observer
calls (telemetry). Whether to start, stop, retry or give up is the supervisor's
call, never this module's: a lost claim, a failed start, a missed pong or a
fenced worker is reported, and the supervisor answers with what follows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import anyio
import anyio.abc
import structlog
from pydantic import SecretStr

from docserver.agent_credentials import mint_agent_credential
from manager.config import Settings
from manager.errors import StoreError
from manager.store.base import Store, Supersede
from manager.store.writer import StoreWriter
from manager.supervise.claims import ClaimBatcher
from manager.supervise.supervisor import Action, Claim, Spawn, Supervisor
from manager.workers.launcher import WorkerLauncher
from manager.workers.process import WorkerProcess
from worker.config import WorkerSettings
from worker.protocol import (
    Activity,
    Connected,
    ErrorReport,
    LlmCall,
    LocationMarked,
    Metrics,
    WorkerMessage,
)

__all__ = ["AgentLife", "LifeObserver", "LifeRunner", "monotonic"]

log = structlog.get_logger(__name__)


def monotonic() -> float:
    """The supervisor's clock."""
    return time.monotonic()


@dataclass(eq=False)
class AgentLife:
    """One agent life as the driver sees it."""

    document_id: str
    agent_id: str
    worker: WorkerProcess | None = None
    claimed: bool = False
    #: the fencing token of this life's row (it goes into the worker's credential)
    fence: int | None = None
    #: the worker's latest resource report
    last_metrics: Metrics | None = None
    stop_reason: str | None = None
    kill: bool = False
    stop_requested: anyio.Event = field(default_factory=anyio.Event)

    def request_stop(self, reason: str, *, kill: bool) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.kill = self.kill or kill
        if kill and self.worker is not None:
            self.worker.kill()
        self.stop_requested.set()


class LifeObserver(Protocol):
    """What the daemon's telemetry wants to hear about lives (keyword-free, cheap calls)."""

    def worker_started(self, life: AgentLife, restart: bool) -> None: ...
    def worker_connected(self, life: AgentLife) -> None: ...
    def worker_exited(self, life: AgentLife, asked: bool) -> None: ...
    def llm_call(self, response_time_ms: float, ok: bool) -> None: ...
    def location_marked(self) -> None: ...
    def agent_fenced(self, life: AgentLife) -> None: ...


class LifeRunner:
    """Runs agent lives inside the daemon's task group."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        writer: StoreWriter,
        launcher: WorkerLauncher,
        supervisor: Supervisor,
        *,
        dispatch: Callable[[Sequence[Action]], None],
        observer: LifeObserver,
        host: str,
        instance_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.writer = writer
        self.launcher = launcher
        self.supervisor = supervisor
        self.host = host
        self.worker_settings = settings.worker_settings()
        self.lives: dict[str, AgentLife] = {}
        self._dispatch = dispatch
        self._observer = observer
        #: A burst's claims go as one call (and never queue on the store's pool).
        self._claim_metadata: dict[str, object] = {"host": host, "manager_pid": os.getpid()}
        if instance_id is not None:
            # claim_document checks that this instance holds the manager's lease
            self._claim_metadata["manager_instance"] = instance_id
        self.claims = ClaimBatcher(store, settings.manager_id, host, self._claim_metadata)
        self._claims_started = False
        #: Called after every life ended (the daemon checks for "all stopped").
        self.on_life_ended: Callable[[], None] = lambda: None

    def _life_settings(
        self, document_id: str, agent_id: str, fence: int | None = None
    ) -> WorkerSettings:
        """The worker's settings with a credential for this life only (never the master)."""
        master = self.settings.docserver_agent_token
        if master is None:
            return self.worker_settings.model_copy(update={"docserver_agent_token": None})
        credential = mint_agent_credential(
            master.get_secret_value(),
            document_id=document_id,
            agent_id=agent_id,
            ttl_s=self.settings.agent_credential_ttl_s,
            now=time.time(),
            fence=fence,
        )
        return self.worker_settings.model_copy(
            update={"docserver_agent_token": SecretStr(credential)}
        )

    def _ensure_claims(self, tg: anyio.abc.TaskGroup) -> None:
        if not self._claims_started:
            self._claims_started = True
            tg.start_soon(self.claims.run)  # scheduled first: it runs before any claim

    def claim(self, tg: anyio.abc.TaskGroup, action: Claim) -> None:
        self._ensure_claims(tg)
        life = AgentLife(action.document_id, action.agent_id)
        self.lives[action.agent_id] = life
        tg.start_soon(self._claim, life, action)

    def spawn(self, tg: anyio.abc.TaskGroup, action: Spawn) -> None:
        life = self.lives.get(action.agent_id)
        if life is None:  # cannot happen: a Spawn answers this life's claim
            life = self.lives[action.agent_id] = AgentLife(action.document_id, action.agent_id)
        life.claimed = True
        tg.start_soon(self._live, life, action.restart)

    def stop(self, document_id: str, agent_id: str, reason: str, *, kill: bool) -> None:
        life = self.lives.get(agent_id)
        if life is None:
            return
        log.info(
            "agent_killing" if kill else "agent_stopping",
            document_id=document_id,
            agent_id=agent_id,
            reason=reason,
        )
        life.request_stop(reason, kill=kill)

    async def _claim(self, life: AgentLife, action: Claim) -> None:
        """One claim; the answer goes to the supervisor, which decides what follows."""
        doc, agent = life.document_id, life.agent_id
        sup = self.supervisor
        end = action.supersedes
        supersedes = None if end is None else Supersede(end.agent_id, end.status, end.reason)
        try:
            try:
                claim = await self.claims.claim(doc, agent, supersedes)
            except StoreError as exc:
                log.warning("claim_unanswered", document_id=doc, agent_id=agent, error=str(exc))
                self._dispatch(sup.claim_unanswered(doc, agent, str(exc), monotonic()))
                return
            if claim.claimed:
                life.fence = claim.row.fence
                self._dispatch(sup.claimed(doc, agent, monotonic()))
                return
            log.info(
                "document_owned_elsewhere",
                document_id=doc,
                owner_manager_id=claim.row.manager_id,
                owner_agent_id=claim.row.agent_id,
            )
            self._dispatch(
                sup.claim_refused(
                    doc,
                    agent,
                    owner_manager_id=claim.row.manager_id,
                    owner_agent_id=claim.row.agent_id,
                    now=monotonic(),
                )
            )
        finally:
            if not life.claimed:
                self._forget(life)

    async def _live(self, life: AgentLife, restart: bool) -> None:
        """Start, run and end one claimed life's worker."""
        doc, agent = life.document_id, life.agent_id
        sup = self.supervisor
        try:
            if life.stop_reason is not None:  # the Stop came before the process
                self._dispatch(sup.worker_exited(doc, agent, "never started", monotonic()))
                return
            worker = self.launcher.process(self._life_settings(doc, agent, life.fence), doc, agent)
            try:
                await worker.start()
            except (OSError, ValueError, RuntimeError, EOFError) as exc:
                log.exception("worker_start_failed", document_id=doc)
                description = f"failed to start: {exc!r}"
                self._dispatch(sup.worker_exited(doc, agent, description, monotonic()))
                return
            life.worker = worker
            if life.kill:
                worker.kill()
            self.writer.set_status(
                agent,
                "connecting",
                pid=worker.pid,
                metadata={"pid_create_time": worker.create_time, "host": self.host},
            )
            self._observer.worker_started(life, restart)
            log.info(
                "worker_restarted" if restart else "worker_started",
                document_id=doc,
                agent_id=agent,
                pid=worker.pid,
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pinger, life, worker)
                tg.start_soon(self._stopper, life, worker)
                exit_info = await worker.run(
                    on_message=lambda message: self._on_message(life, worker, message),
                    on_protocol_error=lambda reason: self._unhealthy(life, reason),
                )
                tg.cancel_scope.cancel()
            log.info(
                "worker_exited",
                document_id=doc,
                agent_id=agent,
                pid=worker.pid,
                how=exit_info.description,
                asked=life.stop_reason,
            )
            self._observer.worker_exited(life, life.stop_reason is not None)
            self._dispatch(sup.worker_exited(doc, agent, exit_info.description, monotonic()))
        finally:
            self._forget(life)

    def _forget(self, life: AgentLife) -> None:
        if self.lives.get(life.agent_id) is life:
            del self.lives[life.agent_id]
        self.on_life_ended()

    async def _stopper(self, life: AgentLife, worker: WorkerProcess) -> None:
        await life.stop_requested.wait()
        if life.kill:
            worker.kill()
            return
        self.writer.set_status(life.agent_id, "detaching")
        await worker.stop(
            life.stop_reason or "detach",
            grace=self.settings.detach_grace_s,
            kill_grace=self.settings.kill_grace_s,
        )

    async def _pinger(self, life: AgentLife, worker: WorkerProcess) -> None:
        interval = self.settings.ping_interval_s
        timeout = self.settings.ping_timeout_s
        while True:
            await anyio.sleep(interval)
            if life.stop_reason is not None:
                return
            if not await worker.ping(timeout):
                if life.stop_reason is None:
                    log.warning(
                        "worker_ping_timeout",
                        document_id=life.document_id,
                        agent_id=life.agent_id,
                        pid=worker.pid,
                    )
                    self._unhealthy(life, f"no pong within {timeout:g} s")
                return

    def _unhealthy(self, life: AgentLife, reason: str) -> None:
        self._dispatch(
            self.supervisor.worker_unhealthy(life.document_id, life.agent_id, reason, monotonic())
        )

    def _on_message(self, life: AgentLife, worker: WorkerProcess, message: WorkerMessage) -> None:
        agent = life.agent_id
        if isinstance(message, Metrics):
            life.last_metrics = message
            self.writer.add_metrics(
                agent,
                memory_mb=message.memory_mb,
                pss_mb=message.pss_mb,
                uss_mb=message.uss_mb,
                cpu_percent=message.cpu_percent,
                websocket_latency_ms=message.websocket_latency_ms,
                llm_response_time_ms=message.llm_response_time_ms,
            )
        elif isinstance(message, LlmCall):
            self.writer.count(agent, llm_calls=1)
            self._observer.llm_call(message.response_time_ms, message.ok)
        elif isinstance(message, LocationMarked):
            self.writer.count(agent, locations_marked=1)
            self._observer.location_marked()
        elif isinstance(message, Activity):
            self.writer.count(agent, at=datetime.now(UTC))
            actions = self.supervisor.worker_activity(
                life.document_id, agent, message.kind, monotonic()
            )
            if message.kind == "abandoned":
                log.info("document_abandoned", document_id=life.document_id, agent_id=agent)
            elif message.kind == "fenced":
                log.warning("agent_fenced", document_id=life.document_id, agent_id=agent)
                self._observer.agent_fenced(life)
            self._dispatch(actions)
        elif isinstance(message, Connected):
            log.info(
                "worker_connected",
                document_id=life.document_id,
                agent_id=agent,
                pid=worker.pid,
                sync_ms=round(message.sync_ms, 1),
            )
            if life.stop_reason is None:
                self.writer.set_status(agent, "active", pid=worker.pid)
            self._dispatch(self.supervisor.worker_connected(life.document_id, agent, monotonic()))
            self._observer.worker_connected(life)
        elif isinstance(message, ErrorReport):
            log.warning(
                "worker_reported_error",
                document_id=life.document_id,
                agent_id=agent,
                message=message.message[:300],
                fatal=message.fatal,
            )
            self.supervisor.worker_error(life.document_id, agent, message.message)
