"""The agent that lives inside one live Y.js document.

``worker`` never imports ``manager``; the manager talks to a worker only through the
messages of :mod:`worker.protocol` over a multiprocessing pipe.
"""
