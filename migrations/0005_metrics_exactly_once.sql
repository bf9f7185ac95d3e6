-- A metrics batch is recorded once, even when it is sent twice.
--
-- The manager's writer sends each batch with its own id (a random writer id,
-- new with every manager process, and a sequence number that only grows). When
-- the connection drops after the database committed a batch but before the
-- answer arrived, the writer cannot know, and sends the same batch again after
-- reconnecting: without this, its samples were inserted twice and its counters
-- (llm_calls_count, locations_marked_count) added twice. A writer sends its
-- batches one at a time, in order, and repeats a batch before sending any newer
-- one, so the last sequence number recorded per writer is enough to know.
--
-- record_agent_metrics(jsonb) stays as it was (no id, no deduplication).

CREATE TABLE metrics_writers (
    writer_id  uuid PRIMARY KEY,
    last_batch bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Returns the number of samples inserted, or NULL when this batch (this writer,
-- this sequence number or an earlier one) was recorded before.
CREATE FUNCTION record_agent_metrics_once(p_writer_id uuid, p_batch_seq bigint, p_batch jsonb)
RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    IF p_writer_id IS NULL OR p_batch_seq IS NULL THEN
        RAISE EXCEPTION 'record_agent_metrics_once needs a writer id and a batch number'
            USING ERRCODE = '22004';
    END IF;
    INSERT INTO metrics_writers AS w (writer_id, last_batch)
    VALUES (p_writer_id, p_batch_seq)
    ON CONFLICT (writer_id) DO UPDATE
        SET last_batch = excluded.last_batch, updated_at = now()
        WHERE w.last_batch < excluded.last_batch;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN record_agent_metrics(p_batch);
END;
$$;

-- Retention also forgets writers not heard from within the window (one row per
-- manager process; a writer that sends again starts a new row).
CREATE OR REPLACE FUNCTION prune_history(p_older_than interval, p_batch integer DEFAULT 5000)
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

    WITH doomed AS (
        SELECT writer_id FROM metrics_writers
         WHERE updated_at < now() - p_older_than
         LIMIT p_batch
         FOR UPDATE SKIP LOCKED
    )
    DELETE FROM metrics_writers mw USING doomed WHERE mw.writer_id = doomed.writer_id;

    RETURN QUERY SELECT v_metrics, v_activity;
END;
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON metrics_writers TO service_role;
        GRANT EXECUTE ON FUNCTION record_agent_metrics_once(uuid, bigint, jsonb) TO service_role;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname IN ('service_role', 'authenticated')) THEN
        ALTER TABLE metrics_writers ENABLE ROW LEVEL SECURITY;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
            CREATE POLICY metrics_writers_service_role_all ON metrics_writers
                AS PERMISSIVE FOR ALL TO service_role USING (true) WITH CHECK (true);
        END IF;
    END IF;
END;
$$;
