-- Wrapped data keys move out of the wide `media` table into a narrow table of
-- their own. A DELETE or UPDATE never erases the old tuple, so shredded keys
-- linger in a table's pages until it is rewritten; rewriting a table of
-- 100-byte rows is cheap, so the reaper does that on a schedule (`VACUUM
-- FULL media_keys`), which bounds how long a shredded key stays in the table.
-- Shredding is now deleting the key's row. Rows of media being deleted have
-- none.
CREATE TABLE media_keys (
    media_id    TEXT PRIMARY KEY REFERENCES media (id) ON DELETE CASCADE,
    kek_id      TEXT NOT NULL,
    wrapped_dek BYTEA NOT NULL
);
INSERT INTO media_keys (media_id, kek_id, wrapped_dek)
    SELECT id, kek_id, wrapped_dek FROM media WHERE wrapped_dek IS NOT NULL;
-- Which keys live media still need: read at start-up and by key rotation.
CREATE INDEX media_keys_kek_id ON media_keys (kek_id);

-- Clear the old column before dropping it: DROP COLUMN only hides a column,
-- and the bytes would stay in every live row. The cleared versions are dead
-- tuples now; `VACUUM FULL media` once after the upgrade removes them.
DROP INDEX media_kek_id;
UPDATE media SET wrapped_dek = NULL WHERE wrapped_dek IS NOT NULL;
ALTER TABLE media DROP COLUMN wrapped_dek;
ALTER TABLE media DROP COLUMN kek_id;

-- A fingerprint of each key-encryption key, recorded when the key is first
-- used, so that a key id configured with other material stops the start
-- instead of failing every read. Fingerprints reveal nothing of the key.
CREATE TABLE key_fingerprints (
    kek_id      TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    recorded_at BIGINT NOT NULL
);
