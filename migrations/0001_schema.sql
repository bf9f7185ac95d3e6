-- docagents schema: activity events, agent lives, agent metrics, and the SQL
-- functions that perform every state change that must be atomic.
-- Applied once by `docagents migrate`, inside one transaction.

-- ---------------------------------------------------------------------------
-- document_activity: what editors do (written by the docserver)
-- ---------------------------------------------------------------------------
CREATE TABLE document_activity (
    id          bigserial PRIMARY KEY,
    document_id text NOT NULL
        CONSTRAINT document_activity_document_id_length
        CHECK (char_length(document_id) BETWEEN 1 AND 512),
    event_type  text NOT NULL
        CONSTRAINT document_activity_event_type_known
        CHECK (event_type IN ('active', 'idle', 'user_joined', 'user_left')),
    user_count  integer NOT NULL DEFAULT 0 CHECK (user_count >= 0),
    "timestamp" timestamptz NOT NULL DEFAULT now(),
    metadata    jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- Latest event per document (wanted set, retention) and time-ordered scans.
CREATE INDEX document_activity_document_id_id_idx ON document_activity (document_id, id DESC);
CREATE INDEX document_activity_timestamp_idx ON document_activity ("timestamp");

-- A notification is a wake-up hint carrying the new id; readers always re-read
-- the table by id cursor, so a missed notification loses nothing.
CREATE FUNCTION notify_document_activity() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('document_activity', NEW.id::text);
    RETURN NEW;
END;
$$;

CREATE TRIGGER document_activity_notify
    AFTER INSERT ON document_activity
    FOR EACH ROW EXECUTE FUNCTION notify_document_activity();

-- ---------------------------------------------------------------------------
-- agent_connections: one row per agent life
-- ---------------------------------------------------------------------------
CREATE TABLE agent_connections (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    document_id            text NOT NULL CHECK (char_length(document_id) BETWEEN 1 AND 512),
    agent_id               text NOT NULL UNIQUE,
    agent_pid              integer,
    status                 text NOT NULL DEFAULT 'connecting'
        CONSTRAINT agent_connections_status_known
        CHECK (status IN ('connecting', 'active', 'idle', 'detaching', 'disconnected', 'error')),
    connected_at           timestamptz NOT NULL DEFAULT now(),
    disconnected_at        timestamptz,
    last_activity_at       timestamptz NOT NULL DEFAULT now(),
    -- Sized for real values: a worker can use tens of GiB, or several cores.
    memory_mb              numeric(12, 2),
    cpu_percent            numeric(8, 2),
    llm_calls_count        integer NOT NULL DEFAULT 0,
    locations_marked_count integer NOT NULL DEFAULT 0,
    manager_id             text NOT NULL,
    manager_host           text,
    error_message          text,
    metadata               jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- Invariant 1: at most one live agent per document, across all managers.
-- (A table constraint cannot carry WHERE; it must be a partial unique index.)
CREATE UNIQUE INDEX agent_connections_one_live_per_document
    ON agent_connections (document_id)
    WHERE status IN ('connecting', 'active');

CREATE INDEX agent_connections_manager_live_idx
    ON agent_connections (manager_id)
    WHERE status IN ('connecting', 'active', 'idle', 'detaching');
CREATE INDEX agent_connections_document_idx ON agent_connections (document_id, connected_at DESC);

-- ---------------------------------------------------------------------------
-- agent_metrics: time series reported by workers (batched by the manager)
-- ---------------------------------------------------------------------------
CREATE TABLE agent_metrics (
    id                    bigserial PRIMARY KEY,
    agent_connection_id   uuid NOT NULL REFERENCES agent_connections (id) ON DELETE CASCADE,
    document_id           text NOT NULL,
    memory_mb             numeric(12, 2),
    cpu_percent           numeric(8, 2),
    websocket_latency_ms  numeric(12, 2),
    llm_response_time_ms  numeric(12, 2),
    metadata              jsonb NOT NULL DEFAULT '{}'::jsonb,
    recorded_at           timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX agent_metrics_connection_recorded_idx ON agent_metrics (agent_connection_id, recorded_at DESC);
CREATE INDEX agent_metrics_recorded_at_idx ON agent_metrics (recorded_at);

-- ---------------------------------------------------------------------------
-- Atomic state changes
-- ---------------------------------------------------------------------------

-- Claim a document for a new agent life. Returns the new row with
-- claimed = true, or the current live owner with claimed = false. Never two
-- live rows: the partial unique index decides races between managers.
CREATE FUNCTION claim_document(
    p_document_id  text,
    p_agent_id     text,
    p_manager_id   text,
    p_manager_host text DEFAULT NULL,
    p_metadata     jsonb DEFAULT '{}'::jsonb
) RETURNS TABLE (claimed boolean, connection agent_connections)
LANGUAGE plpgsql AS $$
DECLARE
    v_row agent_connections;
BEGIN
    FOR attempt IN 1..5 LOOP
        INSERT INTO agent_connections (document_id, agent_id, manager_id, manager_host, status, metadata)
        VALUES (p_document_id, p_agent_id, p_manager_id, p_manager_host, 'connecting',
                coalesce(p_metadata, '{}'::jsonb))
        ON CONFLICT (document_id) WHERE status IN ('connecting', 'active') DO NOTHING
        RETURNING * INTO v_row;
        IF FOUND THEN
            RETURN QUERY SELECT true, v_row;
            RETURN;
        END IF;
        SELECT * INTO v_row FROM agent_connections
         WHERE document_id = p_document_id AND status IN ('connecting', 'active');
        IF FOUND THEN
            RETURN QUERY SELECT false, v_row;
            RETURN;
        END IF;
        -- The owner ended between our insert and our read: try again.
    END LOOP;
    RAISE EXCEPTION 'claim_document(%): live owner kept changing', p_document_id
        USING ERRCODE = 'serialization_failure';
END;
$$;

-- Move a live agent to another status (e.g. connecting -> active once the
-- worker reports `connected`, or -> detaching). Returns the row, or nothing
-- if that life has already ended.
CREATE FUNCTION set_agent_status(
    p_agent_id text,
    p_status   text,
    p_pid      integer DEFAULT NULL
) RETURNS SETOF agent_connections
LANGUAGE sql AS $$
    UPDATE agent_connections
       SET status = p_status,
           agent_pid = coalesce(p_pid, agent_pid),
           last_activity_at = now()
     WHERE agent_id = p_agent_id
       AND status NOT IN ('disconnected', 'error')
    RETURNING *;
$$;

-- End an agent life: final status ('disconnected' or 'error'), the reason,
-- disconnected_at. Idempotent: a life already ended keeps its first reason.
CREATE FUNCTION end_agent_life(
    p_agent_id text,
    p_status   text DEFAULT 'disconnected',
    p_reason   text DEFAULT NULL
) RETURNS SETOF agent_connections
LANGUAGE plpgsql AS $$
BEGIN
    IF p_status NOT IN ('disconnected', 'error') THEN
        RAISE EXCEPTION 'end_agent_life: final status must be disconnected or error, not %', p_status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN QUERY
    UPDATE agent_connections
       SET status = p_status,
           error_message = coalesce(p_reason, error_message),
           disconnected_at = now()
     WHERE agent_id = p_agent_id
       AND status NOT IN ('disconnected', 'error')
    RETURNING *;
END;
$$;

-- Record a batch of worker reports in one call. p_batch is a JSON array of
-- objects: {agent_id, memory_mb?, cpu_percent?, websocket_latency_ms?,
-- llm_response_time_ms?, llm_calls?, locations_marked?, recorded_at?,
-- last_activity_at?, metadata?}. Objects carrying a resource sample add an
-- agent_metrics row; counters are added to the live snapshot on
-- agent_connections. Unknown agent ids are ignored. Returns the number of
-- agent_metrics rows inserted.
CREATE FUNCTION record_agent_metrics(p_batch jsonb) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_inserted integer;
BEGIN
    WITH items AS (
        SELECT i.*
          FROM jsonb_to_recordset(coalesce(p_batch, '[]'::jsonb)) AS i (
                agent_id text, memory_mb numeric, cpu_percent numeric,
                websocket_latency_ms numeric, llm_response_time_ms numeric,
                llm_calls integer, locations_marked integer,
                recorded_at timestamptz, last_activity_at timestamptz, metadata jsonb)
    ), samples AS (
        INSERT INTO agent_metrics (agent_connection_id, document_id, memory_mb, cpu_percent,
                                   websocket_latency_ms, llm_response_time_ms, metadata, recorded_at)
        SELECT c.id, c.document_id, i.memory_mb, i.cpu_percent,
               i.websocket_latency_ms, i.llm_response_time_ms,
               coalesce(i.metadata, '{}'::jsonb), coalesce(i.recorded_at, now())
          FROM items i JOIN agent_connections c ON c.agent_id = i.agent_id
         WHERE i.memory_mb IS NOT NULL OR i.cpu_percent IS NOT NULL
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
               (array_agg(cpu_percent ORDER BY recorded_at DESC NULLS LAST)
                    FILTER (WHERE cpu_percent IS NOT NULL))[1] AS cpu_percent
          FROM items GROUP BY agent_id
    ), snapshot AS (
        UPDATE agent_connections c
           SET llm_calls_count = c.llm_calls_count + t.llm_calls,
               locations_marked_count = c.locations_marked_count + t.locations_marked,
               memory_mb = coalesce(t.memory_mb, c.memory_mb),
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

-- Kept from the system this replaces: add one to a counter of an agent.
CREATE FUNCTION increment_agent_metric(agent_id_param text, metric_name text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF metric_name = 'llm_calls_count' OR metric_name = 'llm_calls' THEN
        UPDATE agent_connections SET llm_calls_count = llm_calls_count + 1,
               last_activity_at = now() WHERE agent_id = agent_id_param;
    ELSIF metric_name = 'locations_marked_count' OR metric_name = 'locations_marked' THEN
        UPDATE agent_connections SET locations_marked_count = locations_marked_count + 1,
               last_activity_at = now() WHERE agent_id = agent_id_param;
    ELSE
        RAISE EXCEPTION 'increment_agent_metric: unknown metric %', metric_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;

-- System-wide figures for `docagents stats`. Live = connecting or active.
-- llm_calls / locations_marked are totals over every agent life ever recorded.
CREATE FUNCTION get_agent_system_stats()
RETURNS TABLE (
    total_agents           bigint,
    active_agents          bigint,
    connecting_agents      bigint,
    avg_memory_mb          numeric,
    total_llm_calls        bigint,
    total_locations_marked bigint,
    unique_documents       bigint
)
LANGUAGE sql STABLE AS $$
    SELECT count(*) FILTER (WHERE status IN ('connecting', 'active')),
           count(*) FILTER (WHERE status = 'active'),
           count(*) FILTER (WHERE status = 'connecting'),
           round(avg(memory_mb) FILTER (WHERE status IN ('connecting', 'active')), 2),
           coalesce(sum(llm_calls_count), 0)::bigint,
           coalesce(sum(locations_marked_count), 0)::bigint,
           count(DISTINCT document_id) FILTER (WHERE status IN ('connecting', 'active'))
      FROM agent_connections;
$$;

-- The live agents of one manager.
CREATE FUNCTION get_manager_active_agents(manager_id_param text)
RETURNS SETOF agent_connections
LANGUAGE sql STABLE AS $$
    SELECT * FROM agent_connections
     WHERE manager_id = manager_id_param
       AND status IN ('connecting', 'active', 'idle', 'detaching')
     ORDER BY connected_at;
$$;
