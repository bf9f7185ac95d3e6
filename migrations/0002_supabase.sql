-- Supabase-only parts: grants and RLS policies for the `service_role` and
-- `authenticated` roles, and membership of the `supabase_realtime`
-- publication. Each part runs only where that role or publication exists, so
-- this file is a no-op on plain Postgres.

DO $$
DECLARE
    t text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT USAGE ON SCHEMA public TO service_role;
        GRANT SELECT, INSERT, UPDATE, DELETE ON document_activity, agent_connections, agent_metrics
            TO service_role;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO service_role;
        GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO service_role;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        GRANT USAGE ON SCHEMA public TO authenticated;
        GRANT SELECT ON document_activity, agent_connections, agent_metrics TO authenticated;
        GRANT EXECUTE ON FUNCTION get_agent_system_stats() TO authenticated;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname IN ('service_role', 'authenticated')) THEN
        FOREACH t IN ARRAY ARRAY['document_activity', 'agent_connections', 'agent_metrics'] LOOP
            EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
                EXECUTE format(
                    'CREATE POLICY %I ON %I AS PERMISSIVE FOR ALL TO service_role USING (true) WITH CHECK (true)',
                    t || '_service_role_all', t);
            END IF;
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
                EXECUTE format(
                    'CREATE POLICY %I ON %I AS PERMISSIVE FOR SELECT TO authenticated USING (true)',
                    t || '_authenticated_read', t);
            END IF;
        END LOOP;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
        -- Realtime streams inserts on document_activity to the manager; the
        -- other two let dashboards follow agents live.
        FOREACH t IN ARRAY ARRAY['document_activity', 'agent_connections', 'agent_metrics'] LOOP
            IF NOT EXISTS (SELECT 1 FROM pg_publication_tables
                            WHERE pubname = 'supabase_realtime' AND schemaname = 'public'
                              AND tablename = t) THEN
                EXECUTE format('ALTER PUBLICATION supabase_realtime ADD TABLE public.%I', t);
            END IF;
        END LOOP;
    END IF;
END;
$$;
