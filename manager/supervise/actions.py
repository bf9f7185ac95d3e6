"""What the supervisor asks the daemon to do, and why a life ends.

The decision core returns these records; the shells carry them out
(:mod:`manager.supervise.lives` for :class:`Claim`, :class:`Spawn`, :class:`Stop`
and :class:`Kill`, the store writer for :class:`EndLife`). Pure data: no I/O,
standard library only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Action", "Claim", "EndLife", "EndReason", "Kill", "Spawn", "Stop"]


class EndReason(enum.StrEnum):
    """Why an agent life ended: the first word of ``agent_connections.error_message``.

    A reason is written as the code alone or as ``"<code>: <details>"``
    (``docs/lifecycle.md``, "End reasons"; ``agent_lifetimes.end_reason`` reads
    the code back).
    """

    IDLE = "idle"  # the docserver wrote 'idle': everyone left
    EVICTED = "evicted"  # its slot went to a more recent document
    CRASHED = "crashed"  # exited unasked (or killed as unhealthy); restarted after a backoff
    CRASH_LOOP = "crash_loop"  # too many crashes: status 'error', blocked until the next visit
    MANAGER_SHUTDOWN = "manager_shutdown"  # its manager stopped
    MANAGER_RESTARTED = "manager_restarted"  # its manager died; ended by the next one's recovery
    OWNED_ELSEWHERE = "owned_elsewhere"  # its row was ended by someone else; the worker stopped
    ABANDONED = "abandoned"  # a third-party server's fallback: nobody seen for a long time
    #: written by the database (claim_document, sweep_expired_leases), never by a supervisor
    MANAGER_LEASE_EXPIRED = "manager_lease_expired"
    #: its manager drained (SIGUSR2, `docagents drain`, SIGTERM beside other managers)
    DRAINED = "drained"


@dataclass(frozen=True, slots=True)
class EndLife:
    """End the agent life's row: ``status`` is 'disconnected' or 'error'."""

    document_id: str
    agent_id: str
    status: str
    reason: str

    @property
    def code(self) -> str:
        """The reason's code (its text before the first ``:``)."""
        return self.reason.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class Claim:
    """Claim the document for a new agent life (``agent_connections`` row).

    ``supersedes``: this manager's previous life of the document, to end in the
    same statement if its end has not been written yet (it carries the real
    reason, so whichever write comes first records the same end).
    """

    document_id: str
    agent_id: str
    supersedes: EndLife | None = None


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start the worker process of a claimed life (``restart``: after a crash)."""

    document_id: str
    agent_id: str
    restart: bool = False


@dataclass(frozen=True, slots=True)
class Stop:
    """Detach gracefully: 'detaching', shutdown message, grace, SIGTERM, SIGKILL."""

    document_id: str
    agent_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Kill:
    """Kill the worker now (unhealthy); its exit is then handled as a crash."""

    document_id: str
    agent_id: str
    reason: str


Action = Claim | Spawn | Stop | Kill | EndLife
