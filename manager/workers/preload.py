"""The forkserver's template: imported once in the forkserver, then shared by every worker.

The manager never forks itself (it runs an event loop and database connections);
``multiprocessing``'s forkserver imports this module once, and every worker is a
fork of that clean process. Everything loaded here (the worker's modules, pycrdt,
websockets, the OpenAI client) is shared copy-on-write between all workers, which
is what keeps a worker at a few MiB of its own memory. The gazetteer is a read-only
file mapping (:func:`worker.extract.load_gazetteer`): shared too, and a fork does
not even copy its page tables, so the template stays small and forks fast. When
its file must be built first, a child of the template builds it
(:func:`worker.extract.gazetteer.prepare_cache_in_child`), so the builder's
garbage never lands in the template's heap.

Copy-on-write only shares what neither side writes to. Following the ``gc.freeze``
documentation: the collector is disabled before anything is loaded (a collection
frees objects and leaves holes in the heap that a child would then fill, copying
the pages), the loaded objects are frozen into the permanent generation (a child's
collections do not touch them), and each worker re-enables the collector first
thing (:func:`manager.workers.entry.run_worker`). Workers inherit SIGINT ignored:
Ctrl+C in a terminal reaches the whole process group, but a worker leaves when its
manager tells it to (or when the manager is gone).

Nothing here may read the database settings: the forkserver inherits the
environment of the moment it starts, and the manager removes the secrets from it
before that (invariant 6).

The OpenAI client (about a second to import) is preloaded only when the workers
will use it: the extractor the environment (and ``.env``) selects is ``llm``, or
``DOCAGENTS_PRELOAD_LLM=1`` (``0`` never preloads it). Otherwise a worker that
does get the LLM extractor imports it itself (slower first call, more private
memory), and a gazetteer-only manager starts its workers a second sooner (crash
recovery) and forks them faster (a smaller template).
"""

from __future__ import annotations

import gc

gc.disable()

import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import anyio  # noqa: E402
import anyio.lowlevel  # noqa: E402
import structlog  # noqa: E402
from pydantic import ValidationError  # noqa: E402

import manager.ops.proctitle  # noqa: E402
import manager.workers.entry  # noqa: E402  (the Process target)
import manager.workers.forkserver  # noqa: E402  (TemplateProcess is unpickled in the child)
import worker.extract  # noqa: E402
import worker.extract.gazetteer  # noqa: E402
import worker.extract.gazetteer_extractor  # noqa: E402
import worker.main  # noqa: E402
from worker.config import WorkerSettings  # noqa: E402
from worker.logs import configure_logging, log_format_from_environment  # noqa: E402


def _workers_use_llm() -> bool:
    forced = os.environ.get("DOCAGENTS_PRELOAD_LLM", "").lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    try:
        return WorkerSettings().resolved_extractor() == "llm"
    except ValidationError:
        return True  # the manager will refuse these settings anyway; preload to be safe


if _workers_use_llm():
    import openai  # noqa: F401  (the LLM extractor's client, once for all workers)

    import worker.extract.llm

    worker.extract.llm.shared_tls_context()  # the CA bundle, once for all workers


async def _warm_up() -> None:
    """Load what asyncio and anyio import on first use of an event loop (and what the
    LLM client's first call imports, when the workers will use it)."""
    await anyio.lowlevel.checkpoint()
    if "worker.extract.llm" in sys.modules:
        try:
            await worker.extract.llm.warm_up_client()
        except Exception as exc:  # noqa: BLE001 (optional: first calls are only slower)
            structlog.get_logger(__name__).warning("llm_warm_up_failed", error=repr(exc))


manager.ops.proctitle.set_title("docagents forkserver")
# The template's own lines (building the gazetteer, a failed warm-up) in the
# format of the manager's; it says nothing unless something is wrong, so a
# command that stops at once (a configuration error) prints only its error.
configure_logging(log_format_from_environment(), "WARNING")
signal.signal(signal.SIGINT, signal.SIG_IGN)
anyio.run(_warm_up, backend="asyncio")
worker.extract.gazetteer.prepare_cache_in_child()
worker.extract.load_gazetteer()
gc.freeze()
