"""Process titles, so ``ps``/``top`` tell the docagents processes apart.

``docagents manager <manager id>``, ``docagents forkserver`` (the workers'
template), ``docagents warm`` (a pooled worker waiting for a document),
``docagents worker <document id> (<agent id>)``. Ids are data typed by whoever
opened the document: a title carries them shortened, with control and
formatting characters (a newline, an escape sequence, a bidi override)
replaced, so a title is one printable line whatever the id. A title longer
than the process's command line is cut at its length.
"""

from __future__ import annotations

import os
import unicodedata

# The title goes in the argv area only: by default setproctitle also takes over
# the environment's memory, and /proc/<pid>/environ then shows the title instead
# of the environment (the place to check that a worker holds no credentials).
os.environ.setdefault("SPT_NOENV", "1")

import setproctitle

__all__ = ["printable_id", "set_title", "worker_title"]

#: Longest id a title carries; longer ones keep their start and end.
MAX_ID_CHARS = 40


def printable_id(value: str, limit: int = MAX_ID_CHARS) -> str:
    """``value`` with every control/format/separator character as ``?``, at most ``limit`` long."""
    clean = "".join(
        "?" if unicodedata.category(ch)[0] in ("C", "Z") and ch != " " else ch for ch in value
    )
    if len(clean) > limit:
        head = (limit - 1) // 2
        clean = clean[:head] + "…" + clean[len(clean) - (limit - 1 - head) :]
    return clean


def worker_title(document_id: str, agent_id: str) -> str:
    return f"docagents worker {printable_id(document_id)} ({printable_id(agent_id)})"


def set_title(title: str) -> None:
    """Set this process's title (``ps -o args``, ``top``, ``/proc/<pid>/cmdline``)."""
    setproctitle.setproctitle(title)
