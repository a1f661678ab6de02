CREATE TABLE "agent_grant_usage_day" (
	"agent" text NOT NULL,
	"audience" text NOT NULL,
	"scope" text NOT NULL,
	"day" integer NOT NULL,
	"tokens" bigint NOT NULL,
	"last_token_at" bigint NOT NULL,
	CONSTRAINT "agent_grant_usage_day_agent_audience_scope_day_pk" PRIMARY KEY("agent","audience","scope","day")
);
--> statement-breakpoint
CREATE TABLE "agent_usage_day" (
	"agent" text NOT NULL,
	"day" integer NOT NULL,
	"tokens" bigint NOT NULL,
	"denials" bigint NOT NULL,
	"last_token_at" bigint,
	CONSTRAINT "agent_usage_day_agent_day_pk" PRIMARY KEY("agent","day")
);
--> statement-breakpoint
CREATE TABLE "agent_usage_hour" (
	"agent" text NOT NULL,
	"hour" integer NOT NULL,
	"tokens" bigint NOT NULL,
	"denials" bigint NOT NULL,
	CONSTRAINT "agent_usage_hour_agent_hour_pk" PRIMARY KEY("agent","hour")
);
--> statement-breakpoint
CREATE TABLE "agent_users" (
	"agent" text NOT NULL,
	"sub_iss" text NOT NULL,
	"sub" text NOT NULL,
	"first_at" bigint NOT NULL,
	"last_at" bigint NOT NULL,
	CONSTRAINT "agent_users_agent_sub_iss_sub_pk" PRIMARY KEY("agent","sub_iss","sub")
);
--> statement-breakpoint
CREATE INDEX "agent_usage_day_day_idx" ON "agent_usage_day" USING btree ("day");--> statement-breakpoint
CREATE INDEX "agent_usage_hour_hour_idx" ON "agent_usage_hour" USING btree ("hour");--> statement-breakpoint
CREATE INDEX "agent_users_agent_last_idx" ON "agent_users" USING btree ("agent","last_at");--> statement-breakpoint
CREATE INDEX "audit_log_denied_agent_idx" ON "audit_log" USING btree ("agent","id") WHERE "audit_log"."event" = 'token.denied';