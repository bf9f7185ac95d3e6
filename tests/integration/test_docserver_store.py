"""The docserver's document store: a real SQLite file, real Y.js updates (pycrdt)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
from pycrdt import Doc, Text
from structlog.testing import capture_logs

from docserver.errors import DocumentStoreOpenFailed
from docserver.store import DocumentStore

pytestmark = pytest.mark.anyio


def _edits(count: int) -> tuple[list[bytes], str]:
    """``count`` updates of one document (one character each) and its final text."""
    doc = Doc()
    text = doc.get("t", type=Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    for i in range(count):
        text += chr(ord("a") + i % 26)
    return updates, str(text)


def _replay(updates: list[bytes]) -> str:
    doc = Doc()
    for update in updates:
        doc.apply_update(update)
    return str(doc.get("t", type=Text))


def _rows(path: Path, document_id: str) -> int:
    with sqlite3.connect(path) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM document_updates WHERE document_id = ?", (document_id,)
        ).fetchone()
    return int(count)


async def test_updates_survive_a_reopen_in_order(tmp_path: Path) -> None:
    path = tmp_path / "docs.sqlite3"
    updates, text = _edits(30)
    async with DocumentStore.open(path) as store:
        for update in updates:
            store.append("doc", update)
        store.append("other", _edits(1)[0][0])
    # closing wrote what was queued
    async with DocumentStore.open(path) as store:
        loaded = await store.load("doc")
        assert loaded == updates
        assert await store.load("missing") == []
    assert _replay(loaded) == text


async def test_a_long_history_is_squashed_into_one_update_on_load(tmp_path: Path) -> None:
    path = tmp_path / "docs.sqlite3"
    updates, text = _edits(250)
    few, few_text = _edits(5)
    async with DocumentStore.open(path, squash_above=200) as store:
        for update in updates:
            store.append("long", update)
        for update in few:
            store.append("short", update)
        squashed = await store.load("long")
        assert len(squashed) == 1
        assert _replay(squashed) == text
        assert await store.load("short") == few  # under the bound: as stored
        # appended after the squash: kept after it, in order
        more = Doc()
        more.apply_update(squashed[0])
        later: list[bytes] = []
        more.observe(lambda event: later.append(event.update))
        more.get("t", type=Text).insert(0, "!")
        store.append("long", later[0])
        again = await store.load("long")
    assert _rows(path, "long") == 2
    assert _rows(path, "short") == 5
    assert again == [squashed[0], later[0]]
    assert _replay(again) == "!" + text
    assert _replay(await _load_once(path, "short")) == few_text


async def _load_once(path: Path, document_id: str) -> list[bytes]:
    async with DocumentStore.open(path) as store:
        return await store.load(document_id)


@pytest.mark.slow
async def test_a_write_refused_by_a_lock_is_retried_and_loses_none(tmp_path: Path) -> None:
    path = tmp_path / "docs.sqlite3"
    updates, text = _edits(20)
    with capture_logs() as logs:
        async with DocumentStore.open(path) as store:
            await store.load("warm")  # the file and schema exist
            # Another process holds the write lock past SQLite's busy timeout (5 s).
            blocker = sqlite3.connect(path, isolation_level=None, timeout=0)
            blocker.execute("BEGIN EXCLUSIVE")
            try:
                for update in updates[:10]:
                    store.append("doc", update)
                with anyio.fail_after(20):
                    while not any(e["event"] == "document_store_write_failed" for e in logs):  # noqa: ASYNC110 (the captured log)
                        await anyio.sleep(0.05)
                for update in updates[10:]:  # queued behind the failed batch
                    store.append("doc", update)
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            with anyio.fail_after(30):
                loaded = await store.load("doc")  # waits for the queued writes first
    assert loaded == updates  # every update, in order, once
    assert _replay(loaded) == text
    assert _rows(path, "doc") == 20


async def test_a_store_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "docs.sqlite3").mkdir()  # a directory where the file should be
    with pytest.raises(
        DocumentStoreOpenFailed, match=r"cannot open the document store .*docs\.sqlite3"
    ):
        async with DocumentStore.open(tmp_path / "docs.sqlite3"):
            pass
