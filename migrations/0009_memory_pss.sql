-- Honest memory figures: PSS and USS beside RSS, and live figures beside totals.
--
-- RSS counts every page a process maps, shared or not: the forkserver's
-- copy-on-write pages and the memory-mapped gazetteer are counted once per
-- worker, so a sum or an average of RSS overstates what the workers cost.
-- PSS (proportional set size) divides each shared page among the processes
-- that map it, so the PSS of all workers adds up to what they really use; USS
-- is what a process alone holds (what its exit would free).
--
-- Workers report all three. memory_mb stays RSS (its contract); pss_mb and
-- uss_mb are new. Aggregates use PSS where it was reported, RSS otherwise
-- (rows written by an older manager).

ALTER TABLE agent_connections
    ADD COLUMN pss_mb numeric(12, 2),
    ADD COLUMN uss_mb numeric(12, 2);
ALTER TABLE agent_metrics
    ADD COLUMN pss_mb numeric(12, 2),
    ADD COLUMN uss_mb numeric(12, 2);

-- As in 0001, plus pss_mb / uss_mb in each object of the batch.
CREATE OR REPLACE FUNCTION record_agent_metrics(p_batch jsonb) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_inserted integer;
BEGIN
    WITH items AS (
        SELECT i.*
          FROM jsonb_to_recordset(coalesce(p_batch, '[]'::jsonb)) AS i (
                agent_id text, memory_mb numeric, pss_mb numeric, uss_mb numeric,
                cpu_percent numeric, websocket_latency_ms numeric, llm_response_time_ms numeric,
                llm_calls integer, locations_marked integer,
                recorded_at timestamptz, last_activity_at timestamptz, metadata jsonb)
    ), samples AS (
        INSERT INTO agent_metrics (agent_connection_id, document_id, memory_mb, pss_mb, uss_mb,
                                   cpu_percent, websocket_latency_ms, llm_response_time_ms,
                                   metadata, recorded_at)
        SELECT c.id, c.document_id, i.memory_mb, i.pss_mb, i.uss_mb, i.cpu_percent,
               i.websocket_latency_ms, i.llm_response_time_ms,
               coalesce(i.metadata, '{}'::jsonb), coalesce(i.recorded_at, now())
          FROM items i JOIN agent_connections c ON c.agent_id = i.agent_id
         WHERE i.memory_mb IS NOT NULL OR i.cpu_percent IS NOT NULL
            OR i.pss_mb IS NOT NULL OR i.uss_mb IS NOT NULL
            OR i.websocket_latency_ms IS NOT NULL OR i.llm_response_time_ms IS NOT NULL
        RETURNING 1
    ), totals AS (
        SELECT agent_id,
               sum(coalesce(llm_calls, 0))::integer AS llm_calls,
               sum(coalesce(locations_marked, 0))::integer AS locations_marked,
               max(last_activity_at) AS last_activity_at,
               -- the latest sample in the batch wins for the snapshot
               (array_agg(memory_mb ORDER BY recorded_at DESC NULLS LAST)
                    FILTER (WHERE memory_mb IS NOT NULL))[1] AS memory_mb,
               (array_agg(pss_mb ORDER BY recorded_at DESC NULLS LAST)
                    FILTER (WHERE pss_mb IS NOT NULL))[1] AS pss_mb,
               (array_agg(uss_mb ORDER BY recorded_at DESC NULLS LAST)
                    FILTER (WHERE uss_mb IS NOT NULL))[1] AS uss_mb,
               (array_agg(cpu_percent ORDER BY recorded_at DESC NULLS LAST)
                    FILTER (WHERE cpu_percent IS NOT NULL))[1] AS cpu_percent
          FROM items GROUP BY agent_id
    ), snapshot AS (
        UPDATE agent_connections c
           SET llm_calls_count = c.llm_calls_count + t.llm_calls,
               locations_marked_count = c.locations_marked_count + t.locations_marked,
               memory_mb = coalesce(t.memory_mb, c.memory_mb),
               pss_mb = coalesce(t.pss_mb, c.pss_mb),
               uss_mb = coalesce(t.uss_mb, c.uss_mb),
               cpu_percent = coalesce(t.cpu_percent, c.cpu_percent),
               last_activity_at = greatest(c.last_activity_at, t.last_activity_at)
          FROM totals t
         WHERE c.agent_id = t.agent_id
        RETURNING 1
    )
    -- (data-modifying CTEs always run to completion, read or not)
    SELECT count(*) INTO v_inserted FROM samples;
    RETURN v_inserted;
END;
$$;

-- get_agent_system_stats(): the kept columns, in their order, then new ones.
-- avg_memory_mb is now the average PSS of the live agents (RSS for a row
-- without PSS); avg_rss_mb is the old figure. total_llm_calls and
-- total_locations_marked stay totals over every life ever recorded;
-- live_llm_calls / live_locations_marked count only the live agents' lives.
-- (A function's result columns cannot change in place: drop and create.)
DROP FUNCTION get_agent_system_stats();
CREATE FUNCTION get_agent_system_stats()
RETURNS TABLE (
    total_agents           bigint,
    active_agents          bigint,
    connecting_agents      bigint,
    avg_memory_mb          numeric,
    total_llm_calls        bigint,
    total_locations_marked bigint,
    unique_documents       bigint,
    avg_rss_mb             numeric,
    live_llm_calls         bigint,
    live_locations_marked  bigint
)
LANGUAGE sql STABLE AS $$
    SELECT count(*) FILTER (WHERE status IN ('connecting', 'active')),
           count(*) FILTER (WHERE status = 'active'),
           count(*) FILTER (WHERE status = 'connecting'),
           round(avg(coalesce(pss_mb, memory_mb)) FILTER (WHERE status IN ('connecting', 'active')), 2),
           coalesce(sum(llm_calls_count), 0)::bigint,
           coalesce(sum(locations_marked_count), 0)::bigint,
           count(DISTINCT document_id) FILTER (WHERE status IN ('connecting', 'active')),
           round(avg(memory_mb) FILTER (WHERE status IN ('connecting', 'active')), 2),
           coalesce(sum(llm_calls_count) FILTER (WHERE status IN ('connecting', 'active')), 0)::bigint,
           coalesce(sum(locations_marked_count) FILTER (WHERE status IN ('connecting', 'active')), 0)::bigint
      FROM agent_connections;
$$;

-- live_agents: the same columns, then PSS and USS (a view may grow at the end).
CREATE OR REPLACE VIEW live_agents AS
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
       m.recorded_at                                AS last_metrics_at,
       c.pss_mb,
       c.uss_mb
  FROM agent_connections c
  LEFT JOIN LATERAL (
        SELECT websocket_latency_ms, llm_response_time_ms, recorded_at
          FROM agent_metrics am
         WHERE am.agent_connection_id = c.id
         ORDER BY am.recorded_at DESC
         LIMIT 1
  ) m ON true
 WHERE c.status IN ('connecting', 'active', 'idle', 'detaching');

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION get_agent_system_stats() TO service_role;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        GRANT EXECUTE ON FUNCTION get_agent_system_stats() TO authenticated;
    END IF;
END;
$$;
