"""Which documents get an agent, and carrying that out.

:mod:`~manager.supervise.supervisor` is the pure decision core (events in,
actions out; imports nothing of ours). The shells carry its actions out: one
:class:`~manager.supervise.lives.LifeRunner` per agent life, batched claims,
crash recovery, and the extraction memory handed to each life. May import
:mod:`manager.workers`, :mod:`manager.events`, :mod:`manager.ops`,
:mod:`manager.store` and :mod:`worker.protocol`.
"""
