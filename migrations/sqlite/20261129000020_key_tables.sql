-- Wrapped data keys move out of the wide `media` table into a narrow table of
-- their own (see the Postgres migration of the same name for why). Shredding
-- is now deleting the key's row. Rows of media being deleted have none.
CREATE TABLE media_keys (
    media_id    TEXT PRIMARY KEY REFERENCES media (id) ON DELETE CASCADE,
    kek_id      TEXT NOT NULL,
    wrapped_dek BLOB NOT NULL
);
INSERT INTO media_keys (media_id, kek_id, wrapped_dek)
    SELECT id, kek_id, wrapped_dek FROM media WHERE wrapped_dek IS NOT NULL;
-- Which keys live media still need: read at start-up and by key rotation.
CREATE INDEX media_keys_kek_id ON media_keys (kek_id);

-- DROP COLUMN rewrites every row of `media` without the column.
DROP INDEX media_kek_id;
ALTER TABLE media DROP COLUMN wrapped_dek;
ALTER TABLE media DROP COLUMN kek_id;

-- A fingerprint of each key-encryption key, recorded when the key is first
-- used, so that a key id configured with other material stops the start
-- instead of failing every read. Fingerprints reveal nothing of the key.
CREATE TABLE key_fingerprints (
    kek_id      TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
);
