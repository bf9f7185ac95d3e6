"""The ``docagents`` command and its foreground runners (``up``, ``manager``).

May import every other part of :mod:`manager`, and the worker and docserver entry
points it starts; nothing imports this package.
"""
