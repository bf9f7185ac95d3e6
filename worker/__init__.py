"""The agent that lives inside one live Y.js document: one worker process per document.

What lives here:

- :mod:`worker.main`: the entry points (a child of the manager, or standalone) and
  the pipe loop; :mod:`worker.agent`: the agent's services in one task group;
- the Y.js client: :mod:`worker.connection` (reconnecting websocket session),
  :mod:`worker.channel` (pycrdt's channel over websockets), :mod:`worker.awareness`
  (the agent's awareness state), :mod:`worker.backoff`;
- the document: :mod:`worker.document` (which text changed, applying marks),
  :mod:`worker.runs`, :mod:`worker.sentences`, :mod:`worker.marks`,
  :mod:`worker.trigger` (when to extract);
- extraction: :mod:`worker.extraction` (memory first, the model's two lanes, the
  gazetteer meanwhile), :mod:`worker.memory` (the extraction memory and queue),
  :mod:`worker.extract` (the extractors);
- reports: :mod:`worker.protocol` (the pipe's messages), :mod:`worker.reporting`,
  :mod:`worker.metrics`, :mod:`worker.logs`; :mod:`worker.config` (its settings),
  :mod:`worker.errors` (its exception tree).

``worker`` imports neither ``manager`` nor ``docserver`` (an import-linter contract);
the manager talks to a worker only through the messages of :mod:`worker.protocol`
over a multiprocessing pipe, and imports nothing else of the worker's but its
settings, its logging set-up, its entry point and the modules its forkserver
preloads.
"""
