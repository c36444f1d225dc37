//! `Vault`: the one entry point to stored media. It owns the metadata store,
//! the blob store and the keyring, and keeps them consistent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::task::TaskTracker;

use crate::blobs::{BlobConfig, Blobs};
use crate::database_url::DatabaseUrl;
use crate::delete_turns::DeleteTurns;
use crate::error::StoreError;
use crate::keys::Keyring;
use crate::meta::{Metadata, QuotaDefaults, saturating_i64};
use crate::model::{SchemaVersions, duration_millis};
use crate::reads::ActiveReads;
use crate::token_cache::TokenCache;

/// Per-app values used where an app does not set its own.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub retention: Duration,
    pub max_file_bytes: u64,
    /// The quota of an app that sets none; `None`: no limit.
    pub max_bytes_stored: Option<u64>,
    pub max_media: Option<u64>,
}

impl Default for Defaults {
    fn default() -> Defaults {
        Defaults {
            retention: Duration::from_secs(30 * 24 * 3600),
            max_file_bytes: 104_857_600,
            max_bytes_stored: None,
            max_media: None,
        }
    }
}

/// Everything a vault needs to open.
#[derive(Debug)]
pub struct VaultConfig {
    pub database_url: DatabaseUrl,
    pub blobs: BlobConfig,
    pub keys: Keyring,
    pub defaults: Defaults,
    /// An upload still `uploading` that has shown no progress for this long
    /// is abandoned; a running one notes its progress every quarter of it.
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
    /// Downloads streaming now, to stop when their media is deleted.
    pub(crate) reads: Arc<ActiveReads>,
    /// Apps found by token in the last moment (see `token_cache`).
    pub(crate) tokens: TokenCache,
    /// Deletes of each app running at once (see `delete_turns`).
    pub(crate) delete_turns: DeleteTurns,
    /// The last readiness probe and when it ended (see `readiness`).
    last_readiness: tokio::sync::Mutex<Option<(Instant, Arc<Readiness>)>>,
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

/// How long one readiness probe answers for: a store that stops answering
/// shows within this (and the probe's timeout), well inside the seconds an
/// orchestrator's probe period spans.
const READINESS_FRESH_FOR: Duration = Duration::from_secs(1);

/// How long `close` waits for abandoned uploads to be cleaned up.
const CLEANUP_GRACE: Duration = Duration::from_secs(10);

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
                reads: Arc::default(),
                tokens: TokenCache::default(),
                delete_turns: DeleteTurns::default(),
                last_readiness: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// Applies the migrations of the configured dialect.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.meta.migrate().await
    }

    /// The schema versions this binary knows and those the database has
    /// applied, to check before running against it without migrating.
    pub async fn schema_versions(&self) -> Result<SchemaVersions, StoreError> {
        let (known, applied) = self.inner.meta.schema_versions().await?;
        Ok(SchemaVersions { known, applied })
    }

    /// Lets the clean-up of abandoned uploads finish (for at most
    /// `CLEANUP_GRACE`), then closes the database pool. Called at shutdown,
    /// after the server has stopped and dropped what it still had in flight.
    /// `work`, run to its end on a task of its own even if the caller stops
    /// waiting for it (a handler is dropped when its client hangs up), and
    /// waited for by `close`. `None` if the runtime stopped it (the process
    /// is shutting down); a panic in it is the caller's.
    pub(crate) async fn to_the_end<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        match self.inner.cleanups.spawn(work).await {
            Ok(done) => Some(done),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => None,
        }
    }

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
    /// probe answers in time even when a store hangs. Callers share one
    /// probe in flight and its answer for `READINESS_FRESH_FOR`: `/readyz`
    /// needs no token, and a flood of it must not multiply into requests to
    /// the stores (an S3 list each) that every app's transfers wait behind.
    pub async fn readiness(&self, within: Duration) -> Arc<Readiness> {
        let mut last = self.inner.last_readiness.lock().await;
        if let Some((ended, readiness)) = &*last
            && ended.elapsed() < READINESS_FRESH_FOR
        {
            return readiness.clone();
        }
        let (metadata, blobs) = tokio::join!(
            bounded(within, self.inner.meta.ping()),
            bounded(within, self.inner.blobs.ping())
        );
        let readiness = Arc::new(Readiness { metadata, blobs });
        *last = Some((Instant::now(), readiness.clone()));
        readiness
    }

    /// Readable media stored now, for the `mediavault_media_stored` gauge.
    pub async fn media_stored(&self) -> Result<u64, StoreError> {
        self.inner.meta.count_ready().await
    }

    /// Blob bytes fetched by reads since the vault opened: a range read
    /// fetches only the segments it overlaps, and this shows it.
    pub fn blob_bytes_read(&self) -> u64 {
        self.inner.blobs.bytes_read()
    }

    /// Every key in the blob store, for audits: all of them in memory at once.
    pub async fn stored_blob_keys(&self) -> Result<Vec<String>, StoreError> {
        self.inner.blobs.list_keys().await
    }

    /// Every blob key some media row refers to.
    pub async fn referenced_blob_keys(&self) -> Result<Vec<String>, StoreError> {
        self.inner.meta.blob_keys().await
    }

    /// The configured default quota, as reservations bind it.
    pub(crate) fn quota_defaults(&self) -> QuotaDefaults {
        let defaults = &self.inner.defaults;
        QuotaDefaults {
            max_bytes_stored: defaults.max_bytes_stored.map(saturating_i64),
            max_media: defaults.max_media.map(saturating_i64),
        }
    }

    pub(crate) fn abandon_after_millis(&self) -> i64 {
        duration_millis(self.inner.stale_upload_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probes at once share one probe of the stores, and its answer for a
    /// moment after; a probe after that asks the stores again.
    #[tokio::test]
    async fn readiness_probes_at_once_ask_the_stores_once() {
        let dir = tempfile::tempdir().unwrap();
        let vault = crate::testing::sqlite_file_vault(dir.path(), Duration::from_secs(3600)).await;
        let probes: Vec<_> = (0..50)
            .map(|_| {
                let vault = vault.clone();
                tokio::spawn(async move { vault.readiness(Duration::from_secs(3)).await })
            })
            .collect();
        let mut answers = Vec::new();
        for probe in probes {
            answers.push(probe.await.unwrap());
        }
        assert!(answers[0].metadata.is_ok() && answers[0].blobs.is_ok());
        let shared = answers.iter().filter(|a| Arc::ptr_eq(a, &answers[0])).count();
        assert_eq!(shared, 50, "50 probes at once asked the stores more than once");
        tokio::time::sleep(READINESS_FRESH_FOR + Duration::from_millis(100)).await;
        let later = vault.readiness(Duration::from_secs(3)).await;
        assert!(!Arc::ptr_eq(&later, &answers[0]), "an old answer was kept");
    }

    /// A configuration may be logged whole: it shows neither the database
    /// password nor the blob store's secret key nor the key material.
    #[test]
    fn debug_shows_no_secret() {
        let line = Keyring::generate_line("k");
        let material = line.split_once(':').unwrap().1.to_owned();
        let config = VaultConfig {
            database_url: "postgres://u:hunter2@db/media".parse().unwrap(),
            blobs: BlobConfig {
                secret_access_key: Some("s3-secret-key".into()),
                ..BlobConfig::local("memory://")
            },
            keys: Keyring::parse(&line).unwrap(),
            defaults: Defaults::default(),
            stale_upload_after: Duration::from_secs(60),
        };
        let shown = format!("{config:?}");
        for secret in ["hunter2", "s3-secret-key", material.as_str()] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}
