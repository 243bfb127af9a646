-- Roles, rights and row-level security of the fleet (docs/fleet.md). Every statement is safe to run again.
-- ampere_node: each node's login role is a member; it reads every row and inserts only rows of its own origin.
-- ampere_operator: people and tools; inserts under their own name, and their unbans lift a ban of any origin.
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ampere_node') THEN CREATE ROLE ampere_node NOLOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ampere_operator') THEN CREATE ROLE ampere_operator NOLOGIN; END IF;
END $$;
--> statement-breakpoint
REVOKE ALL ON "fleet_decisions" FROM PUBLIC;
--> statement-breakpoint
GRANT SELECT, INSERT ON "fleet_decisions" TO ampere_node, ampere_operator;
--> statement-breakpoint
ALTER TABLE "fleet_decisions" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY fleet_read ON "fleet_decisions" FOR SELECT TO ampere_node, ampere_operator USING (true);
--> statement-breakpoint
CREATE POLICY fleet_node_insert ON "fleet_decisions" FOR INSERT TO ampere_node WITH CHECK (origin = current_user AND NOT operator);
--> statement-breakpoint
CREATE POLICY fleet_operator_insert ON "fleet_decisions" FOR INSERT TO ampere_operator WITH CHECK (origin = current_user);
--> statement-breakpoint
-- History is append only, for its owner too: a decision once made stays what it was.
CREATE OR REPLACE FUNCTION fleet_decisions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'fleet_decisions is append only'; END $$;
--> statement-breakpoint
CREATE TRIGGER fleet_decisions_no_update BEFORE UPDATE ON "fleet_decisions" FOR EACH STATEMENT EXECUTE FUNCTION fleet_decisions_immutable();
--> statement-breakpoint
-- One notification per inserting statement: a listener fetches from its cursor, so the payload is empty.
CREATE OR REPLACE FUNCTION fleet_decisions_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('ampere_fleet', ''); RETURN NULL; END $$;
--> statement-breakpoint
CREATE TRIGGER fleet_decisions_notify AFTER INSERT ON "fleet_decisions" FOR EACH STATEMENT EXECUTE FUNCTION fleet_decisions_notify();
