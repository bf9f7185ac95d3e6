"""The row audit: are this manager's working lives still its own in the database?

A row ended by someone else (an operator, another manager taking the document
over) means this worker must go. The audit reads this manager's live rows every
``poll_interval_s`` (and at once after the lease is regained) and hands them to
:meth:`~manager.supervise.supervisor.Supervisor.rows_audited`, which decides;
the actions go to the daemon's dispatch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio
import structlog

from manager.errors import StoreError
from manager.store.base import Store
from manager.supervise.lives import monotonic
from manager.supervise.supervisor import Action, Supervisor

__all__ = ["RowAudit"]

log = structlog.get_logger(__name__)


class RowAudit:
    """Checks this manager's working lives against its live rows, on a timer or on demand."""

    def __init__(
        self,
        store: Store,
        supervisor: Supervisor,
        *,
        manager_id: str,
        interval_s: float,
        dispatch: Callable[[Sequence[Action]], None],
    ) -> None:
        self.store = store
        self.supervisor = supervisor
        self.manager_id = manager_id
        self.interval_s = interval_s
        self._dispatch = dispatch
        self._now = anyio.Event()

    def soon(self) -> None:
        """Audit at once instead of at the next tick (the lease was regained)."""
        self._now.set()

    async def run(self) -> None:
        while True:
            with anyio.move_on_after(self.interval_s):
                await self._now.wait()
            self._now = anyio.Event()
            checked = self.supervisor.working_lives()
            if not checked:
                continue
            try:
                rows = await self.store.live_agents_of_manager(self.manager_id)
            except StoreError as exc:
                log.debug("row_audit_skipped", error=str(exc))
                continue
            live = {row.agent_id for row in rows}
            actions = self.supervisor.rows_audited(checked, live, monotonic())
            for action in actions:
                log.warning(
                    "agent_row_ended_elsewhere",
                    document_id=action.document_id,
                    agent_id=action.agent_id,
                )
            if actions:
                self._dispatch(actions)
