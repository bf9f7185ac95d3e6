-- The fleet: every running manager process holds a lease (README "Several
-- managers"; docs/lifecycle.md section 4).
--
-- 1. manager_leases: one row per MANAGER_ID, held by one process (instance_id)
--    at a time, renewed every LEASE_RENEW_S with a TTL of LEASE_TTL_S. Times are
--    the database's clock (now()), never a manager's.
-- 2. acquire_manager_lease(): start-up and every renewal. It takes the row when
--    it is free (absent, expired, or held by p_replaces, a holder the caller has
--    proven dead), renews it when it is the caller's own, and otherwise answers
--    with the live holder (the caller refuses to start).
-- 3. claim_document(): only a manager whose lease is valid may claim; a live row
--    whose manager's lease has expired is dead: it is ended with reason
--    'manager_lease_expired' and the document claimed, in the same statement.
-- 4. sweep_expired_leases(): ends every live row of every expired lease (every
--    manager runs it at start and on its renewal timer).
-- 5. claimable_documents(): of the given documents, those a claim would get now
--    (no live row, or a live row of an expired lease): a manager's probe of the
--    documents it sees owned elsewhere.
-- 6. get_agent_system_stats() (the columns of 0009: PSS average, live figures):
--    counts only the agents of managers whose lease has not expired (rows of managers without any lease row, from before leases,
--    are counted as before).
-- 7. end_agent_life_at(): end_agent_life with the time the life really ended (a
--    writer flushing after a database outage).
-- 8. drain_manager(): asks a live manager to drain (lease state 'draining').

CREATE TABLE manager_leases (
    manager_id  text PRIMARY KEY,
    instance_id uuid NOT NULL,
    host        text,
    pid         integer,
    started_at  timestamptz NOT NULL DEFAULT now(),
    renewed_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    capacity    integer NOT NULL DEFAULT 0,
    agents      integer NOT NULL DEFAULT 0,
    state       text NOT NULL DEFAULT 'leading'
                CHECK (state IN ('leading', 'draining', 'stopped'))
);

CREATE INDEX manager_leases_expires_at ON manager_leases (expires_at);

-- Whether p_manager_id holds a valid lease (with p_instance_id, when given).
CREATE FUNCTION manager_lease_valid(p_manager_id text, p_instance_id text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM manager_leases
         WHERE manager_id = p_manager_id
           AND expires_at > now()
           AND state <> 'stopped'
           AND (p_instance_id IS NULL OR instance_id::text = p_instance_id)
    );
$$;

CREATE FUNCTION acquire_manager_lease(
    p_manager_id  text,
    p_instance_id uuid,
    p_host        text,
    p_pid         integer,
    p_ttl_s       double precision,
    p_capacity    integer DEFAULT 0,
    p_agents      integer DEFAULT 0,
    p_state       text DEFAULT 'leading',
    p_replaces    uuid DEFAULT NULL
) RETURNS TABLE (acquired boolean, took_over boolean, lease manager_leases)
LANGUAGE plpgsql AS $$
DECLARE
    v_row manager_leases;
    v_expires timestamptz := now() + make_interval(secs => greatest(p_ttl_s, 0.1));
BEGIN
    IF p_state NOT IN ('leading', 'draining') THEN
        RAISE EXCEPTION 'acquire_manager_lease: state must be leading or draining, not %', p_state
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO manager_leases AS l (manager_id, instance_id, host, pid, expires_at,
                                     capacity, agents, state)
    VALUES (p_manager_id, p_instance_id, p_host, p_pid, v_expires, p_capacity, p_agents, p_state)
    ON CONFLICT (manager_id) DO NOTHING
    RETURNING * INTO v_row;
    IF FOUND THEN
        RETURN QUERY SELECT true, false, v_row;
        RETURN;
    END IF;
    SELECT * INTO v_row FROM manager_leases WHERE manager_id = p_manager_id FOR UPDATE;
    IF v_row.instance_id = p_instance_id AND v_row.state <> 'stopped' THEN
        -- Our own lease: renew it (also after it expired, if nobody took it).
        -- A drain asked for (drain_manager) lasts until this process stops.
        UPDATE manager_leases
           SET renewed_at = now(), expires_at = v_expires, capacity = p_capacity,
               agents = p_agents, host = p_host, pid = p_pid,
               state = CASE WHEN state = 'draining' THEN 'draining' ELSE p_state END
         WHERE manager_id = p_manager_id
        RETURNING * INTO v_row;
        RETURN QUERY SELECT true, false, v_row;
        RETURN;
    END IF;
    IF v_row.expires_at <= now() OR v_row.state = 'stopped'
       OR (p_replaces IS NOT NULL AND v_row.instance_id = p_replaces) THEN
        UPDATE manager_leases
           SET instance_id = p_instance_id, host = p_host, pid = p_pid, started_at = now(),
               renewed_at = now(), expires_at = v_expires, capacity = p_capacity,
               agents = p_agents, state = p_state
         WHERE manager_id = p_manager_id
        RETURNING * INTO v_row;
        RETURN QUERY SELECT true, true, v_row;
        RETURN;
    END IF;
    RETURN QUERY SELECT false, false, v_row;
END;
$$;

-- A clean shutdown: the lease stays as 'stopped' (expired), so the next start
-- of this MANAGER_ID takes it at once and `docagents managers` shows the stop.
CREATE FUNCTION release_manager_lease(p_manager_id text, p_instance_id uuid)
RETURNS boolean
LANGUAGE sql AS $$
    WITH released AS (
        UPDATE manager_leases
           SET state = 'stopped', expires_at = now(), agents = 0
         WHERE manager_id = p_manager_id AND instance_id = p_instance_id
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM released);
$$;

-- `docagents drain MANAGER_ID`: the manager sees 'draining' at its next renewal,
-- takes no new documents and detaches its agents (the others take them over).
CREATE FUNCTION drain_manager(p_manager_id text)
RETURNS boolean
LANGUAGE sql AS $$
    WITH drained AS (
        UPDATE manager_leases SET state = 'draining'
         WHERE manager_id = p_manager_id AND state IN ('leading', 'draining')
           AND expires_at > now()
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM drained);
$$;

-- Every lease with its age and its state as seen now: leading, draining,
-- expired (its manager stopped renewing) or stopped (released).
CREATE FUNCTION list_manager_leases()
RETURNS TABLE (
    manager_id  text,
    instance_id uuid,
    host        text,
    pid         integer,
    started_at  timestamptz,
    renewed_at  timestamptz,
    expires_at  timestamptz,
    capacity    integer,
    agents      integer,
    state       text,
    lease_age_s double precision,
    live_agents bigint
)
LANGUAGE sql STABLE AS $$
    SELECT l.manager_id, l.instance_id, l.host, l.pid, l.started_at, l.renewed_at,
           l.expires_at, l.capacity, l.agents,
           CASE WHEN l.state = 'stopped' THEN 'stopped'
                WHEN l.expires_at <= now() THEN 'expired'
                ELSE l.state END,
           extract(epoch FROM now() - l.renewed_at)::double precision,
           (SELECT count(*) FROM agent_connections a
             WHERE a.manager_id = l.manager_id
               AND a.status IN ('connecting', 'active', 'idle', 'detaching'))
      FROM manager_leases l
     ORDER BY l.manager_id;
$$;

-- End every live row of every expired lease; the rows ended.
CREATE FUNCTION sweep_expired_leases()
RETURNS SETOF agent_connections
LANGUAGE sql AS $$
    UPDATE agent_connections a
       SET status = 'disconnected',
           error_message = 'manager_lease_expired: the lease of manager '
                           || a.manager_id || ' expired at ' || l.expires_at::text,
           disconnected_at = now()
      FROM manager_leases l
     WHERE l.manager_id = a.manager_id
       AND l.expires_at <= now()
       AND a.status IN ('connecting', 'active', 'idle', 'detaching')
    RETURNING a.*;
$$;

-- Of p_document_ids, those a claim would get now.
CREATE FUNCTION claimable_documents(p_document_ids text[])
RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT d.document_id
      FROM unnest(p_document_ids) AS d (document_id)
     WHERE NOT EXISTS (
        SELECT 1
          FROM agent_connections a
          LEFT JOIN manager_leases l ON l.manager_id = a.manager_id
         WHERE a.document_id = d.document_id
           AND a.status IN ('connecting', 'active', 'idle', 'detaching')
           AND (l.manager_id IS NULL OR l.expires_at > now())
     );
$$;

DROP FUNCTION claim_document(text, text, text, text, jsonb, jsonb);

CREATE FUNCTION claim_document(
    p_document_id  text,
    p_agent_id     text,
    p_manager_id   text,
    p_manager_host text DEFAULT NULL,
    p_metadata     jsonb DEFAULT '{}'::jsonb,
    p_supersedes   jsonb DEFAULT NULL
) RETURNS TABLE (claimed boolean, connection agent_connections)
LANGUAGE plpgsql AS $$
DECLARE
    v_row agent_connections;
    v_status text;
    v_expired timestamptz;
BEGIN
    -- The same life asking again (its first answer was lost).
    SELECT * INTO v_row FROM agent_connections WHERE agent_id = p_agent_id;
    IF FOUND THEN
        RETURN QUERY SELECT (v_row.document_id = p_document_id
                             AND v_row.status IN ('connecting', 'active', 'idle', 'detaching')),
                            v_row;
        RETURN;
    END IF;
    -- Only a manager holding a valid lease claims (metadata.manager_instance, when
    -- given, must be the holder's instance).
    IF NOT manager_lease_valid(p_manager_id, p_metadata->>'manager_instance') THEN
        RAISE EXCEPTION 'claim_document: manager % holds no valid lease', p_manager_id
            USING ERRCODE = 'P0001', HINT = 'manager_lease_invalid';
    END IF;
    IF jsonb_typeof(p_supersedes) = 'object' AND p_supersedes ? 'agent_id' THEN
        v_status := coalesce(p_supersedes->>'status', 'disconnected');
        IF v_status NOT IN ('disconnected', 'error') THEN
            v_status := 'disconnected';
        END IF;
        UPDATE agent_connections
           SET status = v_status,
               error_message = coalesce(p_supersedes->>'reason', error_message),
               disconnected_at = now()
         WHERE agent_id = p_supersedes->>'agent_id'
           AND document_id = p_document_id
           AND manager_id = p_manager_id
           AND status IN ('connecting', 'active', 'idle', 'detaching');
    END IF;
    FOR attempt IN 1..5 LOOP
        INSERT INTO agent_connections (document_id, agent_id, manager_id, manager_host, status, metadata)
        VALUES (p_document_id, p_agent_id, p_manager_id, p_manager_host, 'connecting',
                coalesce(p_metadata, '{}'::jsonb))
        ON CONFLICT (document_id) WHERE status IN ('connecting', 'active', 'idle', 'detaching')
        DO NOTHING
        RETURNING * INTO v_row;
        IF FOUND THEN
            RETURN QUERY SELECT true, v_row;
            RETURN;
        END IF;
        SELECT * INTO v_row FROM agent_connections
         WHERE document_id = p_document_id
           AND status IN ('connecting', 'active', 'idle', 'detaching')
         FOR UPDATE;
        IF FOUND THEN
            SELECT l.expires_at INTO v_expired FROM manager_leases l
             WHERE l.manager_id = v_row.manager_id AND l.expires_at <= now();
            IF NOT FOUND THEN
                RETURN QUERY SELECT false, v_row;
                RETURN;
            END IF;
            -- Its manager's lease expired: that life is dead. End it, claim again.
            UPDATE agent_connections
               SET status = 'disconnected',
                   error_message = 'manager_lease_expired: the lease of manager '
                                   || v_row.manager_id || ' expired at ' || v_expired::text,
                   disconnected_at = now()
             WHERE id = v_row.id;
        END IF;
        -- The owner ended between our insert and our read: try again.
    END LOOP;
    RAISE EXCEPTION 'claim_document(%): live owner kept changing', p_document_id
        USING ERRCODE = 'serialization_failure';
END;
$$;

CREATE OR REPLACE FUNCTION get_agent_system_stats()
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
    WITH counted AS (
        SELECT a.*,
               a.status IN ('connecting', 'active')
               AND NOT EXISTS (SELECT 1 FROM manager_leases l
                                WHERE l.manager_id = a.manager_id
                                  AND l.expires_at <= now()) AS live
          FROM agent_connections a
    )
    SELECT count(*) FILTER (WHERE live),
           count(*) FILTER (WHERE live AND status = 'active'),
           count(*) FILTER (WHERE live AND status = 'connecting'),
           round(avg(coalesce(pss_mb, memory_mb)) FILTER (WHERE live), 2),
           coalesce(sum(llm_calls_count), 0)::bigint,
           coalesce(sum(locations_marked_count), 0)::bigint,
           count(DISTINCT document_id) FILTER (WHERE live),
           round(avg(memory_mb) FILTER (WHERE live), 2),
           coalesce(sum(llm_calls_count) FILTER (WHERE live), 0)::bigint,
           coalesce(sum(locations_marked_count) FILTER (WHERE live), 0)::bigint
      FROM counted;
$$;

CREATE FUNCTION end_agent_life_at(
    p_agent_id text,
    p_status   text,
    p_reason   text,
    p_ended_at timestamptz
) RETURNS SETOF agent_connections
LANGUAGE plpgsql AS $$
BEGIN
    IF p_status NOT IN ('disconnected', 'error') THEN
        RAISE EXCEPTION 'end_agent_life_at: final status must be disconnected or error, not %',
            p_status USING ERRCODE = 'check_violation';
    END IF;
    RETURN QUERY
    UPDATE agent_connections
       SET status = p_status,
           error_message = coalesce(p_reason, error_message),
           disconnected_at = least(greatest(coalesce(p_ended_at, now()), connected_at), now())
     WHERE agent_id = p_agent_id
       AND status NOT IN ('disconnected', 'error')
    RETURNING *;
END;
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON manager_leases TO service_role;
        GRANT EXECUTE ON FUNCTION claim_document(text, text, text, text, jsonb, jsonb),
            acquire_manager_lease(text, uuid, text, integer, double precision, integer,
                                  integer, text, uuid),
            release_manager_lease(text, uuid),
            drain_manager(text),
            list_manager_leases(),
            sweep_expired_leases(),
            claimable_documents(text[]),
            manager_lease_valid(text, text),
            end_agent_life_at(text, text, text, timestamptz)
            TO service_role;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        -- get_agent_system_stats() (granted to authenticated) reads the leases.
        GRANT SELECT ON manager_leases TO authenticated;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname IN ('service_role', 'authenticated')) THEN
        ALTER TABLE manager_leases ENABLE ROW LEVEL SECURITY;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
            CREATE POLICY manager_leases_service_role_all ON manager_leases AS PERMISSIVE
                FOR ALL TO service_role USING (true) WITH CHECK (true);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
            CREATE POLICY manager_leases_authenticated_read ON manager_leases AS PERMISSIVE
                FOR SELECT TO authenticated USING (true);
        END IF;
    END IF;
END;
$$;
