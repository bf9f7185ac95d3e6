-- Fencing tokens (DESIGN invariant 10): every agent life gets a number that only
-- grows, so for any one document a later claim always holds a higher token than
-- every earlier one. The manager puts it in the life's credential; the docserver
-- keeps the highest token it has seen per document, refuses lower ones and closes
-- a connected agent whose token is lower than a newcomer's. One sequence for all
-- documents: simpler than a counter per document, and it grows per document too.

CREATE SEQUENCE agent_fence_seq;

ALTER TABLE agent_connections
    ADD COLUMN fence bigint NOT NULL DEFAULT nextval('agent_fence_seq');

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT USAGE, SELECT ON SEQUENCE agent_fence_seq TO service_role;
    END IF;
END;
$$;
