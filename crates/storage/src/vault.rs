//! `Vault`: the one entry point to stored media. It owns the metadata store,
//! the blob store and the keyring, and keeps them consistent.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio_util::task::TaskTracker;

use crate::blobs::{BlobConfig, Blobs};
use crate::error::{AuthError, StoreError};
use crate::keys::Keyring;
use crate::meta::Metadata;
use crate::model::{App, IssuedToken, NewApp, duration_millis, now_millis};

/// Per-app values used where an app does not set its own.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub retention: Duration,
    pub max_file_bytes: u64,
}

impl Default for Defaults {
    fn default() -> Defaults {
        Defaults {
            retention: Duration::from_secs(30 * 24 * 3600),
            max_file_bytes: 104_857_600,
        }
    }
}

/// Everything a vault needs to open.
#[derive(Debug)]
pub struct VaultConfig {
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    pub blobs: BlobConfig,
    pub keys: Keyring,
    pub defaults: Defaults,
    /// An upload still `uploading` after this long is abandoned.
    pub stale_upload_after: Duration,
}

#[derive(Clone)]
pub struct Vault {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Clean-ups of abandoned uploads still running; `close` waits for them.
    pub(crate) cleanups: TaskTracker,
    pub(crate) meta: Metadata,
    pub(crate) blobs: Blobs,
    pub(crate) keys: Keyring,
    pub(crate) defaults: Defaults,
    pub(crate) stale_upload_after: Duration,
}

/// Whether each backing store answered, for readiness probes.
#[derive(Debug)]
pub struct Readiness {
    pub metadata: Result<(), StoreError>,
    pub blobs: Result<(), StoreError>,
}

/// `check`, or a timeout error once `within` has passed.
async fn bounded(
    within: Duration,
    check: impl Future<Output = Result<(), StoreError>>,
) -> Result<(), StoreError> {
    tokio::time::timeout(within, check)
        .await
        .unwrap_or(Err(StoreError::Timeout(within)))
}

/// How long `close` waits for abandoned uploads to be cleaned up.
const CLEANUP_GRACE: Duration = Duration::from_secs(10);

/// Tokens are `mv_` and 43 URL-safe characters (32 random bytes).
const TOKEN_PREFIX: &str = "mv_";

fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Vault {
    /// Connects to both stores. The blob store is not contacted, so the
    /// service starts while it is down; the metadata store must answer.
    pub async fn open(config: VaultConfig) -> Result<Vault, StoreError> {
        let blobs = Blobs::open(&config.blobs)?;
        let meta = Metadata::connect(&config.database_url).await?;
        Ok(Vault {
            inner: Arc::new(Inner {
                cleanups: TaskTracker::new(),
                meta,
                blobs,
                keys: config.keys,
                defaults: config.defaults,
                stale_upload_after: config.stale_upload_after,
            }),
        })
    }

    /// Applies the migrations of the configured dialect.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.meta.migrate().await
    }

    /// Lets the clean-up of abandoned uploads finish (for at most
    /// `CLEANUP_GRACE`), then closes the database pool. Called at shutdown,
    /// after the server has stopped and dropped what it still had in flight.
    pub async fn close(&self) {
        self.inner.cleanups.close();
        if tokio::time::timeout(CLEANUP_GRACE, self.inner.cleanups.wait())
            .await
            .is_err()
        {
            tracing::warn!("abandoned uploads still cleaning up at exit; the reaper will finish them");
        }
        self.inner.meta.close().await
    }

    /// Asks both stores a read-only question, each bounded by `within`, so a
    /// probe answers in time even when a store hangs.
    pub async fn readiness(&self, within: Duration) -> Readiness {
        let (metadata, blobs) = tokio::join!(
            bounded(within, self.inner.meta.ping()),
            bounded(within, self.inner.blobs.ping())
        );
        Readiness { metadata, blobs }
    }

    /// Readable media stored now, for the `mediavault_media_stored` gauge.
    pub async fn media_stored(&self) -> Result<u64, StoreError> {
        self.inner.meta.count_ready().await
    }

    pub async fn create_app(&self, new: NewApp) -> Result<App, StoreError> {
        let defaults = &self.inner.defaults;
        let retention = new.retention.unwrap_or(defaults.retention);
        let retention_seconds = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        if retention_seconds < 1 {
            return Err(StoreError::Config("retention must be at least one second".into()));
        }
        let max_file_bytes = new.max_file_bytes.unwrap_or(defaults.max_file_bytes);
        let app = App {
            id: uuid::Uuid::new_v4().to_string(),
            name: new.name,
            capi: new.capi,
            retention_seconds,
            max_file_bytes: i64::try_from(max_file_bytes).unwrap_or(i64::MAX),
            allowed_types: None,
            uploads_per_second: None,
            created_at: now_millis(),
        };
        self.inner.meta.insert_app(&app).await?;
        Ok(app)
    }

    pub async fn list_apps(&self) -> Result<Vec<App>, StoreError> {
        self.inner.meta.list_apps().await
    }

    /// Issues a token for `app_id`. The token is returned once; only its
    /// SHA-256 is stored.
    pub async fn issue_token(&self, app_id: &str, label: Option<&str>) -> Result<IssuedToken, StoreError> {
        if self.inner.meta.get_app(app_id).await?.is_none() {
            return Err(StoreError::Config(format!("no app with id {app_id:?}")));
        }
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
        self.inner
            .meta
            .insert_token(&token_digest(&token), app_id, label, now_millis())
            .await?;
        Ok(IssuedToken {
            app_id: app_id.to_owned(),
            token,
            label: label.map(str::to_owned),
        })
    }

    /// The app behind `token`, if the token is live and belongs to `app_id`.
    /// Tokens are looked up by their SHA-256, so no comparison ever runs over
    /// the secret itself.
    pub async fn authenticate(&self, app_id: &str, token: &str) -> Result<App, AuthError> {
        if token.is_empty() || token.len() > 256 {
            return Err(AuthError::Failed);
        }
        match self
            .inner
            .meta
            .app_for_token(&token_digest(token), now_millis())
            .await?
        {
            Some(app) if app.id == app_id => Ok(app),
            _ => Err(AuthError::Failed),
        }
    }

    /// The app a live token belongs to, whichever it is.
    pub async fn app_for_token(&self, token: &str) -> Result<Option<App>, StoreError> {
        self.inner
            .meta
            .app_for_token(&token_digest(token), now_millis())
            .await
    }

    /// Blob bytes fetched by reads since the vault opened: a range read
    /// fetches only the segments it overlaps, and this shows it.
    pub fn blob_bytes_read(&self) -> u64 {
        self.inner.blobs.bytes_read()
    }

    /// Every key in the blob store, for audits and the orphan sweep.
    pub async fn stored_blob_keys(&self) -> Result<Vec<String>, StoreError> {
        self.inner.blobs.list_keys().await
    }

    /// Every blob key some media row refers to.
    pub async fn referenced_blob_keys(&self) -> Result<Vec<String>, StoreError> {
        self.inner.meta.blob_keys().await
    }

    pub(crate) fn abandon_after_millis(&self) -> i64 {
        duration_millis(self.inner.stale_upload_after)
    }
}
