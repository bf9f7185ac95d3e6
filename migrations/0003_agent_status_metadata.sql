-- set_agent_status gains p_metadata: a JSON object merged into the row's
-- metadata (e.g. {"pid_create_time": ..., "host": ...} once the worker process
-- exists, which crash recovery compares before it kills a pid). The old
-- three-argument form is replaced (a second overload with defaults would make
-- calls with two or three arguments ambiguous).

DROP FUNCTION set_agent_status(text, text, integer);

CREATE FUNCTION set_agent_status(
    p_agent_id text,
    p_status   text,
    p_pid      integer DEFAULT NULL,
    p_metadata jsonb DEFAULT NULL
) RETURNS SETOF agent_connections
LANGUAGE sql AS $$
    UPDATE agent_connections
       SET status = p_status,
           agent_pid = coalesce(p_pid, agent_pid),
           metadata = CASE WHEN jsonb_typeof(p_metadata) = 'object'
                           THEN metadata || p_metadata ELSE metadata END,
           last_activity_at = now()
     WHERE agent_id = p_agent_id
       AND status NOT IN ('disconnected', 'error')
    RETURNING *;
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION set_agent_status(text, text, integer, jsonb) TO service_role;
    END IF;
END;
$$;
