-- An id of this installation (this database and everything it describes),
-- made once. The service writes it into its blob store beside the blobs
-- and refuses a store that holds another installation's: the orphan sweep
-- deletes every blob this database names no row for, so two installations
-- on one bucket and prefix (staging beside production, the chart's default
-- URL) would delete each other's files.
CREATE TABLE installation (
    id TEXT PRIMARY KEY,
    one_row BOOLEAN NOT NULL DEFAULT TRUE UNIQUE CHECK (one_row)
);
INSERT INTO installation (id) VALUES (replace(gen_random_uuid()::text, '-', ''));
