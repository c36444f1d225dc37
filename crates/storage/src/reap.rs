//! The primitives the reaper drives (DESIGN §2): claim rows that are due —
//! expired, deleted on request, or abandoned uploads — shred them, delete
//! their blobs, then their rows; and sweep blobs that no row references.
//! Everything here is idempotent, so a pass that dies half way is finished
//! by the next one.

use std::collections::HashSet;
use std::time::Duration;

use crate::error::StoreError;
use crate::meta::{Claimed, MediaState, ReaperLock};
use crate::model::{Millis, duration_millis};
use crate::vault::Vault;

/// A claimed row keeps others away this long while its blob is deleted.
pub const CLAIM_LEASE: Duration = Duration::from_secs(300);

/// What one batch did, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReapCounts {
    pub expired: u64,
    pub deleted: u64,
    pub abandoned: u64,
    /// Blobs whose delete failed: their rows stay, due again at once.
    pub blob_failures: u64,
    /// Rows claimed, whatever came of them.
    pub claimed: u64,
}

/// Rows claimed (and shredded) by [`Vault::claim_due_batch`], whose blobs
/// and rows are still to be removed.
pub struct ClaimedBatch {
    now: Millis,
    rows: Vec<Claimed>,
}

impl ClaimedBatch {
    /// How many rows were claimed.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl Vault {
    /// Takes the cluster-wide reaper lock, or `None` if another replica's
    /// pass holds it. SQLite is one process: its lock is always free.
    pub async fn try_reaper_lock(&self) -> Result<Option<ReaperLock>, StoreError> {
        self.inner.meta.try_reaper_lock().await
    }

    /// Reaps up to `limit` due rows: claims them, then finishes them.
    pub async fn reap_batch(&self, now: Millis, limit: u32) -> Result<ReapCounts, StoreError> {
        let batch = self.claim_due_batch(now, limit).await?;
        self.finish_reaped(batch).await
    }

    /// Claims up to `limit` rows due at `now` and shreds them, in one
    /// statement; their blobs and rows are left to [`Vault::finish_reaped`].
    /// An upload is abandoned once it is older than this vault's
    /// `stale_upload_after`, whatever the setting was when it started. A
    /// claimed row stays away from other claims for [`CLAIM_LEASE`], so
    /// batches claimed one after another may be finished concurrently.
    pub async fn claim_due_batch(&self, now: Millis, limit: u32) -> Result<ClaimedBatch, StoreError> {
        let lease_until = now.saturating_add(duration_millis(CLAIM_LEASE));
        let stale_before = now.saturating_sub(self.abandon_after_millis());
        let rows = self
            .inner
            .meta
            .claim_due(now, limit, lease_until, stale_before)
            .await?;
        for row in &rows {
            self.inner.reads.cancel(&row.id);
        }
        Ok(ClaimedBatch { now, rows })
    }

    /// Deletes a claimed batch's blobs, then the rows whose blobs are gone.
    /// A row whose blob could not be deleted is due again at the batch's
    /// `now`: already shredded, only its blob is left.
    pub async fn finish_reaped(&self, batch: ClaimedBatch) -> Result<ReapCounts, StoreError> {
        let ClaimedBatch { now, rows } = batch;
        let mut counts = ReapCounts {
            claimed: rows.len() as u64,
            ..ReapCounts::default()
        };
        if rows.is_empty() {
            return Ok(counts);
        }
        let keys: Vec<String> = rows.iter().map(|c| c.blob_key.clone()).collect();
        let failed: HashSet<String> = self.inner.blobs.delete_many(keys).await.into_iter().collect();
        let (mut done, mut retry) = (Vec::new(), Vec::new());
        for row in &rows {
            if failed.contains(&row.blob_key) {
                retry.push(row.id.clone());
                continue;
            }
            done.push(row.id.clone());
            match row.state {
                MediaState::Ready => counts.expired += 1,
                MediaState::Uploading => counts.abandoned += 1,
                MediaState::Deleting => counts.deleted += 1,
            }
        }
        counts.blob_failures = retry.len() as u64;
        self.inner.meta.delete_reaped(&done).await?;
        // Due again now, so the next pass retries it rather than waiting out
        // the lease.
        self.inner.meta.set_due(&retry, now).await?;
        self.inner.meta.settle_shredded().await;
        Ok(counts)
    }

    /// Removes deleted apps once the reaper has removed all their media.
    pub async fn reap_deleted_apps(&self) -> Result<u64, StoreError> {
        self.inner.meta.delete_emptied_apps().await
    }

    /// Deletes blobs that no row references and that are older than
    /// `older_than` (younger ones may belong to an upload still being
    /// written), and the local store's staging files left that long by
    /// writes that never finished. Only under the service's own prefix:
    /// nothing else in the bucket or directory is listed, let alone deleted.
    /// Returns how many files were deleted.
    pub async fn sweep_orphans(&self, older_than: Duration) -> Result<u64, StoreError> {
        let cutoff = chrono::Utc::now() - chrono::Duration::from_std(older_than).unwrap_or_default();
        let listed = self.inner.blobs.list_with_times().await?;
        let referenced: HashSet<String> = self.inner.meta.blob_keys().await?.into_iter().collect();
        let orphans: Vec<String> = listed
            .into_iter()
            .filter(|(key, modified)| *modified < cutoff && !referenced.contains(key))
            .map(|(key, _)| key)
            .collect();
        let count = orphans.len() as u64;
        let failed = self.inner.blobs.delete_many(orphans).await;
        let staging = self.inner.blobs.delete_stale_staging(cutoff.into()).await?;
        Ok(count - failed.len() as u64 + staging)
    }
}

impl Vault {
    /// Aborts the incomplete S3 multipart uploads under the service's key
    /// prefix that were started longer than `older_than` ago (younger ones
    /// may belong to uploads still running). Other blob stores keep no
    /// such uploads: 0.
    pub async fn abort_stale_multipart_uploads(&self, older_than: Duration) -> Result<u64, StoreError> {
        let Some(uploads) = self.inner.blobs.multipart() else {
            return Ok(0);
        };
        let cutoff = chrono::Utc::now() - chrono::Duration::from_std(older_than).unwrap_or_default();
        uploads.abort_initiated_before(cutoff).await
    }
}
