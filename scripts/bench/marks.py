"""Typed period -> geoMark visible to another client.

A human client (pycrdt over the docserver, like an editor) opens a document; the
docserver writes 'active', the manager attaches an agent. For each sentence the
client types "On day <n> we went to <City>" one character per transaction (every
sentence differs: a worker extracts a sentence text once), waits past the
debounce (so that part is extracted, with nothing finished), then types the '.'.
Latency = the '.' transaction -> the client sees the new geoMark.

Variants: the default settings (300 ms debounce for keystrokes, a typed sentence
terminator extracted at once) and the debounce alone (``SENTENCE_END_DEBOUNCE_MS=-1``,
the behaviour before), with the gazetteer and with the LLM extractor against a
local OpenAI-compatible double (a process of its own) that answers after 200 ms.
Overhead = latency - the configured delay (- 200 ms for the LLM). Floor: the same
'.' seen by a second client (the docserver's relay round trip).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from openai_double import places, serve_process
from ywebsocket_server import HumanClient

from scripts.bench.stack import Stack, summary

CITIES = [
    "Lisbon",
    "Copenhagen",
    "Oslo",
    "Paris",
    "Berlin",
    "Madrid",
    "Rome",
    "Vienna",
    "Prague",
    "Dublin",
    "Warsaw",
    "Budapest",
    "Athens",
    "Helsinki",
    "Stockholm",
    "Amsterdam",
    "Brussels",
    "Zurich",
    "Munich",
    "Hamburg",
    "Milan",
    "Naples",
    "Seville",
    "Porto",
    "Krakow",
    "Tokyo",
    "Osaka",
    "Toronto",
    "Chicago",
    "Boston",
]
LLM_S = 0.2


def type_chars(run: Any, text: str) -> None:
    offset = len(run)
    for ch in text:
        run.insert(offset, ch)
        offset += len(ch.encode())


def _last_run(client: HumanClient) -> Any:
    paragraphs = client.fragment.children
    return paragraphs[len(paragraphs) - 1].children[0]


def _plain(run: Any) -> str:
    return "".join(chunk for chunk, _ in run.diff() if isinstance(chunk, str))


def _marked(run: Any) -> bool:
    return any(attrs and "geoMark" in attrs for _, attrs in run.diff())


async def _sentences(
    stack: Stack, settings: Any, doc: str, n: int, quiet_s: float
) -> dict[str, Any]:
    assert stack.docserver is not None
    marks_ms: list[float] = []
    relay_ms: list[float] = []
    async with stack.manager(settings) as run:
        ann = HumanClient(stack.docserver.ws_url(doc))
        bob = HumanClient(stack.docserver.ws_url(doc), name="Bob")
        async with ann.connected(), bob.connected():
            await run.wait_connected([doc], within=30)
            await anyio.sleep(0.3)
            for i in range(n):
                city = CITIES[i % len(CITIES)]
                (text_run,) = ann.add_paragraph("")
                type_chars(text_run, f"On day {i + 1} we went to {city}")
                await anyio.sleep(quiet_s)
                # Both clients look at this paragraph only, as an editor's binding
                # does: a check that read the whole document (100 paragraphs) took
                # milliseconds of this process on every change, inside the figure.
                bob_run = _last_run(bob)
                want = _plain(bob_run) + "."
                type_chars(text_run, ".")
                typed = time.perf_counter()
                async with anyio.create_task_group() as tg:

                    async def relay(
                        run: Any = bob_run, want: str = want, at: float = typed
                    ) -> None:
                        await bob.wait_for(lambda: _plain(run) == want, within=10)
                        relay_ms.append((time.perf_counter() - at) * 1000)

                    tg.start_soon(relay)
                    await ann.wait_for(lambda run=text_run: _marked(run), within=20)
                    marks_ms.append((time.perf_counter() - typed) * 1000)
        # The docserver writes 'idle' only after its (long) grace: say it now, so the
        # next variant's manager does not attach this document too.
        stack.events([doc], "idle")
        await run.wait_running(0, within=30)
    return {
        "period_to_mark_ms": {**summary(marks_ms), "samples": marks_ms},
        "floor_relay_ms": summary(relay_ms),
    }


#: (name, settings overrides, the delay the settings put before extraction in ms)
GAZETTEER_VARIANTS = (
    ("gazetteer_default", {}, 0),  # debounce 300 ms, but a typed '.' is extracted at once
    ("gazetteer_debounce_only", {"sentence_end_debounce_ms": -1}, 300),  # the old behaviour
)
LLM_VARIANTS = (
    ("llm_default", {}, 0),
    ("llm_debounce_only", {"sentence_end_debounce_ms": -1}, 300),
)


async def run(stack: Stack, cfg: dict[str, Any]) -> dict[str, Any]:
    n = cfg["sentences"]
    out: dict[str, Any] = {}
    base = {"max_concurrent_agents": 5}
    for name, overrides, delay_ms in GAZETTEER_VARIANTS:
        settings = stack.settings(**base, **overrides)
        try:
            result = await _sentences(stack, settings, f"marks-{name}", n, quiet_s=0.6)
        except Exception as exc:  # a TimeoutError inside task groups
            out[name] = {"error": repr(exc)[:300]}
            continue
        lat = result["period_to_mark_ms"]
        result["delay_ms"] = delay_ms
        result["overhead_p50_ms"] = lat["p50"] - delay_ms
        result["overhead_p99_ms"] = lat["p99"] - delay_ms
        out[name] = result

    cities = [CITIES[i % len(CITIES)] for i in range(cfg["llm_sentences"])]
    script = [
        places({"sentence_index": 0, "text": c, "name": c, "lat": 10.0, "lng": 20.0})
        for c in cities
    ]
    for reply in script:
        reply.delay_s = LLM_S
    for name, overrides, delay_ms in LLM_VARIANTS:
        # In a process of its own, like a real model server: in this one its answers
        # would wait for the clients' and the manager's work.
        with serve_process(script) as base_url:
            settings = stack.settings(
                **base,
                **overrides,
                extractor="llm",
                openai_api_key="bench-key",
                openai_base_url=base_url,
                llm_max_calls_per_minute=10_000,
            )
            try:
                result = await _sentences(
                    stack, settings, f"marks-{name}", len(cities), quiet_s=0.6
                )
            except Exception as exc:  # a TimeoutError inside task groups
                out[name] = {"error": repr(exc)[:300]}
                continue
            lat = result["period_to_mark_ms"]
            result["delay_ms"] = delay_ms
            result["model_ms"] = LLM_S * 1000
            result["overhead_p50_ms"] = lat["p50"] - delay_ms - LLM_S * 1000
            result["overhead_p99_ms"] = lat["p99"] - delay_ms - LLM_S * 1000
            out[name] = result
    return out
