"""Extraction memory: what a reopen costs, and typing during a long first pass.

Both against the OpenAI-compatible double in a process of its own, answering from
the sentences it gets (the cities it knows) after ``LLM_S``; its ``/counts`` say how
many requests and sentences it saw.

- ``reopen``: a document of ``reopen_sentences`` sentences, extracted once (the first
  pass); everyone leaves, the agent detaches; the document is opened again. Model
  calls and sentences sent by the second life (target 0), and the time from its
  attach to its memory hits being stored.
- ``first_pass``: a document of ``first_pass_sentences`` sentences opened with the
  LLM extractor; while its first pass runs, a person types sentences; '.' -> mark
  latency, against the same typing in an empty document (target p99 <= 2x idle).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
from openai_double import serve_process
from ywebsocket_server import HumanClient

from scripts.bench.marks import CITIES, _marked, type_chars
from scripts.bench.stack import Stack, summary

LLM_S = 0.2
KNOWN = {city: (10.0, 20.0) for city in CITIES}


def _fill(client: HumanClient, n: int, tag: str) -> None:
    """``n`` distinct sentences, ten per paragraph, in one transaction."""
    with client.doc.transaction():
        for p in range(0, n, 10):
            client.add_paragraph(
                " ".join(
                    f"On {tag} day {i + 1} we stayed in {CITIES[i % len(CITIES)]}."
                    for i in range(p, min(n, p + 10))
                )
            )


async def _counts(base_url: str) -> dict[str, int]:
    async with httpx.AsyncClient() as http:
        counts: dict[str, int] = (await http.get(base_url + "/counts")).json()
        return counts


def _hits(stack: Stack, doc: str) -> int:
    rows = stack.query(
        "SELECT coalesce(sum(cache_hits), 0) FROM extraction_usage_hourly WHERE document_id = %s",
        (doc,),
    )
    return int(rows[0][0])


async def _until(predicate: Any, within: float) -> None:
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 (polling the database)
            await anyio.sleep(0.05)


async def _reopen(stack: Stack, settings: Any, base_url: str, n: int) -> dict[str, Any]:
    assert stack.docserver is not None
    doc = "memory-reopen"
    async with stack.manager(settings) as run:
        ann = HumanClient(stack.docserver.ws_url(doc))
        async with ann.connected():
            _fill(ann, n, "reopen")
            await run.wait_connected([doc], within=60)
            await ann.wait_for(lambda: len(ann.marks()) == n, within=300)
        first = await _counts(base_url)
        stack.events([doc], "idle")
        await run.wait_running(0, within=60)
        await anyio.sleep(1.0)  # the last reports stored
        hits_before = _hits(stack, doc)
        bob = HumanClient(stack.docserver.ws_url(doc), name="Bob")
        async with bob.connected():
            stack.events([doc], "active")
            reopened = time.perf_counter()
            await _until(lambda: _hits(stack, doc) >= hits_before + n, within=120)
            remembered_s = time.perf_counter() - reopened
            marks = len(bob.marks())
        second = await _counts(base_url)
        stack.events([doc], "idle")
        await run.wait_running(0, within=60)
    return {
        "sentences": n,
        "first_life": first,
        "reopen_model_calls": second["requests"] - first["requests"],
        "reopen_sentences_sent": second["sentences"] - first["sentences"],
        "reopen_memory_hits": _hits(stack, doc) - hits_before,
        "reopen_event_to_hits_stored_s": round(remembered_s, 3),
        "marks_after_reopen": marks,
    }


async def _typing(
    stack: Stack, settings: Any, doc: str, backlog: int, typed: int
) -> dict[str, Any]:
    assert stack.docserver is not None
    marks_ms: list[float] = []
    async with stack.manager(settings) as run:
        ann = HumanClient(stack.docserver.ws_url(doc))
        async with ann.connected():
            if backlog:
                _fill(ann, backlog, doc)
            await run.wait_connected([doc], within=60)
            await anyio.sleep(0.5)
            for i in range(typed):
                city = CITIES[(i * 7) % len(CITIES)]
                (text_run,) = ann.add_paragraph("")
                type_chars(text_run, f"Typed on {doc} day {i + 1}, a trip to {city}")
                await anyio.sleep(0.6)
                type_chars(text_run, ".")
                at = time.perf_counter()
                await ann.wait_for(lambda run=text_run: _marked(run), within=60)
                marks_ms.append((time.perf_counter() - at) * 1000)
            done_marks = len(ann.marks())
        stack.events([doc], "idle")
        await run.wait_running(0, within=60)
    return {
        "backlog_sentences": backlog,
        "marks_seen": done_marks,
        "period_to_mark_ms": {**summary(marks_ms), "samples": marks_ms},
    }


async def run(stack: Stack, cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"model_ms": LLM_S * 1000}
    with serve_process([], known=KNOWN, delay_s=LLM_S) as base_url:
        settings = stack.settings(
            max_concurrent_agents=5,
            extractor="llm",
            openai_api_key="bench-key",
            openai_base_url=base_url,
            llm_max_calls_per_minute=10_000,
            flush_interval_s=0.2,
        )
        out["reopen"] = await _reopen(stack, settings, base_url, cfg["reopen_sentences"])
        typed = cfg["first_pass_typed"]
        idle = await _typing(stack, settings, "memory-idle", 0, typed)
        busy = await _typing(stack, settings, "memory-busy", cfg["first_pass_sentences"], typed)
        counts = await _counts(base_url)
    out["typing_idle"] = idle
    out["typing_during_first_pass"] = busy
    out["largest_request"] = {k: counts[k] for k in ("max_sentences", "max_chars")}
    idle_p99 = idle["period_to_mark_ms"]["p99"]
    busy_p99 = busy["period_to_mark_ms"]["p99"]
    out["first_pass_p99_over_idle_p99"] = round(busy_p99 / idle_p99, 2) if idle_p99 else None
    return out
