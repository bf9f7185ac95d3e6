-- Operations: views for what ops ask most, and retention of the history tables.

-- Live agents with their latest metrics sample.
CREATE VIEW live_agents AS
SELECT c.id,
       c.document_id,
       c.agent_id,
       c.status,
       c.agent_pid,
       c.manager_id,
       c.manager_host,
       c.connected_at,
       now() - c.connected_at                       AS uptime,
       c.last_activity_at,
       c.memory_mb,
       c.cpu_percent,
       c.llm_calls_count,
       c.locations_marked_count,
       m.websocket_latency_ms                       AS last_websocket_latency_ms,
       m.llm_response_time_ms                       AS last_llm_response_time_ms,
       m.recorded_at                                AS last_metrics_at
  FROM agent_connections c
  LEFT JOIN LATERAL (
        SELECT websocket_latency_ms, llm_response_time_ms, recorded_at
          FROM agent_metrics am
         WHERE am.agent_connection_id = c.id
         ORDER BY am.recorded_at DESC
         LIMIT 1
  ) m ON true
 WHERE c.status IN ('connecting', 'active', 'idle', 'detaching');

-- Per document and hour: agent lives started, LLM calls, marks, agent-hours
-- (what drives cost), and average/peak memory from the metrics samples.
CREATE VIEW document_usage_hourly AS
WITH lives AS (
    SELECT document_id,
           date_trunc('hour', connected_at)                      AS hour,
           count(*)                                              AS agent_lives,
           sum(llm_calls_count)                                  AS llm_calls,
           sum(locations_marked_count)                           AS locations_marked,
           sum(extract(epoch FROM coalesce(disconnected_at, now()) - connected_at)) / 3600.0
                                                                 AS agent_hours
      FROM agent_connections
     GROUP BY 1, 2
), samples AS (
    SELECT document_id,
           date_trunc('hour', recorded_at) AS hour,
           avg(memory_mb)                  AS avg_memory_mb,
           max(memory_mb)                  AS max_memory_mb,
           avg(llm_response_time_ms)       AS avg_llm_response_time_ms
      FROM agent_metrics
     GROUP BY 1, 2
)
SELECT coalesce(l.document_id, s.document_id) AS document_id,
       coalesce(l.hour, s.hour)               AS hour,
       coalesce(l.agent_lives, 0)             AS agent_lives,
       coalesce(l.llm_calls, 0)               AS llm_calls,
       coalesce(l.locations_marked, 0)        AS locations_marked,
       round(coalesce(l.agent_hours, 0)::numeric, 3) AS agent_hours,
       round(s.avg_memory_mb, 2)              AS avg_memory_mb,
       s.max_memory_mb,
       round(s.avg_llm_response_time_ms, 2)   AS avg_llm_response_time_ms
  FROM lives l
  FULL JOIN samples s ON s.document_id = l.document_id AND s.hour = l.hour;

-- Every agent life: how long it lived and why it ended.
CREATE VIEW agent_lifetimes AS
SELECT id,
       document_id,
       agent_id,
       manager_id,
       status,
       connected_at,
       disconnected_at,
       coalesce(disconnected_at, now()) - connected_at AS lifetime,
       CASE
           WHEN status IN ('disconnected', 'error') THEN coalesce(error_message, status)
           ELSE NULL
       END AS end_reason,
       llm_calls_count,
       locations_marked_count
  FROM agent_connections;

-- End reasons at a glance.
CREATE VIEW agent_end_reasons AS
SELECT end_reason,
       count(*)                AS lives,
       avg(lifetime)           AS avg_lifetime,
       max(disconnected_at)    AS last_seen
  FROM agent_lifetimes
 WHERE end_reason IS NOT NULL
 GROUP BY end_reason;

-- Retention: delete agent_metrics and document_activity rows older than
-- p_older_than, at most p_batch rows per table per call (so each call holds
-- locks briefly; call again while it returns full batches). Never deletes a
-- document's latest activity event: the wanted set is computed from it.
CREATE FUNCTION prune_history(p_older_than interval, p_batch integer DEFAULT 5000)
RETURNS TABLE (metrics_deleted bigint, activity_deleted bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_metrics  bigint;
    v_activity bigint;
BEGIN
    WITH doomed AS (
        SELECT id FROM agent_metrics
         WHERE recorded_at < now() - p_older_than
         ORDER BY recorded_at
         LIMIT p_batch
         FOR UPDATE SKIP LOCKED
    )
    DELETE FROM agent_metrics am USING doomed WHERE am.id = doomed.id;
    GET DIAGNOSTICS v_metrics = ROW_COUNT;

    WITH doomed AS (
        SELECT da.id FROM document_activity da
         WHERE da."timestamp" < now() - p_older_than
           AND EXISTS (SELECT 1 FROM document_activity newer
                        WHERE newer.document_id = da.document_id AND newer.id > da.id)
         ORDER BY da.id
         LIMIT p_batch
         FOR UPDATE SKIP LOCKED
    )
    DELETE FROM document_activity da USING doomed WHERE da.id = doomed.id;
    GET DIAGNOSTICS v_activity = ROW_COUNT;

    RETURN QUERY SELECT v_metrics, v_activity;
END;
$$;

-- The Supabase roles see the views like the tables.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT SELECT ON live_agents, document_usage_hourly, agent_lifetimes, agent_end_reasons
            TO service_role;
        GRANT EXECUTE ON FUNCTION prune_history(interval, integer) TO service_role;
    END IF;
END;
$$;
