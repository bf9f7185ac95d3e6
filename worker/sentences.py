"""Finding finished sentences in a run of text (sans-IO).

A sentence is finished when it ends with '.', '!' or '?' (optionally several, and
optionally followed by closing quotes or brackets) and that terminator is followed
by whitespace or the end of the run. The tail of a run after the last terminator is
unfinished and is left alone until the writer ends it. Offsets are Python ``str``
indices; converting them to Y.js offsets is :mod:`worker.runs`' job.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.memory import result_key

__all__ = ["TERMINATORS", "SentenceSpan", "finished_sentences", "sentence_key"]

TERMINATORS = frozenset(".!?\u2026")
_TERMINATORS = TERMINATORS
_CLOSERS = frozenset("\"')]}\u00bb\u201d\u2019")


@dataclass(frozen=True, slots=True)
class SentenceSpan:
    """One finished sentence: ``text == run_text[start:end]``."""

    start: int
    end: int
    text: str


def finished_sentences(text: str) -> list[SentenceSpan]:
    """The finished sentences of ``text``, in order, without surrounding whitespace."""
    spans: list[SentenceSpan] = []
    start = 0
    i = 0
    n = len(text)
    while i < n:
        if text[i] not in _TERMINATORS:
            i += 1
            continue
        j = i + 1
        while j < n and text[j] in _TERMINATORS:
            j += 1
        while j < n and text[j] in _CLOSERS:
            j += 1
        if j == n or text[j].isspace():
            s = start
            while s < j and text[s].isspace():
                s += 1
            body = text[s:j]
            if any(ch.isalnum() for ch in body):
                spans.append(SentenceSpan(s, j, body))
            start = j
        i = j
    return spans


def sentence_key(text: str) -> str:
    """The key a sentence's result is remembered by (its normalised text's digest)."""
    return result_key(text)
