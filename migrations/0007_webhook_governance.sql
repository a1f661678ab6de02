ALTER TABLE "ssf_outbox" ALTER COLUMN "revocation_id" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "ssf_outbox" ADD COLUMN "audit_id" bigint;--> statement-breakpoint
ALTER TABLE "ssf_streams" ADD COLUMN "audit_cursor_at" timestamp with time zone;--> statement-breakpoint
CREATE INDEX "ssf_outbox_audit_idx" ON "ssf_outbox" USING btree ("receiver","audit_id") WHERE "ssf_outbox"."audit_id" is not null;--> statement-breakpoint
ALTER TABLE "ssf_outbox" ADD CONSTRAINT "ssf_outbox_source_check" CHECK (("ssf_outbox"."revocation_id" is null) <> ("ssf_outbox"."audit_id" is null));