"""``python -m manager.cli``: the same as the ``docagents`` console script."""

from manager.cli.commands import main

main()
