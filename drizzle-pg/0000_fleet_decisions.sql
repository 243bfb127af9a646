CREATE TABLE "fleet_decisions" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "fleet_decisions_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"origin" text NOT NULL,
	"seq" bigint NOT NULL,
	"action" text NOT NULL,
	"address" "inet" NOT NULL,
	"until" timestamp with time zone,
	"reason_kind" text DEFAULT '' NOT NULL,
	"reason_service" text DEFAULT '' NOT NULL,
	"reason_account" text DEFAULT '' NOT NULL,
	"failures" integer DEFAULT 0 NOT NULL,
	"source" text DEFAULT '' NOT NULL,
	"operator" boolean DEFAULT false NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"txid" "xid8" DEFAULT pg_current_xact_id() NOT NULL,
	CONSTRAINT "fleet_decisions_action" CHECK ("fleet_decisions"."action" IN ('ban', 'unban')),
	CONSTRAINT "fleet_decisions_texts" CHECK (length("fleet_decisions"."origin") BETWEEN 1 AND 63 AND length("fleet_decisions"."reason_kind") <= 200 AND length("fleet_decisions"."reason_service") <= 64 AND length("fleet_decisions"."reason_account") <= 200 AND length("fleet_decisions"."source") <= 16)
);
--> statement-breakpoint
CREATE INDEX "fleet_decisions_txid" ON "fleet_decisions" USING btree ("txid","id");