"""Which documents get an agent, and carrying that out.

The decision core is pure (events in, actions out; no I/O, no clock, no
imports of ours outside it), so property tests can drive it:
:mod:`~manager.supervise.actions` (the action records and end reasons),
:mod:`~manager.supervise.documents` (phases, per-document state),
:mod:`~manager.supervise.policy` (restarts, placement, eviction),
:mod:`~manager.supervise.life_reports` (one life's claim answer and worker
reports), :mod:`~manager.supervise.drain` (handing documents over
make-before-break) and :mod:`~manager.supervise.supervisor` (the
:class:`Supervisor`).

The shells do the I/O; whether a document gets a life, and when one is
started, stopped, retried or given up, is never theirs to decide:
:mod:`~manager.supervise.lives` (one :class:`~manager.supervise.lives.LifeRunner`
task per agent life),
:mod:`~manager.supervise.claims` (claims batched into one call),
:mod:`~manager.supervise.recovery` (ending a dead run's lives at start) and
:mod:`~manager.supervise.memory` (the extraction memory handed to each life).

Layer (pyproject.toml, ``[tool.importlinter]``): may import :mod:`manager.workers`,
:mod:`manager.events`, :mod:`manager.ops`, :mod:`manager.store`,
:mod:`manager.database`, :mod:`manager.embedded`, :mod:`manager.config` and
:mod:`manager.errors`; of the worker only :mod:`worker.protocol` and
:mod:`worker.config`; of the docserver only ``docserver.agent_credentials``
(in :mod:`~manager.supervise.lives`, to mint each life's credential).
Imported by :mod:`manager.fleet`, :mod:`manager.backends`, :mod:`manager.daemon`
and :mod:`manager.cli`.
"""
