//! The primitives the reaper drives (DESIGN §2): claim rows that are due —
//! expired, deleted on request, or abandoned uploads — shred them, delete
//! their blobs, then their rows; and sweep blobs that no row references.
//! Everything here is idempotent, so a pass that dies half way is finished
//! by the next one.

use std::collections::HashSet;
use std::time::Duration;

use crate::error::StoreError;
use crate::meta::{Claimed, MediaState, ReaperLock};
use crate::model::{Millis, duration_millis, now_millis};
use crate::vault::Vault;

/// Blobs the orphan sweep lists and looks up at a time: S3 lists 1,000 a
/// request, and one lookup of 1,000 keys is one statement.
const SWEEP_PAGE: usize = 1000;

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

/// How far a replica's clock may stray from the database's before a pass
/// says so.
const CLOCK_SKEW_WARNING: Millis = 5_000;

impl Vault {
    /// The time a reaper pass judges expiry by: the database server's clock
    /// where replicas share one (Postgres), else `local` (this host's).
    /// Passes run on whichever replica takes the lock, often the one whose
    /// clock runs fastest: by its own clock, an hour ahead, it shredded
    /// every app's media an hour before their `expiresAt`, and took every
    /// running upload as abandoned. A replica whose clock strays is named
    /// in the log.
    pub async fn reaping_now(&self, local: Millis) -> Result<Millis, StoreError> {
        let Some(database) = self.inner.meta.database_now().await? else {
            return Ok(local);
        };
        // The database read its clock between `local` and now: only what
        // lies outside that span is skew (a wait for a connection is none).
        let after = now_millis();
        let skew = if database < local {
            local - database
        } else {
            (after - database).min(0)
        };
        if skew.abs() > CLOCK_SKEW_WARNING {
            tracing::warn!(
                skew_ms = skew,
                "this host's clock differs from the database's; the reaper goes by the database's, \
                 but expiry times this replica gives new uploads are off by as much"
            );
        }
        Ok(database)
    }

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
    /// An upload is abandoned once it has shown no progress (see
    /// `Upload::write`) for this vault's `stale_upload_after`, whatever the
    /// setting was when it started. A
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
        // The claim shredded: on SQLite the WAL's copies of the keys go now,
        // whatever happens to the rest of the batch.
        if !rows.is_empty() {
            self.inner.meta.settle_shredded().await;
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
        self.sweep_orphans_in_pages(older_than, SWEEP_PAGE).await
    }

    /// `sweep_orphans`, a listing page of `page` blobs at a time: each
    /// page's keys are looked up among the rows, and its orphans deleted,
    /// before the next is listed. Memory holds one page, whatever the
    /// number of blobs or rows. A page is looked up after it was listed, and
    /// a row is always written before its blob: a blob listed without a row
    /// had none when listed, or had it deleted since (by the reaper, which
    /// deletes the blob too).
    pub(crate) async fn sweep_orphans_in_pages(
        &self,
        older_than: Duration,
        page: usize,
    ) -> Result<u64, StoreError> {
        // Deleting what this database names no row for is safe only in a
        // store that holds this installation's blobs alone.
        self.claim_blob_store().await?;
        let cutoff = chrono::Utc::now() - chrono::Duration::from_std(older_than).unwrap_or_default();
        let mut listing = self.inner.blobs.listing();
        let mut deleted = 0;
        while let Some(keys) = listing.next_page(cutoff, page).await? {
            let referenced = self.inner.meta.referenced_among(&keys).await?;
            let orphans: Vec<String> = keys.into_iter().filter(|key| !referenced.contains(key)).collect();
            let count = orphans.len() as u64;
            let failed = self.inner.blobs.delete_many(orphans).await;
            deleted += count - failed.len() as u64;
        }
        let running = self.inner.meta.uploading_blob_keys().await?;
        let staging = self
            .inner
            .blobs
            .delete_stale_staging(cutoff.into(), running)
            .await?;
        Ok(deleted + staging)
    }
}

impl Vault {
    /// Ties the blob store to this installation: marks it with the
    /// database's installation id if it has no mark, and refuses it if it
    /// has another's. The orphan sweep deletes every blob this database
    /// names no row for, so two installations given one bucket and prefix
    /// (staging beside production, both on the chart's default URL) would
    /// each delete the other's files. Run at `serve` start, and before each
    /// sweep.
    pub async fn claim_blob_store(&self) -> Result<(), StoreError> {
        let ours = self.inner.meta.installation_id().await?;
        match self.inner.blobs.owner().await? {
            Some(theirs) if theirs == ours => Ok(()),
            Some(theirs) => Err(StoreError::Config(format!(
                "the blob store (blobs.url) holds the files of another installation ({theirs}); this \
                 database is installation {ours}. Its orphan sweep would delete them: give each \
                 installation a bucket or prefix of its own (a database restored from a backup keeps \
                 the id of the one it was taken from)"
            ))),
            None => self.inner.blobs.set_owner(&ours).await,
        }
    }

