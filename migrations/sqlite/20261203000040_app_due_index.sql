-- An app's rows due to the reaper, found without reading its other rows:
-- an app's stats subtract its expired media not yet reaped from its usage
-- counters, and find them in this index, however many media the app has.
-- It serves every lookup by app that `media_app_id` served, which it
-- replaces. On a large table the build takes a while (about a minute per
-- 10 million media) and holds off writes to `media` meanwhile.
CREATE INDEX media_app_id_due_at ON media (app_id, due_at);
DROP INDEX media_app_id;
