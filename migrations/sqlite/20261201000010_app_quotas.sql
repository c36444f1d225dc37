-- Per-app storage quotas: how much an app may store, and what it uses now.
--
-- The limits: NULL takes the configured default (media.max_bytes_stored,
-- media.max_media), and with none configured there is no limit.
ALTER TABLE apps ADD COLUMN max_bytes_stored INTEGER CHECK (max_bytes_stored > 0);
ALTER TABLE apps ADD COLUMN max_media        INTEGER CHECK (max_media > 0);

-- Usage is kept on the app row, for every app, so that a quota set later
-- applies at once: the bytes and media of the app's rows that count (state
-- uploading or ready). An upload is admitted by raising these with a
-- conditional UPDATE in the transaction of its intent row, so the check and
-- the claim are one step on any number of replicas.
ALTER TABLE apps ADD COLUMN used_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE apps ADD COLUMN used_media INTEGER NOT NULL DEFAULT 0;

-- What a media row adds to its app's usage while it counts: one medium and
-- these bytes (an upload's reservation, then its exact size once ready).
-- NULL: a row written by a binary that did not count it; it never counts
-- and releases nothing. Replicas of an older version, while a rolling
-- upgrade runs, neither reserve nor release: `mediavault apps recount` sets
-- usage right once they are gone.
ALTER TABLE media ADD COLUMN reserved_bytes INTEGER;

-- Media stored before the upgrade count at their size; uploads in progress
-- at it, as one medium of no bytes.
UPDATE media SET reserved_bytes = COALESCE(size_bytes, 0) WHERE state IN ('uploading', 'ready');
UPDATE apps SET
    used_bytes = (SELECT COALESCE(SUM(reserved_bytes), 0) FROM media
                  WHERE media.app_id = apps.id AND state <> 'deleting' AND reserved_bytes IS NOT NULL),
    used_media = (SELECT COUNT(*) FROM media
                  WHERE media.app_id = apps.id AND state <> 'deleting' AND reserved_bytes IS NOT NULL);
