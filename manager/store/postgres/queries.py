"""The Postgres backend's named queries, grouped by what they serve.

Every state change calls one of the SQL functions of ``migrations/``, the same
functions the Supabase backend calls through PostgREST. Column lists are spelled
out; no query is built from strings at run time. A batch is one statement over
``unnest(...) WITH ORDINALITY`` arrays: its ``LATERAL`` calls run row by row in
array order, each seeing the ones before, in one transaction.
"""

from __future__ import annotations

# -- activity: document_activity, read by id cursor ------------------------------------

LATEST_EVENTS = """
SELECT DISTINCT ON (document_id) id, document_id, event_type, user_count, "timestamp", metadata
  FROM document_activity
 WHERE id <= %(cursor)s
 ORDER BY document_id, id DESC
"""
READ_EVENTS = """
SELECT id, document_id, event_type, user_count, "timestamp", metadata
  FROM document_activity
 WHERE id > %s
 ORDER BY id
 LIMIT %s
"""
NEWEST_EVENT_ID = "SELECT coalesce(max(id), 0) AS top FROM document_activity"
# The lowest id missing among the newest %(window)s ids: an INSERT that took its id
# but has not committed yet. Following from just below it delivers that row when it
# commits (or skips it after the reader's gap timeout).
FIRST_MISSING_ID = """
SELECT min(g.id)
  FROM generate_series(greatest(%(top)s - %(window)s + 1, 1), %(top)s) AS g (id)
 WHERE NOT EXISTS (SELECT 1 FROM document_activity d WHERE d.id = g.id)
"""

# -- agent lives: agent_connections ----------------------------------------------------

CLAIM = "SELECT c.claimed, (c.connection).* FROM claim_document(%s, %s, %s, %s, %s, %s) AS c"
CLAIMS = (
    "SELECT a.n, c.claimed, (c.connection).*"
    " FROM unnest(%s::text[], %s::text[], %s::jsonb[])"
    " WITH ORDINALITY AS a(document_id, agent_id, supersedes, n),"
    " LATERAL claim_document(a.document_id, a.agent_id, %s, %s, %s, a.supersedes) AS c"
    " ORDER BY a.n"
)
SET_STATUS = "SELECT * FROM set_agent_status(%s, %s, %s, %s)"
SET_STATUSES = (
    "SELECT count(s.agent_id) AS changed"
    " FROM unnest(%s::text[], %s::text[], %s::integer[], %s::jsonb[])"
    " WITH ORDINALITY AS c(agent_id, status, pid, metadata, n),"
    " LATERAL set_agent_status(c.agent_id, c.status, c.pid, c.metadata) AS s"
)
END_LIFE = "SELECT * FROM end_agent_life(%s, %s, %s)"
END_LIVES = (
    "SELECT e.* FROM unnest(%s::text[]) WITH ORDINALITY AS a(agent_id, n),"
    " LATERAL end_agent_life(a.agent_id, %s, %s) AS e ORDER BY a.n"
)
END_LIVES_AT = (
    "SELECT e.* FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[])"
    " WITH ORDINALITY AS a(agent_id, status, reason, ended_at, n),"
    " LATERAL end_agent_life_at(a.agent_id, a.status, a.reason, a.ended_at) AS e ORDER BY a.n"
)
MANAGER_AGENTS = "SELECT * FROM get_manager_active_agents(%s)"

# -- metrics, statistics and retention -------------------------------------------------

RECORD_METRICS = "SELECT record_agent_metrics(%s) AS inserted"
RECORD_METRICS_ONCE = "SELECT record_agent_metrics_once(%s, %s, %s) AS inserted"
SYSTEM_STATS = "SELECT * FROM get_agent_system_stats()"
PRUNE_HISTORY = "SELECT * FROM prune_history(%s, %s)"

# -- the fleet: manager_leases ---------------------------------------------------------

ACQUIRE_LEASE = (
    "SELECT a.acquired, a.took_over, (a.lease).*"
    " FROM acquire_manager_lease(%s, %s, %s, %s, %s, %s, %s, %s, %s) AS a"
)
RELEASE_LEASE = "SELECT release_manager_lease(%s, %s) AS released"
DRAIN_MANAGER = "SELECT drain_manager(%s) AS drained"
LIST_LEASES = "SELECT * FROM list_manager_leases()"
SWEEP_LEASES = "SELECT * FROM sweep_expired_leases()"
CLAIMABLE = "SELECT d AS document_id FROM claimable_documents(%s::text[]) AS d"

# -- extraction memory -----------------------------------------------------------------

LOAD_MEMORY = (
    "SELECT sentence_key, extractor, status, places, attempts, error"
    " FROM load_extraction_memory(%s, %s)"
)
RECORD_EXTRACTIONS = "SELECT record_extractions(%s, %s, %s, %s, %s, %s) AS stored"
PRUNE_MEMORY = "SELECT prune_extraction_memory(%s, %s) AS deleted"
EXTRACTION_STATS = "SELECT * FROM get_extraction_stats()"
