ALTER TABLE "ssf_streams" ADD COLUMN "last_success_at_ms" bigint;--> statement-breakpoint
ALTER TABLE "ssf_streams" ADD COLUMN "last_failure_at_ms" bigint;--> statement-breakpoint
ALTER TABLE "ssf_streams" ADD COLUMN "last_failure" text;