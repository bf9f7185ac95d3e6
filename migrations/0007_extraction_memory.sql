-- Extraction memory: what the model already said about each sentence of a
-- document, shared by every agent life and every manager (invariant 12).
--
-- Workers never see the database: the manager reads a document's memory when
-- it starts a life (load_extraction_memory) and hands it over the worker's
-- pipe; it writes what the worker reports (record_extractions). A row is one
-- sentence (by the digest of its normalised text) for one extractor version
-- (model and prompt): 'done' with the places found (possibly none), 'retry'
-- (calls failed; the next life tries again) or 'failed' (given up). Bounded:
-- a document's rows not seen for the retention period go, and a document keeps
-- at most p_cap rows (the least recently seen go first).

CREATE TABLE extraction_memory (
    document_id  text        NOT NULL CHECK (length(document_id) BETWEEN 1 AND 512),
    extractor    text        NOT NULL CHECK (length(extractor) BETWEEN 1 AND 200),
    sentence_key text        NOT NULL CHECK (length(sentence_key) BETWEEN 1 AND 64),
    status       text        NOT NULL CHECK (status IN ('done', 'retry', 'failed')),
    places       jsonb       NOT NULL DEFAULT '[]'::jsonb,
    attempts     integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (document_id, extractor, sentence_key)
);
CREATE INDEX extraction_memory_document_seen ON extraction_memory (document_id, last_seen_at);
CREATE INDEX extraction_memory_seen ON extraction_memory (last_seen_at);

-- What extraction cost, per document and hour (written with each report).
CREATE TABLE extraction_usage_hourly (
    document_id       text        NOT NULL,
    hour              timestamptz NOT NULL,
    sentences_sent    bigint      NOT NULL DEFAULT 0,
    cache_hits        bigint      NOT NULL DEFAULT 0,
    prompt_tokens     bigint      NOT NULL DEFAULT 0,
    completion_tokens bigint      NOT NULL DEFAULT 0,
    failures          bigint      NOT NULL DEFAULT 0,
    given_up          bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (document_id, hour)
);
CREATE INDEX extraction_usage_hourly_hour ON extraction_usage_hourly (hour);

