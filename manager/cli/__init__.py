"""The ``docagents`` command and its foreground runners (``up``, ``manager``).

- :mod:`~manager.cli.commands`: the command group (the console script's entry),
  the commands that run or change things.
- :mod:`~manager.cli.inspect`: the commands that print data (stats, agents,
  managers, token).
- :mod:`~manager.cli.verbosity`: how much each command logs.
- :mod:`~manager.cli.exits`: how a command fails, and its exit code.
- :mod:`~manager.cli.up`: the foreground runners of ``manager`` and ``up``.
- :mod:`~manager.cli.agent_token`: the agent credential ``up`` keeps under
  ``DOCAGENTS_HOME``.

May import every other part of :mod:`manager`, and the worker and docserver entry
points it starts; nothing imports this package.
"""
