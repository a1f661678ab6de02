CREATE TABLE "audit_log" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "audit_log_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"chain_id" uuid NOT NULL,
	"seq" bigint NOT NULL,
	"at" timestamp with time zone NOT NULL,
	"event" text NOT NULL,
	"instance" text NOT NULL,
	"agent" text,
	"actors" text[] NOT NULL,
	"sub" text,
	"jti" text,
	"parent_jti" text,
	"root_jti" text,
	"record" text NOT NULL,
	"prev_hash" text NOT NULL,
	"hash" text NOT NULL,
	CONSTRAINT "audit_log_chain_seq_key" UNIQUE("chain_id","seq"),
	CONSTRAINT "audit_log_seq_check" CHECK ("audit_log"."seq" >= 1),
	CONSTRAINT "audit_log_hash_check" CHECK ("audit_log"."hash" ~ '^[0-9a-f]{64}$' and "audit_log"."prev_hash" ~ '^[0-9a-f]{64}$')
);
--> statement-breakpoint
CREATE INDEX "audit_log_at_idx" ON "audit_log" USING btree ("at","id");--> statement-breakpoint
CREATE INDEX "audit_log_event_idx" ON "audit_log" USING btree ("event","id");--> statement-breakpoint
CREATE INDEX "audit_log_sub_idx" ON "audit_log" USING btree ("sub","id");--> statement-breakpoint
CREATE INDEX "audit_log_jti_idx" ON "audit_log" USING btree ("jti");--> statement-breakpoint
CREATE INDEX "audit_log_root_jti_idx" ON "audit_log" USING btree ("root_jti");--> statement-breakpoint
CREATE INDEX "audit_log_actors_idx" ON "audit_log" USING gin ("actors");--> statement-breakpoint
-- The delegation log is append-only: no UPDATE, DELETE or TRUNCATE, whoever asks.
-- (Someone with the rights to drop this trigger can still alter rows; the hash chain
-- and the signed checkpoints outside the database catch that: `mandate audit verify`.)
CREATE FUNCTION "audit_log_append_only"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
--> statement-breakpoint
CREATE TRIGGER "audit_log_no_update_delete" BEFORE UPDATE OR DELETE ON "audit_log" FOR EACH ROW EXECUTE FUNCTION "audit_log_append_only"();
--> statement-breakpoint
CREATE TRIGGER "audit_log_no_truncate" BEFORE TRUNCATE ON "audit_log" FOR EACH STATEMENT EXECUTE FUNCTION "audit_log_append_only"();
--> statement-breakpoint
-- The role the broker should run as in production (not created here: roles are
-- cluster-wide and creating one needs CREATEROLE). It may INSERT and SELECT the log
-- and nothing else, and it does not own the table, so it cannot drop the trigger:
--
--   CREATE ROLE mandate_broker LOGIN PASSWORD '...';
--   GRANT CONNECT ON DATABASE mandate TO mandate_broker;
--   GRANT USAGE ON SCHEMA public TO mandate_broker;
--   GRANT SELECT, INSERT ON audit_log TO mandate_broker;
--   GRANT SELECT, INSERT, UPDATE ON revocations TO mandate_broker;   -- UPDATE: lifting a kill
--   GRANT USAGE ON SCHEMA drizzle TO mandate_broker;                 -- start-up sees nothing to migrate
--   GRANT SELECT ON drizzle.__drizzle_migrations TO mandate_broker;
--
-- Migrations (`mandate migrate`) run as the owner, a different role, before the
-- broker starts; the broker's own start-up migration is then a no-op.