    /// Aborts the incomplete S3 multipart uploads under the service's key
    /// prefix that were started longer than `older_than` ago (younger ones
    /// may belong to uploads still running), but for those of uploads whose
    /// rows still run: an upload takes as long as its bytes keep arriving
    /// (the reaper takes its row once they stop, and the next sweep its
    /// parts). Other blob stores keep no such uploads: 0.
    pub async fn abort_stale_multipart_uploads(&self, older_than: Duration) -> Result<u64, StoreError> {
        let Some(uploads) = self.inner.blobs.multipart() else {
            return Ok(0);
        };
        // Another installation's uploads under the same prefix are not ours.
        self.claim_blob_store().await?;
        let cutoff = chrono::Utc::now() - chrono::Duration::from_std(older_than).unwrap_or_default();
        let running = self.inner.meta.uploading_blob_keys().await?;
        uploads.abort_initiated_before(cutoff, &running).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::CLAIM_LEASE;
    use crate::model::{duration_millis, now_millis};
    use crate::testing::{capi_app, on_each_dialect, read_all, sqlite_file_vault, wal_len};
    use crate::{App, MediaId, Vault};

    /// Stores the text `file {i}`.
    async fn store_text(vault: &Vault, app: &App, i: usize) -> MediaId {
        let mut upload = vault.begin_upload(app, None).await.unwrap();
        upload.write(format!("file {i}").as_bytes()).await.unwrap();
        upload.finish("text/plain").await.unwrap()
    }

    /// A pass goes by the database server's clock where replicas share one:
    /// a replica whose clock runs an hour ahead reaps nothing early. On
    /// SQLite, one host, its own.
    #[tokio::test]
    async fn a_pass_goes_by_the_shared_databases_clock() {
        on_each_dialect(|vault| async move {
            let ahead = now_millis() + duration_millis(Duration::from_secs(3600));
            let judged = vault.reaping_now(ahead).await.unwrap();
            if matches!(vault.inner.meta, crate::meta::Metadata::Postgres { .. }) {
                assert!(
                    (judged - now_millis()).abs() < 5_000,
                    "{judged} is not the database's time"
                );
            } else {
                assert_eq!(judged, ahead);
            }
        })
        .await;
    }

    /// Two installations given one blob directory (staging beside
    /// production on one default URL): the second is refused, and its
    /// sweep deletes nothing, where it deleted every file of the first
    /// older than the sweep's cutoff (its database names none of them).
    #[tokio::test]
    async fn a_blob_store_of_another_installation_is_refused_and_never_swept() {
        let (blobs, first, second) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let open = async |db: &std::path::Path| {
            let vault = Vault::open(crate::VaultConfig {
                database_url: crate::DatabaseUrl::Sqlite(format!("sqlite://{}/media.db", db.display())),
                blobs: crate::BlobConfig::local(blobs.path().display().to_string()),
                keys: crate::Keyring::parse(&crate::Keyring::generate_line("k1")).unwrap(),
                defaults: crate::Defaults::default(),
                stale_upload_after: Duration::from_secs(3600),
            })
            .await
            .unwrap();
            vault.migrate().await.unwrap();
            vault
        };
        let (a, b) = (open(first.path()).await, open(second.path()).await);
        a.claim_blob_store().await.unwrap();
        let app = capi_app(&a).await;
        let id = store_text(&a, &app, 1).await;
        let refused = b.claim_blob_store().await.unwrap_err().to_string();
        assert!(refused.contains("another installation"), "{refused}");
        let swept = b.sweep_orphans(Duration::ZERO).await;
        assert!(swept.is_err(), "{swept:?}");
        assert_eq!(read_all(&a, &app, &id).await, b"file 1");
        a.claim_blob_store().await.unwrap();
        assert_eq!(a.sweep_orphans(Duration::ZERO).await.unwrap(), 0);
        assert_eq!(read_all(&a, &app, &id).await, b"file 1");
    }

    /// On SQLite a claim's shreds are final in the files when the claim
    /// returns: the WAL, which held the page images with the keys, is
    /// truncated before the batch's blobs are touched, so a batch whose rest
    /// fails, or never runs, leaves no key in it. (It was truncated only at
    /// the end of the batch, and not at all when deleting its rows failed.)
    #[tokio::test]
    async fn a_claim_on_sqlite_leaves_no_key_in_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let vault = sqlite_file_vault(dir.path(), Duration::from_secs(3600)).await;
        let app = capi_app(&vault).await;
        let id = store_text(&vault, &app, 0).await;
        vault.delete(&app.id, &id).await.unwrap();
        for i in 1..=3 {
            store_text(&vault, &app, i).await;
        }
        assert!(wal_len(dir.path()) > 0);
        let later = now_millis() + duration_millis(Duration::from_secs(40 * 24 * 3600));
        let batch = vault.claim_due_batch(later, 10).await.unwrap();
        assert_eq!(batch.rows.len(), 3);
        assert_eq!(wal_len(dir.path()), 0, "the claim's shreds are still in the WAL");
        vault.close().await;
    }

