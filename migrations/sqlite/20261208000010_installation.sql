-- An id of this installation (this database and everything it describes),
-- made once. The service writes it into its blob store beside the blobs
-- and refuses a store that holds another installation's: the orphan sweep
-- deletes every blob this database names no row for, so two installations
-- on one directory would delete each other's files.
CREATE TABLE installation (
    id TEXT PRIMARY KEY,
    one_row INTEGER NOT NULL DEFAULT 1 UNIQUE CHECK (one_row = 1)
);
INSERT INTO installation (id) VALUES (lower(hex(randomblob(16))));
