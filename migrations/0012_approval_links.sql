CREATE TABLE "approval_links_used" (
	"jti" text PRIMARY KEY NOT NULL,
	"used_at" bigint NOT NULL
);
