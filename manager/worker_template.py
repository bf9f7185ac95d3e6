"""The forkserver's template: imported once in the forkserver, then shared by every worker.

The manager never forks itself (it runs an event loop and database connections);
``multiprocessing``'s forkserver imports this module once, and every worker is a
fork of that clean process. Everything loaded here (the worker's modules, pycrdt,
the gazetteer) is shared copy-on-write between all workers, which is what keeps a
worker at a few MiB of its own memory. ``gc.freeze()`` moves the loaded objects to
the permanent generation so the children's collections do not touch (and copy)
their pages. Workers inherit SIGINT ignored (see below).

Nothing here may read the database settings: the forkserver inherits the
environment of the moment it starts, and the manager removes the secrets from it
before that (invariant 6).
"""

from __future__ import annotations

import gc
import signal

import worker.extract
import worker.extract.gazetteer_extractor
import worker.main  # the Process target

# Ctrl+C in a terminal reaches the whole process group; workers leave when their
# manager tells them to (or when it is gone), not on the terminal's SIGINT.
signal.signal(signal.SIGINT, signal.SIG_IGN)

worker.extract.load_gazetteer()
gc.collect()
gc.freeze()