    /// A claim takes rows out of `media` at once (they are shredded and
    /// unreadable) but keeps their blob keys until the blobs are gone: a
    /// pass cut short after its claim leaves nothing the orphan sweep may
    /// mistake for an orphan, nothing a new claim takes before the lease
    /// ends, and, once it has ended, the same rows, with the state they had,
    /// for the next pass to finish.
    #[tokio::test]
    async fn claimed_media_wait_out_their_lease_and_are_finished_once() {
        on_each_dialect(|vault| async move {
            let app = capi_app(&vault).await;
            let mut stored = Vec::new();
            for i in 0..3 {
                stored.push(store_text(&vault, &app, i).await);
            }
            stored.sort();
            let mut blobs = vault.stored_blob_keys().await.unwrap();
            blobs.sort();
            // Past every expiry: all three are due.
            let later = now_millis() + duration_millis(Duration::from_secs(400 * 86_400));

            let cut_short = vault.claim_due_batch(later, 10).await.unwrap();
            let mut claimed: Vec<_> = cut_short.rows.iter().map(|row| row.id.clone()).collect();
            claimed.sort();
            assert_eq!(claimed, stored);
            drop(cut_short);
            for id in &stored {
                assert!(
                    vault
                        .inner
                        .meta
                        .find_readable(&app.id, id, now_millis())
                        .await
                        .unwrap()
                        .is_none()
                );
            }
            let mut referenced = vault.referenced_blob_keys().await.unwrap();
            referenced.sort();
            assert_eq!(referenced, blobs, "claimed rows keep their blob keys");
            assert_eq!(vault.sweep_orphans_in_pages(Duration::ZERO, 2).await.unwrap(), 0);
            assert!(
                vault.claim_due_batch(later, 10).await.unwrap().is_empty(),
                "leased"
            );

            let after_lease = later + duration_millis(CLAIM_LEASE);
            let again = vault.claim_due_batch(after_lease, 10).await.unwrap();
            let mut reclaimed: Vec<_> = again.rows.iter().map(|row| row.id.clone()).collect();
            reclaimed.sort();
            assert_eq!(reclaimed, stored);
            let counts = vault.finish_reaped(again).await.unwrap();
            assert_eq!((counts.expired, counts.deleted, counts.blob_failures), (3, 0, 0));
            assert!(vault.stored_blob_keys().await.unwrap().is_empty());
            assert!(vault.referenced_blob_keys().await.unwrap().is_empty());
            let much_later = after_lease + duration_millis(CLAIM_LEASE);
            assert!(vault.claim_due_batch(much_later, 10).await.unwrap().is_empty());
        })
        .await;
    }

    /// The sweep, a few blobs a page, deletes every orphan on every page
    /// and keeps every blob a row refers to, wherever the listing puts it;
    /// nothing younger than the threshold is touched.
    #[tokio::test]
    async fn the_sweep_goes_page_by_page_through_orphans_and_kept_blobs() {
        on_each_dialect(|vault| async move {
            let app = capi_app(&vault).await;
            let mut stored = Vec::new();
            for i in 0..7 {
                stored.push(store_text(&vault, &app, i).await);
                // Named as blob keys are: the sweep deletes nothing else.
                let mut stray = vault.inner.blobs.writer(&crate::blobs::new_blob_key());
                stray.write(b"left by a crash").await.unwrap();
                stray.finish().await.unwrap();
            }
            let mut referenced = vault.referenced_blob_keys().await.unwrap();
            referenced.sort();
            assert_eq!(vault.stored_blob_keys().await.unwrap().len(), 14);

            let young = vault
                .sweep_orphans_in_pages(Duration::from_secs(3600), 3)
                .await
                .unwrap();
            assert_eq!(young, 0, "nothing is older than an hour");
            assert_eq!(vault.stored_blob_keys().await.unwrap().len(), 14);

            let removed = vault.sweep_orphans_in_pages(Duration::ZERO, 3).await.unwrap();
            assert_eq!(removed, 7);
            let mut left = vault.stored_blob_keys().await.unwrap();
            left.sort();
            assert_eq!(left, referenced);
            for (i, id) in stored.iter().enumerate() {
                assert_eq!(read_all(&vault, &app, id).await, format!("file {i}").as_bytes());
            }
        })
        .await;
    }
}
