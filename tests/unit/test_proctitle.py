"""Process titles carry ids shortened and printable."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from manager.ops.proctitle import MAX_ID_CHARS, printable_id, worker_title


def test_plain_ids_are_kept() -> None:
    assert worker_title("trip-1", "agent-42") == "docagents worker trip-1 (agent-42)"
    assert printable_id("Notes from Zürich 2026") == "Notes from Zürich 2026"


def test_control_and_format_characters_are_replaced() -> None:
    assert printable_id("a\nb\x1b[31mc\u202ed\x00e\tf") == "a?b?[31mc?d?e?f"


def test_long_ids_keep_their_start_and_end() -> None:
    shown = printable_id("x" * 30 + "-middle-" + "y" * 30)
    assert len(shown) == MAX_ID_CHARS
    assert shown.startswith("x" * 19) and shown.endswith("y" * 20) and "…" in shown


@given(st.text(max_size=600))
def test_any_id_gives_one_printable_bounded_line(value: str) -> None:
    shown = printable_id(value)
    assert len(shown) <= MAX_ID_CHARS
    assert shown.isprintable() or all(ch.isprintable() or ch == " " for ch in shown)
