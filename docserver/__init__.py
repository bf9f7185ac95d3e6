"""The y-websocket document server; it turns presence into document_activity rows.

"Presence" here means one thing: which people are connected to a document.
The first person to open a document makes it 'active', the last one leaving
makes it 'idle' after a grace; agents are counted apart and never make a
document active (DESIGN.md, "Who is a person").

What lives here:

- running it: :mod:`~docserver.server` (the synchronous entry point of
  ``docagents docserver``), ``__main__`` (``python -m docserver``),
  :mod:`~docserver.service` (the whole service as one task group),
  :mod:`~docserver.settings`, :mod:`~docserver.logs`, :mod:`~docserver.errors`
  (the one exception tree);
- presence and activity: :mod:`~docserver.presence` (the pure presence core:
  connections in, activity rows and grace timers out) and
  :mod:`docserver.activity` (writing those rows to Postgres or through Supabase);
- documents: :mod:`~docserver.app` (the ASGI app), :mod:`~docserver.rooms` (one
  pycrdt-websocket room per document), :mod:`~docserver.connection` (one
  websocket as a pycrdt channel), :mod:`~docserver.store` (Y.js updates in
  SQLite); pure checks in :mod:`~docserver.messages`, :mod:`~docserver.updates`,
  :mod:`~docserver.awareness`, :mod:`~docserver.paths`,
  :mod:`~docserver.ratelimit`; socket-level bounds in :mod:`~docserver.listener`;
- who may do what: :mod:`~docserver.gatekeeper`, :mod:`~docserver.auth`,
  :mod:`~docserver.access_sql`, :mod:`~docserver.agent_credentials` (the
  credential of one agent life, also minted by the manager) and
  :mod:`~docserver.fencing`;
- ``editor/`` (the demo editor's source) and ``static/`` (its built bundle).

Imports: its own modules and third-party libraries; never ``manager`` nor
``worker`` (an import-linter contract in pyproject.toml). The manager's CLI
imports :mod:`~docserver.server`, :mod:`~docserver.errors` and
:mod:`~docserver.auth`; its supervisor imports :mod:`~docserver.agent_credentials`.
"""
