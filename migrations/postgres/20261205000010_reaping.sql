-- Media the reaper has claimed and shredded, whose blobs it is deleting.
-- A claim moves each row here out of `media` (a delete there, which writes
-- none of its indexes) instead of updating it in place to `deleting` with a
-- lease (a new version of the row, and an entry in four of its indexes,
-- two of them keyed at random: by media id and by blob key). On a large
-- table each such entry cost a whole index page in the WAL; this table
-- stays as small as the work in flight. A row leaves when its blob is
-- gone; one whose pass ended before (a crash, the store away) is claimed
-- again once `lease_until` has passed. `state` is the media row's state
-- when it was claimed: what the pass reports.
CREATE TABLE reaping (
    media_id    TEXT PRIMARY KEY,
    blob_key    TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('uploading', 'ready', 'deleting')),
    lease_until BIGINT NOT NULL
);
CREATE INDEX reaping_lease_until ON reaping (lease_until);
-- The orphan sweep looks blob keys up here as well as in `media`.
CREATE INDEX reaping_blob_key ON reaping (blob_key);
