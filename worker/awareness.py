"""The agent's Y.js awareness state, and the other clients' states it receives.

:class:`AgentAwareness` wraps :class:`pycrdt.Awareness`: it publishes the agent's
state (``type: "agent"``, shown as "AI Agent" in editors), which pycrdt renews every
3 s and y-websocket peers keep for 30 s, encodes the updates the connection sends,
applies the ones it receives, and lists the humans among the other clients (for the
abandonment fallback on third-party servers; with our docserver, who is present is
the docserver's decision, not the worker's). A human is another client with a
non-empty state that is not an agent: editors publish ``user``/``cursor`` fields,
while servers (the pycrdt-websocket room publishes ``{}``) and headless tools
publish nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pycrdt import Awareness, Doc

__all__ = ["AGENT_STATE", "AgentAwareness", "is_human"]

AGENT_STATE: dict[str, Any] = {
    "user": {"name": "AI Agent", "color": "#7c3aed"},
    "type": "agent",
}


def is_human(state: Mapping[str, Any] | None) -> bool:
    """Whether an awareness state is a person's (non-empty, not an agent's)."""
    return bool(state) and state is not None and state.get("type") != "agent"


class AgentAwareness:
    """This agent's awareness state and what it knows of the other clients'."""

    def __init__(self, doc: Doc, *, outdated_timeout_ms: int = 30_000) -> None:
        self.awareness = Awareness(doc, outdated_timeout=outdated_timeout_ms)
        self.awareness.set_local_state(dict(AGENT_STATE))

    @property
    def client_id(self) -> int:
        return self.awareness.client_id

    def humans(self) -> list[int]:
        """Client ids of the humans currently present."""
        return [
            client_id
            for client_id, state in self.awareness.states.items()
            if client_id != self.client_id and is_human(state)
        ]

    def local_update(self) -> bytes:
        """The encoded awareness update carrying our own state (or its removal)."""
        return self.awareness.encode_awareness_update([self.client_id])

    def full_update(self) -> bytes:
        """All known states (the answer to a y-websocket awareness query)."""
        ids = [self.client_id, *(c for c in self.awareness.states if c != self.client_id)]
        return self.awareness.encode_awareness_update(ids)

    def apply_remote(self, update: bytes) -> None:
        self.awareness.apply_awareness_update(update, "remote")

    def forget_remote(self) -> None:
        """Drop every remote state (the connection is gone, as y-websocket does)."""
        others = [c for c in self.awareness.states if c != self.client_id]
        if others:
            self.awareness.remove_awareness_states(others, "connection_closed")

    def leave(self) -> None:
        """Publish the null state (observers of local updates send it)."""
        self.awareness.set_local_state(None)

    def on_local_update(self, callback: Callable[[], None]) -> str:
        """Call ``callback`` whenever our own state is set or renewed."""

        def observer(topic: str, changes: tuple[dict[str, Any], Any]) -> None:
            if topic == "update" and changes[1] == "local":
                callback()

        return self.awareness.observe(observer)
