"""The extraction memory, end to end: never pay twice for a sentence, never drop one.

Real docserver process, real managers (child processes, or in-process where a test
reads the daemon's counters), real forkserver workers with the LLM extractor, real
Postgres; the OpenAI-compatible double answers from the sentences it gets and
records every sentence sent.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from docserver_support import AGENT_TOKEN, DocserverProcess, free_port
from manager_support import running_manager, start_manager, type_chars
from psycopg.rows import dict_row
from ywebsocket_server import HumanClient

from manager.config import Settings
from manager.workers.forkserver import PRELOAD_LLM_VAR
from manager.workers.launcher import WorkerLauncher
from tests.integration.openai_double import OpenAIDouble, Reply, answer_from, serve
from worker.memory import result_key

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

KNOWN = {
    "Lisbon": (38.72, -9.14),
    "Porto": (41.15, -8.61),
    "Oslo": (59.91, 10.75),
    "Rome": (41.9, 12.5),
    "Paris": (48.85, 2.35),
    "Gimmelwald": (46.55, 7.89),
}
FIVE = [
    "We flew to Lisbon.",
    "Then we took the train to Porto.",
    "It rained all week.",
    "Our friends live in Oslo.",
    "Next year we go to Rome.",
]


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
async def launcher(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Workers from a template with the OpenAI client preloaded, as `docagents manager`
    starts them with EXTRACTOR=llm (else each worker imports it at start, a second or
    more of CPU on a busy machine, while its pings wait)."""
    monkeypatch.delenv(PRELOAD_LLM_VAR, raising=False)  # restored after the test
    launcher = WorkerLauncher(preload_llm=True)
    await anyio.to_thread.run_sync(launcher.warm_up)
    try:
        yield launcher
    finally:
        launcher.kill_all()


async def until(predicate: Any, within: float = 30.0) -> Any:
    with anyio.fail_after(within):
        while not (value := predicate()):  # noqa: ASYNC110 (polling the database)
            await anyio.sleep(0.05)
    return value


def cache_hits(db: psycopg.Connection[dict[str, Any]], document_id: str) -> int:
    row = db.execute(
        "SELECT coalesce(sum(cache_hits), 0) AS n FROM extraction_usage_hourly"
        " WHERE document_id = %s",
        (document_id,),
    ).fetchone()
    assert row is not None
    return int(row["n"])


def memory_rows(db: psycopg.Connection[dict[str, Any]], document_id: str) -> dict[str, str]:
    rows = db.execute(
        "SELECT sentence_key, status FROM extraction_memory WHERE document_id = %s",
        (document_id,),
    ).fetchall()
    return {row["sentence_key"]: row["status"] for row in rows}


def live_row(db: psycopg.Connection[dict[str, Any]], document_id: str) -> dict[str, Any] | None:
    return db.execute(
        "SELECT agent_id, agent_pid, manager_id FROM agent_connections"
        " WHERE document_id = %s AND status = 'active'",
        (document_id,),
    ).fetchone()


def manager_env(database_url: str, docserver: DocserverProcess, llm_url: str, **extra: str):
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DOCAGENTS_HOME": str(docserver.home / "manager-home"),
        "MANAGER_ID": "memory-a",
        "WS_PORT": str(docserver.port),
        "DOCSERVER_AGENT_TOKEN": AGENT_TOKEN,
        "EXTRACTOR": "llm",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": llm_url,
        "LLM_MODEL": "test-model",
        "PING_INTERVAL_S": "0.5",
        "PING_TIMEOUT_S": "5",
        "DETACH_GRACE_S": "3",
        "FLUSH_INTERVAL_S": "0.1",
        "MIN_RESIDENCY_S": "0",
        "RESTART_BACKOFF_MIN_S": "0.2",
        "SENTENCE_DEBOUNCE_MS": "50",
        "LOG_FORMAT": "json",
    }
    env.update(extra)
    return env


async def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    with anyio.fail_after(20):
        while proc.poll() is None:  # noqa: ASYNC110
            await anyio.sleep(0.05)


