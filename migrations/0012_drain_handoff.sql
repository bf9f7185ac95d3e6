-- Make-before-break drain (README "Drain and rolling restarts"; docs/lifecycle.md
-- section 4). A draining manager keeps its agents running and claims nothing; the
-- other managers take its documents over one by one, and the docserver's fence
-- retires the old agent once the new one connects.
--
-- 1. claim_document(): a live row of another manager whose lease is 'draining'
--    (and not expired) is handed over: it is ended with reason 'drained' and the
--    document claimed, in the same statement (as a row of an expired lease is
--    ended 'manager_lease_expired'). Its worker runs on until the successor's
--    worker connects with a higher fence.
-- 2. claimable_documents(): of the given documents, those with no live row, a
--    live row of an expired lease, or a live row of a draining lease.
-- 3. drain_manager(): sets the lease 'draining' and sends NOTIFY manager_leases
--    (payload: the manager id), a wake-up for every manager listening: the
--    others probe and claim at once instead of at their next renewal, and the
--    drained one learns of a `docagents drain` at once too.
--
-- Every function is replaced in place (CREATE OR REPLACE), same signatures.

CREATE OR REPLACE FUNCTION claimable_documents(p_document_ids text[])
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
           AND (l.manager_id IS NULL OR (l.expires_at > now() AND l.state <> 'draining'))
     );
$$;

CREATE OR REPLACE FUNCTION drain_manager(p_manager_id text)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE manager_leases SET state = 'draining'
     WHERE manager_id = p_manager_id AND state IN ('leading', 'draining')
       AND expires_at > now();
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('manager_leases', p_manager_id);
    RETURN true;
END;
$$;

CREATE OR REPLACE FUNCTION claim_document(
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
    v_lease manager_leases;
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
            SELECT * INTO v_lease FROM manager_leases l WHERE l.manager_id = v_row.manager_id;
            IF FOUND AND v_lease.expires_at <= now() THEN
                -- Its manager's lease expired: that life is dead. End it, claim again.
                UPDATE agent_connections
                   SET status = 'disconnected',
                       error_message = 'manager_lease_expired: the lease of manager '
                                       || v_row.manager_id || ' expired at '
                                       || v_lease.expires_at::text,
                       disconnected_at = now()
                 WHERE id = v_row.id;
            ELSIF FOUND AND v_lease.state = 'draining' AND v_row.manager_id <> p_manager_id THEN
                -- Its manager is draining: hand the document over. Its worker runs
                -- until ours connects with a higher fence (make-before-break).
                UPDATE agent_connections
                   SET status = 'disconnected',
                       error_message = 'drained: taken over by manager ' || p_manager_id,
                       disconnected_at = now()
                 WHERE id = v_row.id;
            ELSE
                RETURN QUERY SELECT false, v_row;
                RETURN;
            END IF;
        END IF;
        -- The owner ended between our insert and our read: try again.
    END LOOP;
    RAISE EXCEPTION 'claim_document(%): live owner kept changing', p_document_id
        USING ERRCODE = 'serialization_failure';
END;
$$;
