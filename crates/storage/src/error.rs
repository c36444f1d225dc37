//! Errors, named by what the caller can do about them.

use std::time::Duration;

use crate::keys::KeyError;

/// A backing store failed or is unreachable. The message is for logs only:
/// it may name hosts and paths, so it never goes to a client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata store: {0}")]
    Metadata(#[from] sqlx::Error),
    /// A commit shared with other writes failed (SQLite's group commit):
    /// the message is the commit's error, or why the batch was rolled back.
    #[error("metadata store: shared commit: {0}")]
    GroupCommit(String),
    #[error("metadata migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("blob store: {0}")]
    Blobs(#[from] object_store::Error),
    #[error("blob store call took longer than {0:?}")]
    Timeout(Duration),
    /// The configuration is wrong or incomplete; the message names the key.
    #[error("configuration: {0}")]
    Config(String),
    #[error("keys: {0}")]
    Keys(#[from] KeyError),
    /// Every media id an upload drew was already taken: the id generator
    /// repeats itself.
    #[error("{0} media ids drawn in a row were all taken")]
    IdsExhausted(u32),
    /// The runtime stopped before the work was done (the process is
    /// shutting down).
    #[error("the service is stopping")]
    Stopping,
}

/// Why an operator's request about apps or tokens was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no app with id {0:?}")]
    AppNotFound(String),
    #[error("no token with id {0:?} for this app")]
    TokenNotFound(String),
    /// A setting out of range; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// The request is well formed, but something another app holds stands
    /// in its way (a phone-number id mapped to it); the message names it.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

impl From<sqlx::Error> for AdminError {
    fn from(error: sqlx::Error) -> AdminError {
        AdminError::Unavailable(error.into())
    }
}

/// Why a token was refused. Every reason answers the same to the client.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication failed")]
    Failed,
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

/// Why an upload was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("app is not a CAPI app")]
    NotCapi,
    #[error("file type {received:?} is not allowed")]
    UnsupportedType { allowed: Vec<String>, received: String },
    #[error("no file part")]
    MissingFile,
    #[error("the file part is a text field (upload by URL)")]
    FileIsText,
    #[error("more than one file part")]
    DuplicateFile,
    #[error("the file is empty")]
    EmptyFile,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("file exceeds {limit} bytes")]
    TooLarge { limit: u64 },
    /// Storing the file would take the app past its quota (`maxBytesStored`
    /// or `maxMedia`, or the configured default).
    #[error("the app's storage quota has no room for this file")]
    QuotaExceeded,
    /// The blob store's file system is down to its reserve of free space
    /// (`blobs.min_free_bytes`): no app may write more until space is freed.
    #[error("the blob store is down to its reserve of free space")]
    StoreFull,
    #[error("content is {detected}, declared as {declared}")]
    ContentMismatch { declared: String, detected: String },
    /// The body came slower than the minimum rate over a whole window.
    #[error("body slower than {bytes_per_second} bytes/s over {window:?}")]
    TooSlow { bytes_per_second: u64, window: Duration },
    /// The service is stopping and could not wait for this upload.
    #[error("interrupted by shutdown")]
    Interrupted,
    /// The upload's row was taken before it completed: the reaper judged
    /// the upload abandoned, or its app was deleted meanwhile.
    #[error("upload was reaped as abandoned, or its app deleted, before it completed")]
    Reclaimed,
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

/// Why media could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Unknown, expired, deleted, or another app's: all look the same.
    #[error("media not found")]
    NotFound,
    /// The stored bytes or the wrapped key failed authentication.
    #[error("integrity: {0}")]
    Integrity(String),
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}