async def test_a_document_reopened_restarted_or_moved_sends_nothing_again(
    database_url: str, db: psycopg.Connection[dict[str, Any]], tmp_path: Path
) -> None:
    doc = "trip-memory"
    docserver = DocserverProcess(tmp_path / "docserver", database_url, idle_timeout_ms=300)
    await docserver.start()
    managers: list[subprocess.Popen[bytes]] = []
    try:
        async with serve(OpenAIDouble([], answer=answer_from(KNOWN))) as llm:
            env = manager_env(database_url, docserver, llm.base_url)
            managers.append(start_manager(env, tmp_path, "manager-a"))
            ann = HumanClient(docserver.ws_url(doc))
            async with ann.connected():
                for sentence in FIVE:
                    (run,) = ann.add_paragraph("")
                    type_chars(run, sentence + " ")
                await ann.wait_for(lambda: len(ann.marks()) == 4, within=30)
                await until(lambda: len(memory_rows(db, doc)) == 5)
            sent = list(llm.sentences)
            assert sorted(set(sent)) == sorted(FIVE) and len(sent) == len(FIVE)
            assert set(memory_rows(db, doc).values()) == {"done"}
            assert set(memory_rows(db, doc)) == {result_key(s) for s in FIVE}
            # Everyone left: the agent detaches after the docserver's grace.
            await until(lambda: live_row(db, doc) is None)

            bob = HumanClient(docserver.ws_url(doc), name="Bob")
            async with bob.connected():
                # 1. Reopened: a new life, every sentence from memory.
                await until(lambda: cache_hits(db, doc) == 5)
                # 2. The worker killed (-9): the restarted life pays nothing either.
                first = await until(lambda: live_row(db, doc))
                os.kill(first["agent_pid"], signal.SIGKILL)
                await until(lambda: cache_hits(db, doc) == 10)
                # 3. The manager killed (-9) and started again (`docagents up` again).
                await stop(managers[-1], signal.SIGKILL)
                managers.append(start_manager(env, tmp_path, "manager-a2"))
                await until(lambda: cache_hits(db, doc) == 15, within=60)
                # 4. The document moves to another manager.
                await stop(managers[-1])
                other = {**env, "MANAGER_ID": "memory-b", "DOCAGENTS_HOME": str(tmp_path / "b")}
                managers.append(start_manager(other, tmp_path, "manager-b"))
                await until(lambda: cache_hits(db, doc) == 20, within=60)
                moved = await until(lambda: live_row(db, doc))
                assert moved["manager_id"] == "memory-b"
                assert len(bob.marks()) == 4
                assert sorted(bob.marked_texts()) == ["Lisbon", "Oslo", "Porto", "Rome"]
            assert llm.sentences == sent  # not one sentence sent again
    finally:
        for proc in managers:
            if proc.poll() is None:
                await stop(proc)
        await docserver.stop()


