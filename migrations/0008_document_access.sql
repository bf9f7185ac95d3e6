-- Per-document authorization for the docserver (DOCSERVER_AUTHZ=sql).
--
-- can_open_document(subject, document_id) returns 'read-write', 'read-only'
-- or 'denied'. `subject` is the authenticated user's id (the token's `sub`,
-- e.g. a Supabase auth.users id). The docserver asks once per connection and
-- once per listed document in /api/documents; anything other than the three
-- words counts as 'denied'.
--
-- This default grants read-write to every authenticated subject: with
-- DOCSERVER_AUTHZ=sql it makes authentication alone the gate. Operators
-- replace it with their own rules, e.g.
--
--   CREATE OR REPLACE FUNCTION can_open_document(subject text, document_id text)
--   RETURNS text LANGUAGE sql STABLE AS $$
--       SELECT coalesce(
--           (SELECT access FROM my_document_members m
--            WHERE m.user_id = subject AND m.document_id = can_open_document.document_id),
--           'denied')
--   $$;
--
-- Migrations run once, so a replaced body is never overwritten.

CREATE OR REPLACE FUNCTION can_open_document(subject text, document_id text)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT CASE WHEN subject IS NULL OR subject = '' THEN 'denied' ELSE 'read-write' END
$$;

REVOKE EXECUTE ON FUNCTION can_open_document(text, text) FROM PUBLIC;

DO $$
BEGIN
    -- Supabase: the docserver calls it with the service key through PostgREST.
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION can_open_document(text, text) TO service_role;
    END IF;
END
$$;
