-- The reaper takes an upload as abandoned once it started longer ago than
-- the reaper.stale_upload_after of the pass, not of the upload's start: a
-- lowered setting then applies to uploads already running. The claim finds
-- them by their start, in this small index of uploads in progress.
CREATE INDEX media_uploading_created_at ON media (created_at) WHERE state = 'uploading';
