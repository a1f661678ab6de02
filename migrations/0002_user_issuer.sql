ALTER TABLE "revocations" DROP CONSTRAINT "revocations_target_check";--> statement-breakpoint
ALTER TABLE "audit_log" ADD COLUMN "sub_iss" text;--> statement-breakpoint
ALTER TABLE "revocations" ADD COLUMN "sub_iss" text;--> statement-breakpoint
ALTER TABLE "revocations" ADD CONSTRAINT "revocations_target_check" CHECK (case "revocations"."kind"
        when 'jti' then "revocations"."jti" is not null and "revocations"."agent" is null and "revocations"."sub" is null and "revocations"."sub_iss" is null
        when 'chain' then "revocations"."jti" is not null and "revocations"."agent" is null and "revocations"."sub" is null and "revocations"."sub_iss" is null
        when 'agent' then "revocations"."agent" is not null and "revocations"."sub" is null and "revocations"."jti" is null and "revocations"."sub_iss" is null
        when 'sub' then "revocations"."sub" is not null and "revocations"."agent" is null and "revocations"."jti" is null and ("revocations"."sub_iss" is null or "revocations"."sub_iss" <> '')
        when 'agent_sub' then "revocations"."agent" is not null and "revocations"."sub" is not null and "revocations"."jti" is null and ("revocations"."sub_iss" is null or "revocations"."sub_iss" <> '')
        else false end);--> statement-breakpoint
-- Existing user kills keep `sub_iss` null: they name no issuer and go on holding that `sub` at
-- every issuer, so this migration un-kills no one.
--
-- The audit log's new column is filled from each record's own hashed JSON (`sub_iss`, which every
-- `token.issued` record already holds), exactly as `mandate audit verify` derives it. The log is
-- append-only: its trigger is set aside for this one UPDATE, inside the migration's transaction
-- (ALTER TABLE holds the table's lock until commit, so no other session writes meanwhile), and
-- restored before the commit. Only the table's owner, who runs migrations, can do this.
ALTER TABLE "audit_log" DISABLE TRIGGER "audit_log_no_update_delete";--> statement-breakpoint
UPDATE "audit_log" SET "sub_iss" = ("record"::jsonb ->> 'sub_iss')
  WHERE "event" IN ('token.issued', 'token.denied', 'token.withheld') AND ("record"::jsonb ->> 'sub_iss') IS NOT NULL;--> statement-breakpoint
ALTER TABLE "audit_log" ENABLE TRIGGER "audit_log_no_update_delete";
