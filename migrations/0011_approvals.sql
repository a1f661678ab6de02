CREATE TABLE "approval_requests" (
	"id" text PRIMARY KEY NOT NULL,
	"handle_hash" text NOT NULL,
	"agent" text NOT NULL,
	"sub" text NOT NULL,
	"sub_iss" text NOT NULL,
	"audience" text NOT NULL,
	"scopes" text[] NOT NULL,
	"details" text NOT NULL,
	"requested_ttl" integer,
	"subject" text NOT NULL,
	"binding_message" text,
	"action_hash" text NOT NULL,
	"approvers" text NOT NULL,
	"status" text NOT NULL,
	"created_at" bigint NOT NULL,
	"expires_at" bigint NOT NULL,
	"poll_interval" integer NOT NULL,
	"last_poll_at" bigint,
	"decided_at" bigint,
	"decided_by" text,
	"decided_via" text,
	"note" text,
	"issued_jti" text,
	CONSTRAINT "approval_requests_handle_hash_unique" UNIQUE("handle_hash")
);
--> statement-breakpoint
CREATE INDEX "approval_requests_agent_status_idx" ON "approval_requests" USING btree ("agent","status");--> statement-breakpoint
CREATE INDEX "approval_requests_action_idx" ON "approval_requests" USING btree ("action_hash","decided_at");