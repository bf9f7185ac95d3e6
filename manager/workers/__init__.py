"""Worker processes: started from a template, one per agent life.

- :mod:`~manager.workers.forkserver`: the template (the forkserver) and
  :class:`~manager.workers.forkserver.TemplateProcess`, its one ``Process`` class;
  the only module that uses ``multiprocessing`` internals, pinned to the verified
  Python versions; standard library only (the CLI imports it first).
- :mod:`~manager.workers.preload`: what the template imports once for every worker.
- :mod:`~manager.workers.entry`: the functions a worker process starts in.
- :mod:`~manager.workers.pool`: the warm pool of booted, unassigned workers.
- :mod:`~manager.workers.launcher`: :class:`~manager.workers.launcher.WorkerLauncher`,
  the template, the pool and the set of this manager's live workers.
- :mod:`~manager.workers.process`: :class:`~manager.workers.process.WorkerProcess`,
  one worker's life: its pipe, pings, stop and kill.

The template imports this package, so it stays light: it may import
:mod:`manager.ops.proctitle`, :mod:`manager.errors` and the
:mod:`worker` package, never the store or the supervisor (the launcher names the
supervisor's memory keeper for typing only).
"""