def _settings(docserver: DocserverProcess, llm_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": None,
        "supabase_url": None,
        "supabase_service_key": None,
        "manager_id": "memory-in-process",
        "ws_port": docserver.port,
        "docserver_agent_token": AGENT_TOKEN,
        "extractor": "llm",
        "openai_api_key": "sk-test",
        "openai_base_url": llm_url,
        "llm_model": "test-model",
        "llm_timeout_s": 2.0,
        "idle_timeout_ms": 10_000,
        "sentence_debounce_ms": 50,
        "flush_interval_s": 0.1,
        "ping_interval_s": 0.5,
        "ping_timeout_s": 5.0,
        "detach_grace_s": 3.0,
        "stats_interval_s": 3600.0,
        "metrics_port": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def test_every_occurrence_is_marked_and_each_text_is_paid_once(
    database_url: str, tmp_path: Path, launcher: WorkerLauncher
) -> None:
    docserver = DocserverProcess(tmp_path / "docserver", database_url, idle_timeout_ms=5000)
    await docserver.start()
    try:
        llm = OpenAIDouble([], answer=answer_from(KNOWN))
        async with (
            serve(llm),
            running_manager(_settings(docserver, llm.base_url), database_url, launcher),
        ):
            ann = HumanClient(docserver.ws_url("occurrences"))
            async with ann.connected():
                (first,) = ann.add_paragraph("")
                type_chars(first, "We stayed in Paris. ")
                await ann.wait_for(lambda: ann.marked_texts() == ["Paris"], within=30)
                # The same sentence in another paragraph: marked too, not paid again.
                (second,) = ann.add_paragraph("")
                type_chars(second, "We stayed in Paris. ")
                await ann.wait_for(lambda: ann.marked_texts() == ["Paris"] * 2, within=30)
                # A marked sentence deleted and typed again: marked again, for free.
                del first[0 : len(first)]
                await ann.wait_for(lambda: ann.marked_texts() == ["Paris"], within=10)
                type_chars(first, "We stayed in Paris. ")
                await ann.wait_for(lambda: ann.marked_texts() == ["Paris"] * 2, within=30)
                # One paragraph saying it twice: two occurrences, one sentence sent.
                (third,) = ann.add_paragraph("")
                type_chars(third, "Go to Rome. Go to Rome. ")
                await ann.wait_for(lambda: ann.marked_texts().count("Rome") == 2, within=30)
            assert llm.sentences.count("We stayed in Paris.") == 1
            assert llm.sentences.count("Go to Rome.") == 1
    finally:
        await docserver.stop()


async def test_failures_are_retried_and_the_gazetteer_marks_meanwhile(
    database_url: str,
    db: psycopg.Connection[dict[str, Any]],
    tmp_path: Path,
    launcher: WorkerLauncher,
) -> None:
    doc = "flaky-model"
    sentence = "Our friends live in Oslo and Gimmelwald."
    docserver = DocserverProcess(tmp_path / "docserver", database_url, idle_timeout_ms=5000)
    await docserver.start()
    failing = Reply(status=500, headers={"retry-after": "0"})
    try:
        async with serve(OpenAIDouble([failing] * 3, answer=answer_from(KNOWN))) as llm:
            settings = _settings(docserver, llm.base_url, llm_max_retries=1)
            async with running_manager(settings, database_url, launcher):
                ann = HumanClient(docserver.ws_url(doc))
                async with ann.connected():
                    (run,) = ann.add_paragraph("")
                    type_chars(run, sentence + " ")
                    # Meanwhile (the model failing): the offline gazetteer's mark.
                    await ann.wait_for(lambda: "Oslo" in ann.marked_texts(), within=30)
                    oslo = dict(ann.marks())["Oslo"]
                    assert oslo["coordSource"] == "gazetteer"
                    # Three 500s, then healthy: the model's pass adds what it found.
                    await ann.wait_for(lambda: "Gimmelwald" in ann.marked_texts(), within=30)
                    assert dict(ann.marks())["Gimmelwald"]["coordSource"] == "llm"
                await until(lambda: memory_rows(db, doc) == {result_key(sentence): "done"})
                assert len(llm.requests) == 4
                failures = db.execute(
                    "SELECT sum(failures) AS n FROM extraction_usage_hourly WHERE document_id = %s",
                    (doc,),
                ).fetchone()
                assert failures is not None and failures["n"] == 1  # one sentence, one failed try
    finally:
        await docserver.stop()


async def test_a_refused_batch_is_split_and_only_the_offending_sentence_given_up(
    database_url: str,
    db: psycopg.Connection[dict[str, Any]],
    tmp_path: Path,
    launcher: WorkerLauncher,
) -> None:
    doc = "refusals"
    good = answer_from(KNOWN)

    def answer(sentences: list[str]) -> Reply:
        if any("forbidden" in s for s in sentences):
            return Reply(status=400)
        return good(sentences)

    poison = "This forbidden sentence names Porto."
    docserver = DocserverProcess(tmp_path / "docserver", database_url, idle_timeout_ms=5000)
    await docserver.start()
    try:
        llm = OpenAIDouble([], answer=answer)
        async with (
            serve(llm),
            running_manager(_settings(docserver, llm.base_url), database_url, launcher) as daemon,
        ):
            ann = HumanClient(docserver.ws_url(doc))
            async with ann.connected():
                ann.add_paragraph(f"We flew to Lisbon. {poison} Then Rome. ")
                await ann.wait_for(
                    lambda: sorted(ann.marked_texts()) == ["Lisbon", "Porto", "Rome"],
                    within=30,
                )
                # The given-up sentence still has the gazetteer's mark.
                assert dict(ann.marks())["Porto"]["coordSource"] == "gazetteer"
                await until(lambda: len(memory_rows(db, doc)) == 3)
            assert memory_rows(db, doc) == {
                result_key("We flew to Lisbon."): "done",
                result_key(poison): "failed",
                result_key("Then Rome."): "done",
            }
            sizes = [len(OpenAIDouble.sentences_of(r)) for r in llm.requests]
            assert sizes == [3, 1, 1, 1]
            assert daemon.metrics is not None
            registry = daemon.metrics.registry
            given_up = registry.get_sample_value("docagents_llm_sentences_given_up_total")
            failed = registry.get_sample_value("docagents_llm_sentences_failed_total")
            assert given_up == 1 and failed == 4  # the batch of three, then the one
    finally:
        await docserver.stop()


async def test_with_the_model_unreachable_the_gazetteer_still_marks(
    database_url: str, tmp_path: Path, launcher: WorkerLauncher
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    docserver = DocserverProcess(tmp_path / "docserver", database_url, idle_timeout_ms=5000)
    await docserver.start()
    try:
        settings = _settings(docserver, closed, llm_max_retries=0)
        async with running_manager(settings, database_url, launcher):
            ann = HumanClient(docserver.ws_url("no-model"))
            async with ann.connected():
                (run,) = ann.add_paragraph("")
                type_chars(run, "Next spring we fly from Lisbon to Oslo. ")
                await ann.wait_for(lambda: sorted(ann.marked_texts()) == ["Lisbon", "Oslo"])
                assert {attrs["coordSource"] for _, attrs in ann.marks()} == {"gazetteer"}
    finally:
        await docserver.stop()


async def test_a_long_document_goes_out_in_bounded_batches_and_typing_goes_first(
    database_url: str, tmp_path: Path, launcher: WorkerLauncher
) -> None:
    names = list(KNOWN)
    docserver = DocserverProcess(tmp_path / "docserver", database_url, idle_timeout_ms=5000)
    await docserver.start()
    try:
        answer = answer_from(KNOWN)

        def slow(sentences: list[str]) -> Reply:
            reply = answer(sentences)
            reply.delay_s = 0.05
            return reply

        async with serve(OpenAIDouble([], answer=slow)) as llm:
            settings = _settings(
                docserver,
                llm.base_url,
                llm_batch_max_sentences=25,
                llm_batch_max_chars=1500,
                llm_max_calls_per_minute=10_000,
            )
            ann = HumanClient(docserver.ws_url("long-doc"))
            async with ann.connected():
                with ann.doc.transaction():
                    for p in range(200):
                        ann.add_paragraph(
                            " ".join(
                                f"Day {p * 10 + i} of the trip was spent in {names[i % 6]}."
                                for i in range(10)
                            )
                        )
                async with running_manager(settings, database_url, launcher):
                    await until(lambda: len(llm.requests) >= 3)
                    (run,) = ann.add_paragraph("")
                    typed = "Typed now: a day trip to Gimmelwald."
                    type_chars(run, typed + " ")
                    await ann.wait_for(
                        lambda: any(attrs and "geoMark" in attrs for _, attrs in run.diff()),
                        within=60,
                    )
                    typed_at = next(
                        i
                        for i, r in enumerate(llm.requests)
                        if typed in OpenAIDouble.sentences_of(r)
                    )
                    await ann.wait_for(lambda: len(ann.marks()) == 2001, within=120)
            for request in llm.requests:
                sentences = OpenAIDouble.sentences_of(request)
                assert len(sentences) <= 25
                assert sum(len(s) for s in sentences) <= 1500
            assert len(llm.sentences) == len(set(llm.sentences)) == 2001
            # Typing did not wait for the first pass to end.
            assert typed_at < len(llm.requests) - 10
    finally:
        await docserver.stop()
