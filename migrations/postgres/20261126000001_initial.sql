-- Times are milliseconds since the Unix epoch (BIGINT), the same in both
-- dialects, so that one set of queries compares them the same way.

CREATE TABLE apps (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    capi               BOOLEAN NOT NULL DEFAULT TRUE,
    retention_seconds  BIGINT NOT NULL CHECK (retention_seconds > 0),
    max_file_bytes     BIGINT NOT NULL CHECK (max_file_bytes > 0),
    allowed_types      TEXT,              -- comma-separated; NULL = default list
    uploads_per_second INTEGER,           -- NULL = configured default
    created_at         BIGINT NOT NULL
);

CREATE TABLE tokens (
    token_sha256 TEXT PRIMARY KEY,        -- the token itself is never stored
    app_id       TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    label        TEXT,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
CREATE INDEX tokens_app_id ON tokens (app_id);

CREATE TABLE media (
    id             TEXT PRIMARY KEY,
    app_id         TEXT NOT NULL REFERENCES apps (id),
    state          TEXT NOT NULL CHECK (state IN ('uploading', 'ready', 'deleting')),
    mime_type      TEXT,                  -- known once the upload completes
    filename       TEXT,                  -- for Content-Disposition only, never a path
    size_bytes     BIGINT,
    sha256         TEXT,                  -- lowercase hex of the plaintext
    blob_key       TEXT NOT NULL UNIQUE,  -- random, never reused
    kek_id         TEXT NOT NULL,
    wrapped_dek    BYTEA,                 -- NULL once shredded
    format_version INTEGER NOT NULL,
    segment_size   INTEGER NOT NULL,
    salt           BYTEA NOT NULL,
    nonce_prefix   BYTEA NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    deleted_at     BIGINT,
    -- When the reaper may act on the row next: expires_at for ready rows, the
    -- abandonment time for uploading rows, now for deleting rows, pushed on by
    -- a lease while a pass works on it. One index range scan finds all work.
    due_at         BIGINT NOT NULL
);
CREATE INDEX media_due_at ON media (due_at);
CREATE INDEX media_app_id ON media (app_id);
