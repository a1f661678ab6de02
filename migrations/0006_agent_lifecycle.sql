CREATE TABLE "agent_lifecycle" (
	"agent" text PRIMARY KEY NOT NULL,
	"tracked_since" bigint NOT NULL,
	"attested_at" bigint,
	"attested_by" text,
	"next_due" bigint,
	"conditions" text[] DEFAULT '{}'::text[] NOT NULL,
	"suspended" boolean DEFAULT false NOT NULL,
	"version" bigint DEFAULT 0 NOT NULL
);
