CREATE TABLE "agent_depth_day" (
	"agent" text NOT NULL,
	"day" integer NOT NULL,
	"max_depth" integer NOT NULL,
	CONSTRAINT "agent_depth_day_agent_day_pk" PRIMARY KEY("agent","day")
);
--> statement-breakpoint
ALTER TABLE "agent_grant_usage_day" ALTER COLUMN "last_token_at" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "agent_grant_usage_day" ADD COLUMN "denials" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
CREATE INDEX "audit_log_denied_request_id_idx" ON "audit_log" USING btree (("record"::jsonb ->> 'request_id')) WHERE "audit_log"."event" = 'token.denied';