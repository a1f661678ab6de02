CREATE TABLE "agent_credentials" (
	"agent" text NOT NULL,
	"kind" text NOT NULL,
	"credential" text NOT NULL,
	"first_seen" bigint NOT NULL,
	"last_seen" bigint NOT NULL,
	CONSTRAINT "agent_credentials_agent_kind_credential_pk" PRIMARY KEY("agent","kind","credential"),
	CONSTRAINT "agent_credentials_kind" CHECK ("agent_credentials"."kind" in ('secret', 'key'))
);
