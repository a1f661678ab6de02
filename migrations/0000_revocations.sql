CREATE TABLE "revocations" (
	"id" uuid PRIMARY KEY NOT NULL,
	"kind" text NOT NULL,
	"agent" text,
	"sub" text,
	"jti" text,
	"reason" text NOT NULL,
	"created_by" text NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"expires_at" timestamp with time zone,
	"lifted_at" timestamp with time zone,
	"lifted_by" text,
	CONSTRAINT "revocations_kind_check" CHECK ("revocations"."kind" in ('jti', 'chain', 'agent', 'sub', 'agent_sub')),
	CONSTRAINT "revocations_target_check" CHECK (case "revocations"."kind"
        when 'jti' then "revocations"."jti" is not null and "revocations"."agent" is null and "revocations"."sub" is null
        when 'chain' then "revocations"."jti" is not null and "revocations"."agent" is null and "revocations"."sub" is null
        when 'agent' then "revocations"."agent" is not null and "revocations"."sub" is null and "revocations"."jti" is null
        when 'sub' then "revocations"."sub" is not null and "revocations"."agent" is null and "revocations"."jti" is null
        when 'agent_sub' then "revocations"."agent" is not null and "revocations"."sub" is not null and "revocations"."jti" is null
        else false end),
	CONSTRAINT "revocations_lift_check" CHECK (("revocations"."lifted_at" is null and "revocations"."lifted_by" is null) or ("revocations"."lifted_at" is not null and "revocations"."lifted_by" is not null and "revocations"."kind" in ('agent', 'sub', 'agent_sub')))
);
--> statement-breakpoint
CREATE INDEX "revocations_created_at_id_idx" ON "revocations" USING btree ("created_at","id");--> statement-breakpoint
CREATE INDEX "revocations_kills_idx" ON "revocations" USING btree ("created_at","id") WHERE "revocations"."kind" in ('agent', 'sub', 'agent_sub');--> statement-breakpoint
CREATE INDEX "revocations_token_expiry_idx" ON "revocations" USING btree ("expires_at") WHERE "revocations"."kind" in ('jti', 'chain');