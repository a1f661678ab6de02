ALTER TABLE "revocations" DROP CONSTRAINT "revocations_kind_check";--> statement-breakpoint
ALTER TABLE "revocations" DROP CONSTRAINT "revocations_target_check";--> statement-breakpoint
ALTER TABLE "revocations" DROP CONSTRAINT "revocations_lift_check";--> statement-breakpoint
DROP INDEX "revocations_kills_idx";--> statement-breakpoint
ALTER TABLE "revocations" ADD COLUMN "instance" text;--> statement-breakpoint
CREATE INDEX "revocations_kills_idx" ON "revocations" USING btree ("created_at","id") WHERE "revocations"."kind" in ('agent', 'sub', 'agent_sub', 'instance');--> statement-breakpoint
ALTER TABLE "revocations" ADD CONSTRAINT "revocations_kind_check" CHECK ("revocations"."kind" in ('jti', 'chain', 'agent', 'sub', 'agent_sub', 'instance'));--> statement-breakpoint
ALTER TABLE "revocations" ADD CONSTRAINT "revocations_target_check" CHECK (case "revocations"."kind"
        when 'jti' then "revocations"."jti" is not null and "revocations"."agent" is null and "revocations"."sub" is null and "revocations"."sub_iss" is null and "revocations"."instance" is null
        when 'chain' then "revocations"."jti" is not null and "revocations"."agent" is null and "revocations"."sub" is null and "revocations"."sub_iss" is null and "revocations"."instance" is null
        when 'agent' then "revocations"."agent" is not null and "revocations"."sub" is null and "revocations"."jti" is null and "revocations"."sub_iss" is null and "revocations"."instance" is null
        when 'sub' then "revocations"."sub" is not null and "revocations"."agent" is null and "revocations"."jti" is null and ("revocations"."sub_iss" is null or "revocations"."sub_iss" <> '') and "revocations"."instance" is null
        when 'agent_sub' then "revocations"."agent" is not null and "revocations"."sub" is not null and "revocations"."jti" is null and ("revocations"."sub_iss" is null or "revocations"."sub_iss" <> '') and "revocations"."instance" is null
        when 'instance' then "revocations"."agent" is not null and "revocations"."instance" is not null and "revocations"."instance" <> '' and "revocations"."sub" is null and "revocations"."jti" is null and "revocations"."sub_iss" is null
        else false end);--> statement-breakpoint
ALTER TABLE "revocations" ADD CONSTRAINT "revocations_lift_check" CHECK (("revocations"."lifted_at" is null and "revocations"."lifted_by" is null) or ("revocations"."lifted_at" is not null and "revocations"."lifted_by" is not null and "revocations"."kind" in ('agent', 'sub', 'agent_sub', 'instance')));