CREATE TABLE "anomaly_actions" (
	"agent" text NOT NULL,
	"rule" text NOT NULL,
	"acted_at" bigint NOT NULL,
	"revocation_id" uuid,
	CONSTRAINT "anomaly_actions_agent_rule_pk" PRIMARY KEY("agent","rule")
);
--> statement-breakpoint
CREATE TABLE "anomaly_audiences" (
	"agent" text NOT NULL,
	"audience" text NOT NULL,
	"first_at" bigint NOT NULL,
	CONSTRAINT "anomaly_audiences_agent_audience_pk" PRIMARY KEY("agent","audience")
);
--> statement-breakpoint
-- The audiences each agent already had tokens for, from the usage summaries: none of them is new. Rows with
-- tokens = 0 hold only denials (requests for an audience, never granted).
INSERT INTO "anomaly_audiences" ("agent", "audience", "first_at")
  SELECT "agent", "audience", min("day")::bigint * 86400 FROM "agent_grant_usage_day" WHERE "tokens" > 0 GROUP BY "agent", "audience";
