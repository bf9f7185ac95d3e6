"""Many managers on one database: leases, failover sweeps, the ``managers`` report.

:mod:`~manager.fleet.leases` is pure (who holds a lease, whom a process may
replace); :mod:`~manager.fleet.keeper` is its async shell. May import
:mod:`manager.supervise` and everything below it.
"""
