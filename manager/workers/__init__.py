"""Worker processes: the forkserver template, what it preloads, the warm pool,
and one :class:`~manager.workers.processes.WorkerProcess` per agent life.

This package is imported inside the forkserver, so it stays light: it may import
:mod:`manager.ops.proctitle`, :mod:`manager.config` and the :mod:`worker` package,
never the store or the supervisor.
"""
