"""The running manager: the async driver that wires the supervisor to its shells.

:mod:`manager.daemon.driver` owns the task group; :mod:`manager.daemon.monitor`
turns what happens into metrics, health and sd_notify. May import every layer
below it (fleet, supervise, workers, events, ops, store); only :mod:`manager.cli`
imports it.
"""
