-- The reaper takes an upload as abandoned once it has shown no progress for
-- longer than the reaper.stale_upload_after of the pass: an upload whose
-- bytes still arrive, at a pace the server accepts, is not taken however
-- long it runs. A running upload writes the time of its progress here
-- every quarter of the setting; one that never has is judged by its start.
-- The claim finds them in this small index of uploads in progress, which
-- replaces the one by start alone.
ALTER TABLE media ADD COLUMN active_at BIGINT;
CREATE INDEX media_uploading_active ON media ((COALESCE(active_at, created_at))) WHERE state = 'uploading';
DROP INDEX media_uploading_created_at;
