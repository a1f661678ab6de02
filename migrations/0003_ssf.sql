CREATE TABLE "ssf_outbox" (
	"seq" bigint GENERATED ALWAYS AS IDENTITY (sequence name "ssf_outbox_seq_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"receiver" text NOT NULL,
	"jti" text NOT NULL,
	"revocation_id" uuid NOT NULL,
	"revoked_at" timestamp with time zone NOT NULL,
	"ordinal" integer NOT NULL,
	"event_type" text NOT NULL,
	"set" text NOT NULL,
	"enqueued_at_ms" bigint NOT NULL,
	"state" text DEFAULT 'pending' NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"next_attempt_at_ms" bigint DEFAULT 0 NOT NULL,
	"last_error" text,
	CONSTRAINT "ssf_outbox_receiver_jti_pk" PRIMARY KEY("receiver","jti"),
	CONSTRAINT "ssf_outbox_state_check" CHECK ("ssf_outbox"."state" in ('pending', 'delivered', 'failed'))
);
--> statement-breakpoint
CREATE TABLE "ssf_streams" (
	"receiver" text PRIMARY KEY NOT NULL,
	"start_at" timestamp with time zone NOT NULL,
	"cursor_at" timestamp with time zone NOT NULL,
	"lease_owner" text,
	"lease_until" timestamp with time zone
);
--> statement-breakpoint
CREATE INDEX "ssf_outbox_pending_idx" ON "ssf_outbox" USING btree ("receiver","seq") WHERE "ssf_outbox"."state" = 'pending';--> statement-breakpoint
CREATE INDEX "ssf_outbox_revocation_idx" ON "ssf_outbox" USING btree ("receiver","revocation_id");