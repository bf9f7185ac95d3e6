-- The agent life cycle (docs/lifecycle.md):
--
-- 1. A life in 'detaching' (or 'idle') still holds its document: the partial
--    unique index covers every status before the end, so another manager cannot
--    claim while the old worker is still leaving.
-- 2. claim_document() is idempotent per agent life: the same (document, agent)
--    claimed again after a lost answer returns its own row as claimed.
-- 3. claim_document() takes p_supersedes: this manager's previous life of the
--    document ({"agent_id", "status", "reason"}), ended in the same statement if
--    its end has not been written yet, with its own status and reason.
-- 4. End reasons are codes (the first word of error_message, see
--    manager/supervisor.py EndReason); agent_lifetimes.end_reason is that code,
--    and end_detail the whole text.

DROP INDEX agent_connections_one_live_per_document;
CREATE UNIQUE INDEX agent_connections_one_live_per_document
    ON agent_connections (document_id)
    WHERE status IN ('connecting', 'active', 'idle', 'detaching');

DROP FUNCTION claim_document(text, text, text, text, jsonb);

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
BEGIN
    -- The same life asking again (its first answer was lost).
    SELECT * INTO v_row FROM agent_connections WHERE agent_id = p_agent_id;
    IF FOUND THEN
        RETURN QUERY SELECT (v_row.document_id = p_document_id
                             AND v_row.status IN ('connecting', 'active', 'idle', 'detaching')),
                            v_row;
        RETURN;
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
           AND status IN ('connecting', 'active', 'idle', 'detaching');
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

CREATE OR REPLACE VIEW agent_lifetimes AS
SELECT id,
       document_id,
       agent_id,
       manager_id,
       status,
       connected_at,
       disconnected_at,
       coalesce(disconnected_at, now()) - connected_at AS lifetime,
       CASE
           WHEN status IN ('disconnected', 'error')
           THEN coalesce(substring(error_message FROM '^([a-z_]+)(:|$)'), error_message, status)
           ELSE NULL
       END AS end_reason,
       llm_calls_count,
       locations_marked_count,
       CASE
           WHEN status IN ('disconnected', 'error') THEN error_message
           ELSE NULL
       END AS end_detail
  FROM agent_connections;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION claim_document(text, text, text, text, jsonb, jsonb)
            TO service_role;
    END IF;
END;
$$;
