-- Operator controls: deleting apps, naming tokens, rotating keys.

-- A deleted app is kept (without tokens) until the reaper has removed its
-- media, whose rows refer to it; then the reaper removes it too.
ALTER TABLE apps ADD COLUMN deleted_at BIGINT;

-- Tokens get a public id (the first 16 hex digits of their SHA-256), by
-- which they are listed and revoked; the secret is still never stored.
ALTER TABLE tokens ADD COLUMN id TEXT;
UPDATE tokens SET id = substr(token_sha256, 1, 16);
CREATE UNIQUE INDEX tokens_id ON tokens (id);

-- Which keys live media still need: read at start-up and by key rotation.
CREATE INDEX media_kek_id ON media (kek_id) WHERE wrapped_dek IS NOT NULL;
