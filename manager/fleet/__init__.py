"""Many managers on one database: leases, failover sweeps, the ``managers`` report.

:mod:`~manager.fleet.leases` is pure (whether this process holds its lease,
whether another holder is dead, what a lease says about free slots and expiry);
:mod:`~manager.fleet.keeper` is its async shell (renew, sweep, probe, read the
fleet); :mod:`~manager.fleet.report` renders ``docagents managers``.

Layer (pyproject.toml, ``[tool.importlinter]``): may import :mod:`manager.supervise`
and every layer below it (:mod:`manager.workers`, :mod:`manager.events`,
:mod:`manager.ops`, :mod:`manager.store`, :mod:`manager.database`,
:mod:`manager.embedded`, :mod:`manager.config`, :mod:`manager.errors`); imported
by :mod:`manager.backends`, :mod:`manager.daemon` and :mod:`manager.cli`.
"""