-- Sentences the document's current agent still waits to extract (its last report).
CREATE TABLE extraction_backlog (
    document_id text        PRIMARY KEY,
    pending     integer     NOT NULL DEFAULT 0 CHECK (pending >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- A document's memory, most recently seen first (at most p_limit rows).
CREATE FUNCTION load_extraction_memory(p_document_id text, p_limit integer DEFAULT 20000)
RETURNS TABLE (sentence_key text, extractor text, status text, places jsonb,
               attempts integer, error text)
LANGUAGE sql STABLE AS $$
    SELECT m.sentence_key, m.extractor, m.status, m.places, m.attempts, m.error
      FROM extraction_memory m
     WHERE m.document_id = p_document_id
     ORDER BY m.last_seen_at DESC
     LIMIT p_limit;
$$;

-- One worker report: new entries (a 'done' row is never turned back into
-- 'retry' or 'failed'), the keys reused (seen again), the costs of the hour,
-- the backlog; then the document's retention and cap. Returns entries stored.
CREATE FUNCTION record_extractions(
    p_document_id text,
    p_entries     jsonb,
    p_seen        jsonb,
    p_usage       jsonb,
    p_cap         integer DEFAULT 20000,
    p_retention   interval DEFAULT '30 days'
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_stored integer := 0;
BEGIN
    IF p_document_id IS NULL OR length(p_document_id) NOT BETWEEN 1 AND 512 THEN
        RAISE EXCEPTION 'record_extractions needs a document id' USING ERRCODE = '22004';
    END IF;

    WITH incoming AS (
        SELECT DISTINCT ON (e.extractor, e.key)
               e.extractor, e.key, e.status, coalesce(e.places, '[]'::jsonb) AS places,
               coalesce(e.attempts, 0) AS attempts, e.error
          FROM jsonb_to_recordset(coalesce(p_entries, '[]'::jsonb))
               AS e(key text, extractor text, status text, places jsonb, attempts integer,
                    error text)
         WHERE e.key IS NOT NULL AND e.extractor IS NOT NULL
    )
    INSERT INTO extraction_memory AS m
           (document_id, extractor, sentence_key, status, places, attempts, error)
    SELECT p_document_id, i.extractor, i.key, i.status, i.places, i.attempts, i.error
      FROM incoming i
    ON CONFLICT (document_id, extractor, sentence_key) DO UPDATE
       SET status = excluded.status,
           places = excluded.places,
           attempts = excluded.attempts,
           error = excluded.error,
           updated_at = now(),
           last_seen_at = now()
     WHERE m.status <> 'done' OR excluded.status = 'done';
    GET DIAGNOSTICS v_stored = ROW_COUNT;

    IF jsonb_typeof(p_seen) = 'array' AND jsonb_array_length(p_seen) > 0 THEN
        UPDATE extraction_memory m
           SET last_seen_at = now()
         WHERE m.document_id = p_document_id
           AND m.sentence_key IN (SELECT jsonb_array_elements_text(p_seen));
    END IF;

    IF p_usage IS NOT NULL AND (
           coalesce((p_usage->>'sentences_sent')::bigint, 0)
         + coalesce((p_usage->>'cache_hits')::bigint, 0)
         + coalesce((p_usage->>'prompt_tokens')::bigint, 0)
         + coalesce((p_usage->>'completion_tokens')::bigint, 0)
         + coalesce((p_usage->>'failures')::bigint, 0)
         + coalesce((p_usage->>'given_up')::bigint, 0)) > 0 THEN
        INSERT INTO extraction_usage_hourly AS u
               (document_id, hour, sentences_sent, cache_hits, prompt_tokens,
                completion_tokens, failures, given_up)
        VALUES (p_document_id, date_trunc('hour', now()),
                coalesce((p_usage->>'sentences_sent')::bigint, 0),
                coalesce((p_usage->>'cache_hits')::bigint, 0),
                coalesce((p_usage->>'prompt_tokens')::bigint, 0),
                coalesce((p_usage->>'completion_tokens')::bigint, 0),
                coalesce((p_usage->>'failures')::bigint, 0),
                coalesce((p_usage->>'given_up')::bigint, 0))
        ON CONFLICT (document_id, hour) DO UPDATE
           SET sentences_sent = u.sentences_sent + excluded.sentences_sent,
               cache_hits = u.cache_hits + excluded.cache_hits,
               prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
               completion_tokens = u.completion_tokens + excluded.completion_tokens,
               failures = u.failures + excluded.failures,
               given_up = u.given_up + excluded.given_up;
    END IF;

    IF p_usage ? 'pending' THEN
        INSERT INTO extraction_backlog AS b (document_id, pending)
        VALUES (p_document_id, greatest(coalesce((p_usage->>'pending')::integer, 0), 0))
        ON CONFLICT (document_id) DO UPDATE
           SET pending = excluded.pending, updated_at = now();
    END IF;

    DELETE FROM extraction_memory m
     WHERE m.document_id = p_document_id
       AND m.last_seen_at < now() - p_retention;

    IF p_cap IS NOT NULL AND p_cap >= 0 THEN
        DELETE FROM extraction_memory m
         WHERE m.document_id = p_document_id
           AND (m.extractor, m.sentence_key) IN (
                SELECT x.extractor, x.sentence_key FROM extraction_memory x
                 WHERE x.document_id = p_document_id
                 ORDER BY x.last_seen_at DESC, x.updated_at DESC
                OFFSET p_cap);
    END IF;
    RETURN v_stored;
END;
$$;

-- Retention for documents nobody opens any more (their rows are never written
-- again, so record_extractions never prunes them): at most p_batch rows a call.
CREATE FUNCTION prune_extraction_memory(p_older_than interval, p_batch integer DEFAULT 5000)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_deleted bigint;
BEGIN
    WITH doomed AS (
        SELECT document_id, extractor, sentence_key FROM extraction_memory
         WHERE last_seen_at < now() - p_older_than
         ORDER BY last_seen_at
         LIMIT p_batch
         FOR UPDATE SKIP LOCKED
    )
    DELETE FROM extraction_memory m USING doomed d
     WHERE m.document_id = d.document_id AND m.extractor = d.extractor
       AND m.sentence_key = d.sentence_key;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    DELETE FROM extraction_usage_hourly WHERE hour < now() - p_older_than;
    DELETE FROM extraction_backlog WHERE updated_at < now() - p_older_than;
    RETURN v_deleted;
END;
$$;

-- Per document: sentences waiting (the agent's last report), retrying and given up.
CREATE VIEW document_extraction_state AS
SELECT d.document_id,
       coalesce(b.pending, 0)                                        AS pending,
       count(*) FILTER (WHERE m.status = 'retry')                    AS retrying,
       count(*) FILTER (WHERE m.status = 'failed')                   AS failed,
       count(*) FILTER (WHERE m.status = 'done')                     AS remembered
  FROM (SELECT document_id FROM extraction_memory
        UNION SELECT document_id FROM extraction_backlog) d
  LEFT JOIN extraction_backlog b ON b.document_id = d.document_id
  LEFT JOIN extraction_memory m ON m.document_id = d.document_id
 GROUP BY d.document_id, b.pending;

-- The extraction figures of `docagents stats`: the last hour's costs and now's state.
CREATE FUNCTION get_extraction_stats()
RETURNS TABLE (sentences_sent_1h bigint, cache_hits_1h bigint, prompt_tokens_1h bigint,
               completion_tokens_1h bigint, failures_1h bigint, pending bigint,
               failed bigint, remembered bigint)
LANGUAGE sql STABLE AS $$
    SELECT (SELECT coalesce(sum(u.sentences_sent), 0)::bigint FROM extraction_usage_hourly u
             WHERE u.hour >= date_trunc('hour', now() - interval '1 hour')),
           (SELECT coalesce(sum(u.cache_hits), 0)::bigint FROM extraction_usage_hourly u
             WHERE u.hour >= date_trunc('hour', now() - interval '1 hour')),
           (SELECT coalesce(sum(u.prompt_tokens), 0)::bigint FROM extraction_usage_hourly u
             WHERE u.hour >= date_trunc('hour', now() - interval '1 hour')),
           (SELECT coalesce(sum(u.completion_tokens), 0)::bigint FROM extraction_usage_hourly u
             WHERE u.hour >= date_trunc('hour', now() - interval '1 hour')),
           (SELECT coalesce(sum(u.failures), 0)::bigint FROM extraction_usage_hourly u
             WHERE u.hour >= date_trunc('hour', now() - interval '1 hour')),
           (SELECT coalesce(sum(b.pending), 0)::bigint FROM extraction_backlog b
              JOIN agent_connections c ON c.document_id = b.document_id
             WHERE c.status IN ('connecting', 'active', 'idle', 'detaching')),
           (SELECT count(*) FROM extraction_memory WHERE status = 'failed'),
           (SELECT count(*) FROM extraction_memory WHERE status = 'done');
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE
            ON extraction_memory, extraction_usage_hourly, extraction_backlog TO service_role;
        GRANT SELECT ON document_extraction_state TO service_role;
        GRANT EXECUTE ON FUNCTION load_extraction_memory(text, integer),
            record_extractions(text, jsonb, jsonb, jsonb, integer, interval),
            prune_extraction_memory(interval, integer),
            get_extraction_stats() TO service_role;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        GRANT SELECT ON extraction_usage_hourly TO authenticated;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname IN ('service_role', 'authenticated')) THEN
        ALTER TABLE extraction_memory ENABLE ROW LEVEL SECURITY;
        ALTER TABLE extraction_usage_hourly ENABLE ROW LEVEL SECURITY;
        ALTER TABLE extraction_backlog ENABLE ROW LEVEL SECURITY;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
            CREATE POLICY extraction_memory_service_role_all ON extraction_memory
                AS PERMISSIVE FOR ALL TO service_role USING (true) WITH CHECK (true);
            CREATE POLICY extraction_usage_hourly_service_role_all ON extraction_usage_hourly
                AS PERMISSIVE FOR ALL TO service_role USING (true) WITH CHECK (true);
            CREATE POLICY extraction_backlog_service_role_all ON extraction_backlog
                AS PERMISSIVE FOR ALL TO service_role USING (true) WITH CHECK (true);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
            CREATE POLICY extraction_usage_hourly_authenticated_read ON extraction_usage_hourly
                AS PERMISSIVE FOR SELECT TO authenticated USING (true);
        END IF;
    END IF;
END;
$$;
