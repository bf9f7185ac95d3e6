"""Who may speak for an awareness client id (pure; issue 14 #2, issue 17)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from docserver.awareness import TOMBSTONES, AwarenessOwners
from docserver.messages import AwarenessEntry, encode_awareness_message, inspect_message


@dataclass(frozen=True)
class E:
    client_id: int
    clock: int
    present: bool = True
    claims_agent: bool = False


AGENT, ANN, BOB, MALLORY = "agent-conn", "ann-conn", "bob-conn", "mallory-conn"


def test_the_first_connection_to_set_an_id_owns_it() -> None:
    owners = AwarenessOwners()
    assert owners.accept(AGENT, [E(7, 1)], agent=True) == [E(7, 1)]
    assert owners.owner_of(7) == AGENT
    # Ann's client re-sends the agent's state (y-websocket relays what it receives).
    assert owners.accept(ANN, [E(7, 1), E(1, 3)], agent=False) == [E(1, 3)]
    assert owners.owner_of(7) == AGENT and owners.owner_of(1) == ANN


def test_nobody_else_removes_or_overwrites_the_agents_state() -> None:
    owners = AwarenessOwners()
    owners.accept(AGENT, [E(7, 4)], agent=True)
    assert owners.accept(MALLORY, [E(7, 5, present=False)], agent=False) == []  # forged removal
    assert owners.accept(MALLORY, [E(7, 99)], agent=False) == []  # fake "AI Agent"
    assert owners.accept(BOB, [E(7, 4, present=False)], agent=False) == []  # timeout relay
    assert owners.owner_of(7) == AGENT
    assert owners.accept(AGENT, [E(7, 5, present=False)], agent=True) == [E(7, 5, False)]
    assert owners.owner_of(7) is None


def test_leaving_releases_only_the_ids_a_connection_introduced() -> None:
    owners = AwarenessOwners()
    owners.accept(AGENT, [E(7, 1)], agent=True)
    owners.accept(ANN, [E(1, 1), E(7, 1)], agent=False)
    assert owners.release(ANN) == {1}
    assert owners.owner_of(7) == AGENT


def test_a_late_copy_of_a_removed_state_does_not_return() -> None:
    owners = AwarenessOwners()
    owners.accept(ANN, [E(1, 3)], agent=False)
    owners.release(ANN)
    assert owners.accept(BOB, [E(1, 3)], agent=False) == []  # Bob relays a stale copy
    # Ann's client comes back with a newer clock: it is hers again.
    assert owners.accept(ANN, [E(1, 4)], agent=False) == [E(1, 4)]


def test_a_person_reconnecting_takes_their_id_back_with_a_newer_clock() -> None:
    """A network blip: the old socket is not noticed dead yet; the client's new
    connection renews its own state (clock + 1). An agent's id is never taken."""
    owners = AwarenessOwners()
    owners.accept("ann-old", [E(1, 5)], agent=False)
    assert owners.accept("ann-new", [E(1, 5)], agent=False) == []  # a re-sent copy
    assert owners.accept("ann-new", [E(1, 6)], agent=False) == [E(1, 6)]
    assert owners.release("ann-old") == set()  # no longer hers to remove
    owners.accept(AGENT, [E(7, 1)], agent=True)
    assert owners.accept(MALLORY, [E(7, 100)], agent=False) == []


def test_removed_ids_are_remembered_within_a_bound() -> None:
    owners = AwarenessOwners()
    for n in range(TOMBSTONES + 10):
        owners.accept(ANN, [E(n, 1)], agent=False)
    owners.release(ANN)
    assert len(owners._released) == TOMBSTONES


def test_a_filtered_message_is_re_encoded_exactly() -> None:
    entries = [
        AwarenessEntry(7, 4, True, 16, b'{"type":"agent"}', claims_agent=True),
        AwarenessEntry(300, 2, False, 4, b"null"),
    ]
    message = encode_awareness_message(entries)
    assert inspect_message(message).awareness == entries


@given(
    st.lists(
        st.tuples(
            st.sampled_from([AGENT, ANN, BOB]),
            st.integers(0, 3),
            st.integers(0, 6),
            st.booleans(),
            st.booleans(),
        ),
        max_size=60,
    )
)
def test_an_agents_state_is_only_ever_changed_by_the_agent(
    history: list[tuple[str, int, int, bool, bool]],
) -> None:
    owners = AwarenessOwners()
    owners.accept(AGENT, [E(0, 0, claims_agent=True)], agent=True)
    for who, client_id, clock, present, claims in history:
        held_by_agent = owners.owner_of(client_id) == AGENT
        entry = E(client_id, clock, present, claims_agent=claims)
        accepted = owners.accept(who, [entry], agent=who == AGENT)
        if who != AGENT and (held_by_agent or claims):
            assert accepted == []
        owner = owners.owner_of(client_id)
        assert owner is None or client_id in owners.ids_of(owner)
