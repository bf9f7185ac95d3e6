"""Fencing tokens per document (pure; DESIGN invariant 10)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from docserver.fencing import Fences


def test_lower_tokens_are_refused_higher_ones_retire_the_others() -> None:
    fences = Fences()
    assert fences.admit("d", 5)
    assert fences.retired("d", {"old": 5}) == []
    assert fences.admit("d", 7)
    assert fences.retired("d", {"old": 5, "new": 7}) == ["old"]
    assert not fences.admit("d", 5)  # the fenced life cannot come back
    assert fences.admit("d", 7)  # the same life reconnecting
    assert fences.admit("other", 1)  # documents are fenced apart


def test_the_remembered_floors_are_bounded() -> None:
    fences = Fences(remembered=3)
    for n in range(10):
        fences.admit(f"d{n}", n)
    assert fences.highest("d0") is None and fences.highest("d9") == 9


@given(st.lists(st.integers(0, 20), max_size=60))
def test_admitted_tokens_never_go_down(tokens: list[int]) -> None:
    fences = Fences()
    admitted: list[int] = []
    for token in tokens:
        if fences.admit("d", token):
            admitted.append(token)
    assert admitted == sorted(admitted)
    if admitted:
        assert fences.highest("d") == max(admitted)
