"""The running manager: the async driver that wires the supervisor to its shells.

- :mod:`~manager.daemon.run`: :func:`~manager.daemon.run.run_manager`, the
  process-level entry (the worker launcher, the backend, the daemon).
- :mod:`~manager.daemon.driver`: :class:`~manager.daemon.driver.ManagerDaemon`,
  the task group, the signal loop, dispatch of the supervisor's actions.
- :mod:`~manager.daemon.stopping`: how it stops: the handover to other managers
  first when SIGTERM finds one with room (a rolling restart), then the shutdown.
- :mod:`~manager.daemon.start`: the state a start begins from (lease, recovery,
  latest events) and the supervisor built from the settings.
- :mod:`~manager.daemon.audit`: the periodic check of this manager's live rows.
- :mod:`~manager.daemon.reports`: the stats box and the workers' memory gauges.
- :mod:`~manager.daemon.monitor`: metrics, health and sd_notify from what happens.

May import every layer below it (backends, fleet, supervise, workers, events,
ops, store); only :mod:`manager.cli` imports it.
"""
