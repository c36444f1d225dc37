//! One upload, from intent row to ready row (DESIGN §2, crash-safe ordering):
//! the row is written first in state `uploading`; the bytes are hashed,
//! encrypted and streamed to a fresh blob key; only a completed blob turns the
//! row `ready`. Whatever fails, or is dropped half way, is undone.
//!
//! The app's quota is held as the bytes arrive, never after: the intent row
//! reserves one medium and some bytes, the upload reserves more before it
//! takes bytes past its reservation, and completion settles the reservation
//! to the file's size (see `meta::usage`). Undoing the upload releases it.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::blobs::{BlobWriter, new_blob_key};
use crate::error::{StoreError, UploadError};
use crate::ids::{AppId, MediaId};
use crate::keys::Dek;
use crate::meta::{Growth, Intent, NewMedia, ReadyMedia, saturating_i64};
use crate::model::{App, duration_millis, now_millis};
use crate::policy::{SNIFF_LEN, check_content};
use crate::seal::{Encryptor, Header};
use crate::store_room::RoomTaken;
use crate::vault::Vault;

/// Ciphertext is handed to the blob writer in pieces of about this size.
const FLUSH_AT: usize = 256 * 1024;

/// Bytes of quota reserved at a time when the caller cannot say how large
/// the file is (and how many more an upload reserves when it outgrows its
/// reservation): one statement per this many bytes, at most.
pub const RESERVATION_STEP: u64 = 8 * 1024 * 1024;

/// Media ids an upload draws before it gives up. Among some 9 * 10^18 ids,
/// even one taken id in a row is improbable; several mean the generator
/// repeats itself, which no retry mends.
const ID_DRAWS: u32 = 5;

/// How soon an upload notes its progress again after a note failed.
const PROGRESS_NOTE_RETRY: Duration = Duration::from_secs(1);

/// An upload in progress. Finish it with [`Upload::finish`] or undo it with
/// [`Upload::abort`]; dropping it undoes it in the background.
pub struct Upload {
    vault: Vault,
    id: MediaId,
    app_id: AppId,
    retention_millis: i64,
    limit: u64,
    received: u64,
    /// Bytes of the app's quota this upload's row holds.
    reserved: u64,
    hasher: Sha256,
    head: Vec<u8>,
    encryptor: Option<Encryptor>,
    sealed: Vec<u8>,
    writer: Option<BlobWriter>,
    /// A blob store call of this upload failed (or timed out).
    store_failed: bool,
    /// When this upload next notes its progress in its row.
    next_progress_note: Instant,
    /// The room this upload took on a local blob store, held until it ends.
    room: RoomTaken,
}

impl Vault {
    /// How often a running upload notes its progress: a quarter of
    /// `reaper.stale_upload_after`, so that a few lost notes cost nothing.
    fn progress_note_every(&self) -> Duration {
        self.inner.stale_upload_after / 4
    }

    /// Writes the intent row and opens a blob for a new file of `app`, the
    /// size of which is not known.
    pub async fn begin_upload(&self, app: &App, filename: Option<&str>) -> Result<Upload, UploadError> {
        self.begin_sized_upload(app, filename, None).await
    }

    /// Writes the intent row and opens a blob for a new file of `app`,
    /// reserving one medium of the app's quota and `expected_bytes` (an
    /// upper bound of the file's size, such as a request's Content-Length;
    /// without one, `RESERVATION_STEP`), at most the app's size limit. When
    /// the quota has no room for that but for a byte, the upload is admitted
    /// with that byte and reserves more as the file arrives, so a file that
    /// fits is never refused for a generous guess. Refused with
    /// `QuotaExceeded`, nothing is written.
    pub async fn begin_sized_upload(
        &self,
        app: &App,
        filename: Option<&str>,
        expected_bytes: Option<u64>,
    ) -> Result<Upload, UploadError> {
        self.begin_upload_with_ids(
            app,
            filename,
            expected_bytes,
            || MediaId::random(&mut rand::rng()),
        )
        .await
    }

    /// `begin_sized_upload`, drawing media ids from `next_id`: a fresh one
    /// whenever the one drawn is already another row's. Run to its end
    /// whatever the caller does: an intent row written for a caller gone
    /// by then is undone with the `Upload` nobody took.
    pub(crate) async fn begin_upload_with_ids(
        &self,
        app: &App,
        filename: Option<&str>,
        expected_bytes: Option<u64>,
        next_id: impl FnMut() -> MediaId + Send + 'static,
    ) -> Result<Upload, UploadError> {
        let (vault, app, filename) = (self.clone(), app.clone(), filename.map(str::to_owned));
        to_the_end(self, async move {
            vault
                .begin_upload_here(&app, filename.as_deref(), expected_bytes, next_id)
                .await
        })
        .await
    }

    /// Takes from the blob store the room for an upload's next `bytes`,
    /// where it has room for `fits`, or refuses them: writing them would go
    /// below its reserve of free space. Taken a `RESERVATION_STEP` at a
    /// time as the file arrives, so that an upload trickling in holds no
    /// more than it wrote and a step; at its start, a declared length must
    /// fit whole, though only a step is taken.
    async fn take_store_room(&self, bytes: u64, fits: u64) -> Result<RoomTaken, UploadError> {
        self.inner.blobs.take_room(bytes, fits).await?.ok_or_else(|| {
            tracing::warn!(
                bytes,
                "the blob store is down to its reserve of free space (blobs.min_free_bytes): upload refused"
            );
            UploadError::StoreFull
        })
    }

    async fn begin_upload_here(
        &self,
        app: &App,
        filename: Option<&str>,
        expected_bytes: Option<u64>,
        mut next_id: impl FnMut() -> MediaId + Send,
    ) -> Result<Upload, UploadError> {
        app.check_may_upload()?;
        let blob_key = new_blob_key();
        let dek = Dek::generate();
        let header = Header::random();
        let now = now_millis();
        let retention_millis = duration_millis(app.retention);
        // An app may allow more than one blob can hold.
        let limit = app.max_file_bytes.min(crate::format::MAX_PLAINTEXT);
        let wanted = expected_bytes.unwrap_or(RESERVATION_STEP).clamp(1, limit.max(1));
        let room = self.take_store_room(wanted.min(RESERVATION_STEP), wanted).await?;
        let mut sizes = Reservations::new(wanted, 1);
        let mut size = sizes.next(self, &app.id).await?;
        let expires_at = now.saturating_add(retention_millis);
        // The wrapped key's associated data names the id: wrapped anew for each.
        let mut id = next_id();
        let mut wrapped = self
            .inner
            .keys
            .wrap(id.as_str(), expires_at, &dek)
            .await
            .map_err(StoreError::from)?;
        let mut draws = 1;
        let reserved = loop {
            let Some(bytes) = size else {
                return Err(UploadError::QuotaExceeded);
            };
            let row = NewMedia {
                id: &id,
                app_id: &app.id,
                filename,
                blob_key: &blob_key,
                kek_id: &wrapped.kek_id,
                wrapped_dek: &wrapped.bytes,
                salt: &header.salt,
                nonce_prefix: &header.nonce_prefix,
                created_at: now,
                expires_at,
                abandon_at: now.saturating_add(self.abandon_after_millis()),
                reserved_bytes: saturating_i64(bytes),
            };
            match self
                .inner
                .meta
                .insert_uploading(&row, self.quota_defaults())
                .await?
            {
                Intent::Written => break bytes,
                Intent::NoRoom => size = sizes.next(self, &app.id).await?,
                Intent::IdTaken if draws < ID_DRAWS => {
                    tracing::info!(media_id = %id, "media id already taken; drawing another");
                    id = next_id();
                    wrapped = self
                        .inner
                        .keys
                        .wrap(id.as_str(), expires_at, &dek)
                        .await
                        .map_err(StoreError::from)?;
                    draws += 1;
                }
                Intent::IdTaken => return Err(StoreError::IdsExhausted(ID_DRAWS).into()),
            }
        };
        let encryptor = Encryptor::new(&dek, header, id.as_str());
        let mut sealed = Vec::with_capacity(FLUSH_AT + 2 * crate::format::SEGMENT_SIZE);
        sealed.extend_from_slice(&encryptor.header_bytes());
        Ok(Upload {
            writer: Some(self.inner.blobs.writer(&blob_key)),
            vault: self.clone(),
            id,
            app_id: app.id.clone(),
            retention_millis,
            limit,
            received: 0,
            reserved,
            hasher: Sha256::new(),
            head: Vec::new(),
            encryptor: Some(encryptor),
            sealed,
            store_failed: false,
            next_progress_note: Instant::now() + self.progress_note_every(),
            room,
        })
    }
}

/// The sizes an upload tries to reserve, in turn: `wanted`; when that does
/// not fit (near the quota, a generous reservation may not fit where the
/// file does), all the room the quota has left if that covers `needed`;
/// then just `needed`. Taking all that is left lets the upload that gets it
/// finish, however many race for the room: were each to take only what it
/// needs at the moment, uploads of unknown size could share the room out
/// between them until none could finish. The room is read only once
/// `wanted` has been refused, off the common path.
struct Reservations {
    wanted: u64,
    needed: u64,
    wanted_tried: bool,
    /// `None` until they are first asked for.
    fallbacks: Option<std::vec::IntoIter<u64>>,
}

impl Reservations {
    fn new(wanted: u64, needed: u64) -> Reservations {
        Reservations {
            wanted,
            needed,
            wanted_tried: false,
            fallbacks: None,
        }
    }

    /// The next size to try, or `None` when none is left.
    async fn next(&mut self, vault: &Vault, app_id: &AppId) -> Result<Option<u64>, StoreError> {
        if !self.wanted_tried {
            self.wanted_tried = true;
            return Ok(Some(self.wanted));
        }
        if self.fallbacks.is_none() {
            self.fallbacks = Some(self.after_wanted(vault, app_id).await?.into_iter());
        }
        Ok(self.fallbacks.as_mut().and_then(Iterator::next))
    }

    async fn after_wanted(&self, vault: &Vault, app_id: &AppId) -> Result<Vec<u64>, StoreError> {
        let (wanted, needed) = (self.wanted, self.needed);
        let mut fallbacks = Vec::new();
        let default = vault.quota_defaults().max_bytes_stored;
        if let Some(room) = vault.inner.meta.byte_room(app_id, default).await? {
            let room = u64::try_from(room).unwrap_or(0);
            if (needed..wanted).contains(&room) {
                fallbacks.push(room);
            }
        }
        if needed < wanted && fallbacks.last() != Some(&needed) {
            fallbacks.push(needed);
        }
        Ok(fallbacks)
    }
}

impl Upload {
    /// The media id this upload will have.
    pub fn id(&self) -> &MediaId {
        &self.id
    }

    /// Plaintext bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The file's first bytes received (up to `SNIFF_LEN`), which judge
    /// its type.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// Takes the next piece of the file. Refuses, without storing it, the
    /// piece that would take the file past what the app's quota can still
    /// hold, or past the app's size limit (in that order: a piece past
    /// both is refused for the quota).
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), UploadError> {
        self.note_progress().await?;
        let total = self.received + chunk.len() as u64;
        let within_limit = total.min(self.limit);
        if within_limit > self.reserved {
            self.reserve_up_to(within_limit).await?;
        }
        if total > self.limit {
            return Err(UploadError::TooLarge { limit: self.limit });
        }
        if total > self.room.bytes() {
            let step = RESERVATION_STEP.max(total - self.room.bytes());
            let more = self.vault.take_store_room(step, step).await?;
            self.room.add(more);
        }
        self.received = total;
        self.hasher.update(chunk);
        if self.head.len() < SNIFF_LEN {
            let take = (SNIFF_LEN - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        let encryptor = self.encryptor.as_mut().expect("encryptor lives until finish");
        encryptor.update(chunk, &mut self.sealed);
        if self.sealed.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    /// Notes in the row, every quarter of `reaper.stale_upload_after`, that
    /// this upload is still receiving its file: the reaper takes an upload
    /// as abandoned only once it has shown no progress for the whole
    /// setting, so one whose bytes arrive at a pace the server accepts runs
    /// as long as it needs. (A silent client is cut long before, by the
    /// idle timeout.) A row the reaper took meanwhile ends the upload here.
    async fn note_progress(&mut self) -> Result<(), UploadError> {
        let now = Instant::now();
        if now < self.next_progress_note {
            return Ok(());
        }
        match self.vault.inner.meta.note_progress(&self.id, now_millis()).await {
            Ok(true) => self.next_progress_note = now + self.vault.progress_note_every(),
            Ok(false) => return Err(UploadError::Reclaimed),
            // Bookkeeping, not the upload: it goes on, and notes again soon.
            Err(error) => {
                tracing::warn!(media_id = %self.id, %error, "could not note the upload's progress; trying again");
                self.next_progress_note = now + PROGRESS_NOTE_RETRY;
            }
        }
        Ok(())
    }

    /// Grows the reservation to at least `total` bytes: by a step where the
    /// quota has room for it, else by all the room left if that covers
    /// `total`, else by just what `total` needs.
    async fn reserve_up_to(&mut self, total: u64) -> Result<(), UploadError> {
        let needed = total - self.reserved;
        let wanted = needed.max(RESERVATION_STEP.min(self.limit - self.reserved));
        let quota = self.vault.quota_defaults();
        let mut sizes = Reservations::new(wanted, needed);
        while let Some(bytes) = sizes.next(&self.vault, &self.app_id).await? {
            let growth = self
                .vault
                .inner
                .meta
                .reserve_more(&self.id, saturating_i64(bytes), quota)
                .await?;
            match growth {
                Growth::Granted => {
                    self.reserved += bytes;
                    return Ok(());
                }
                Growth::Refused => {}
                Growth::Gone => return Err(UploadError::Reclaimed),
            }
        }
        Err(UploadError::QuotaExceeded)
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        let writer = self.writer.as_mut().expect("writer lives until settled");
        let written = writer.write(&self.sealed).await;
        self.note(written)?;
        self.sealed.clear();
        Ok(())
    }

    /// Passes a blob store result on, remembering a failure for `undo`.
    fn note<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        self.store_failed |= result.is_err();
        result
    }

    /// Checks the file against `declared_type`, completes the blob and makes
    /// the media readable. On any failure everything is undone. Run to its
    /// end whatever the caller does: the media is then readable, or the
    /// upload undone, as if the caller had waited.
    pub async fn finish(mut self, declared_type: &str) -> Result<MediaId, UploadError> {
        let (vault, declared_type) = (self.vault.clone(), declared_type.to_owned());
        to_the_end(&vault, async move {
            let result = self.complete(&declared_type).await;
            if result.is_err() {
                self.undo().await;
            }
            result.map(|()| std::mem::take(&mut self.id))
        })
        .await
    }

    async fn complete(&mut self, declared_type: &str) -> Result<(), UploadError> {
        if self.received == 0 {
            return Err(UploadError::EmptyFile);
        }
        check_content(declared_type, &self.head)?;
        let encryptor = self.encryptor.take().expect("finish runs once");
        encryptor.finish(&mut self.sealed);
        self.flush().await?;
        let finished = self
            .writer
            .as_mut()
            .expect("writer lives until settled")
            .finish()
            .await;
        self.note(finished)?;
        let sha256 = hex::encode(self.hasher.clone().finalize());
        let now = now_millis();
        let size_bytes = i64::try_from(self.received).expect("limit fits i64");
        let ready = ReadyMedia {
            id: &self.id,
            mime_type: declared_type,
            size_bytes,
            sha256: &sha256,
            expires_at: now.saturating_add(self.retention_millis),
            unused_bytes: saturating_i64(self.reserved) - size_bytes,
        };
        // Once the statement is sent the row may turn ready even if this call
        // fails or is dropped (a commit whose reply was lost, say when the
        // database crashes): the blob must then stay, or a ready row would
        // point at nothing, until the row is shredded (`withdraw`). A row
        // left `uploading` is the reaper's once stale, blob and all.
        let writer = self.writer.take();
        match self.vault.inner.meta.mark_ready(&ready).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                // The reaper or an app deletion took the row: the blob is ours to remove.
                self.writer = writer;
                Err(UploadError::Reclaimed)
            }
            Err(error) => {
                withdraw(self.vault.clone(), self.id.clone(), writer).await;
                Err(error.into())
            }
        }
    }

    /// Undoes the upload: aborts or removes the blob, then removes the row;
    /// to the end, whatever the caller does.
    pub async fn abort(mut self) {
        let vault = self.vault.clone();
        let undone = to_the_end(&vault, async move {
            self.undo().await;
            Ok(())
        });
        // Only a runtime shutting down stops it: the reaper then finishes.
        let _ = undone.await;
    }

    async fn undo(&mut self) {
        if let Some(writer) = self.writer.take() {
            let (vault, id) = (self.vault.clone(), std::mem::take(&mut self.id));
            if self.store_failed {
                hand_to_reaper(vault, id, writer).await;
            } else {
                undo(vault, id, writer).await;
            }
        }
    }
}

/// `work`, run to its end (`Vault::to_the_end`) even if the caller stops
/// waiting for it. A handler is dropped when its client hangs up after
/// sending the whole body: a step between the blob and the row (an intent
/// being written, an upload being undone) must not stop half way, leaving
/// a row and its reservation for the reaper to find an hour later. What the
/// task leaves is what a caller that waited would have been told of.
async fn to_the_end<T: Send + 'static>(
    vault: &Vault,
    work: impl Future<Output = Result<T, UploadError>> + Send + 'static,
) -> Result<T, UploadError> {
    vault
        .to_the_end(work)
        .await
        .unwrap_or(Err(UploadError::Interrupted))
}

/// The blob store has just failed this upload, likely by running out its
/// timeout: waiting on it again to remove the blob would hold the reply for
/// one more timeout. The row is shredded and due at once instead, so the
/// reaper deletes whatever of the blob landed; the blob is aborted in the
/// background meanwhile, and a multipart upload that outlives both is the
/// orphan sweep's.
async fn hand_to_reaper(vault: Vault, id: MediaId, writer: BlobWriter) {
    tracing::info!(media_id = %id, "blob store failed; upload shredded and left to the reaper");
    if let Err(error) = vault.inner.meta.abandon_uploading(&id, now_millis()).await {
        tracing::warn!(media_id = %id, %error, "could not mark the upload abandoned; the reaper takes it once stale");
    }
    remove_blob_in_background(&vault, id, writer);
}

/// Aborts the upload's blob on a task of its own: what the store keeps of
/// it is the reaper's, through the upload's row.
fn remove_blob_in_background(vault: &Vault, id: MediaId, mut writer: BlobWriter) {
    vault.inner.cleanups.clone().spawn(async move {
        if let Err(error) = writer.abort().await {
            tracing::info!(media_id = %id, %error, "could not remove the blob yet; left to the reaper");
        }
    });
}

/// A completion whose ready-marking failed: its client is told the upload
/// failed, so the row is shredded, whether still uploading or turned ready
/// unseen, and due at once: its key is gone, its app's quota no longer
/// counts it, and the reaper deletes its blob (aborted here meanwhile).
/// Left as it was, an uploading row would wait for the reaper's stale
/// period, and a ready one, whose id nobody was given, would count against
/// its app's quota until it expired. If the shred fails too (the database
/// still away), everything stays for the reaper as it was: the blob is
/// removed only after its row can no longer be read.
async fn withdraw(vault: Vault, id: MediaId, writer: Option<BlobWriter>) {
    if let Err(error) = vault.inner.meta.withdraw_unacknowledged(&id, now_millis()).await {
        tracing::warn!(media_id = %id, %error, "completion failed and could not be withdrawn; left to the reaper");
        return;
    }
    tracing::info!(media_id = %id, "completion failed; upload shredded and left to the reaper");
    if let Some(writer) = writer {
        remove_blob_in_background(&vault, id, writer);
    }
}

/// Blob first, then row: a row without its blob is harmless (the reaper
/// finishes it); a blob without a row would be an orphan.
async fn undo(vault: Vault, id: MediaId, mut writer: BlobWriter) {
    if let Err(error) = writer.abort().await {
        // The blob may exist: keep the row so the reaper can delete it, but
        // shred it and make it due now rather than after the stale period.
        tracing::warn!(media_id = %id, %error, "could not remove the blob; left to the reaper");
        if let Err(error) = vault.inner.meta.abandon_uploading(&id, now_millis()).await {
            tracing::warn!(media_id = %id, %error, "could not mark the upload abandoned");
        }
        return;
    }
    if let Err(error) = vault.inner.meta.delete_uploading(&id).await {
        tracing::warn!(media_id = %id, %error, "could not remove upload row; the reaper will retry");
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            let (vault, id) = (self.vault.clone(), std::mem::take(&mut self.id));
            tracing::info!(media_id = %id, received = self.received, "upload abandoned; cleaning up");
            if tokio::runtime::Handle::try_current().is_ok() {
                let cleanups = vault.inner.cleanups.clone();
                cleanups.spawn(undo(vault, id, writer));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use crate::ids::MediaId;
    use crate::meta::Growth;
    use crate::model::{App, NewApp, now_millis};
    use crate::testing::{
        capi_app, dropped_after, on_each_dialect, on_each_dialect_with, read_all, sqlite_file_vault,
        sqlite_file_vault_with,
    };
    use crate::{BlobConfig, StoreError, UploadError, Vault};

    /// A completion whose ready-marking fails (refused here by a trigger
    /// the test adds on PostgreSQL) is answered as a failure and withdrawn
    /// at once: its app's quota no longer counts it and its blob is
    /// removed, where the row used to wait an hour for the reaper. A row
    /// whose ready-marking committed though its caller saw it fail (a lost
    /// reply, which no trigger makes) is withdrawn by the same statement:
    /// shown on a ready row, which can no longer be read nor counts.
    #[tokio::test]
    async fn a_completion_whose_ready_marking_fails_is_withdrawn_at_once() {
        use sqlx::Connection;

        use crate::ReadError;
        use crate::testing::{drop_postgres_database, postgres_vault};

        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs");
        let (vault, url, name) = postgres_vault(BlobConfig::local(blobs.display().to_string())).await;
        let app = capi_app(&vault).await;
        let counted = async || {
            let stats = vault.app_stats(&app.id).await.unwrap();
            (stats.media_used, stats.bytes_used)
        };
        let files = || {
            walkdir::WalkDir::new(&blobs)
                .into_iter()
                .filter(|entry| entry.as_ref().is_ok_and(|entry| entry.file_type().is_file()))
                .count()
        };

        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "CREATE FUNCTION refuse_ready() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
             CREATE TRIGGER refuse_ready BEFORE UPDATE ON media FOR EACH ROW \
             WHEN (OLD.state = 'uploading' AND NEW.state = 'ready') EXECUTE FUNCTION refuse_ready()",
        )
        .execute(&mut admin)
        .await
        .unwrap();
        let mut upload = vault.begin_upload(&app, None).await.unwrap();
        upload.write(b"a file whose completion fails").await.unwrap();
        let failed = upload.finish("text/plain").await;
        assert!(matches!(failed, Err(UploadError::Unavailable(_))), "{failed:?}");
        assert_eq!(counted().await, (0, 0), "the quota no longer counts it");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while files() > 0 {
            assert!(std::time::Instant::now() < deadline, "the blob is removed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        sqlx::raw_sql("DROP TRIGGER refuse_ready ON media")
            .execute(&mut admin)
            .await
            .unwrap();
        let mut upload = vault.begin_upload(&app, None).await.unwrap();
        upload
            .write(b"a file whose completion was not seen")
            .await
            .unwrap();
        let id = upload.finish("text/plain").await.unwrap();
        assert_eq!(counted().await.0, 1);
        vault
            .inner
            .meta
            .withdraw_unacknowledged(&id, now_millis())
            .await
            .unwrap();
        assert!(matches!(vault.find(&app.id, &id).await, Err(ReadError::NotFound)));
        assert_eq!(counted().await, (0, 0));

        vault.close().await;
        drop_postgres_database(&name).await;
    }

    /// Ids as a generator seeded with `seed` draws them, in order.
    fn seeded_ids(seed: u64) -> impl FnMut() -> MediaId + Send {
        let mut rng = StdRng::seed_from_u64(seed);
        move || MediaId::random(&mut rng)
    }

    /// Stores `bytes` as text under the ids `next_id` draws.
    async fn store(
        vault: &Vault,
        app: &App,
        bytes: &[u8],
        next_id: impl FnMut() -> MediaId + Send + 'static,
    ) -> MediaId {
        let mut upload = vault
            .begin_upload_with_ids(app, None, None, next_id)
            .await
            .unwrap();
        upload.write(bytes).await.unwrap();
        upload.finish("text/plain").await.unwrap()
    }

    /// An upload whose first id is already a stored medium's (the same
    /// seeded generator, run twice) writes nothing under it: the intent row
    /// hits the primary key, and the upload goes on under the next id, with
    /// its key wrapped for that id. Both media read back as stored.
    #[tokio::test]
    async fn an_upload_whose_id_is_taken_draws_another() {
        on_each_dialect(|vault| async move {
            let app = capi_app(&vault).await;
            let first = store(&vault, &app, b"the first file", seeded_ids(7)).await;
            let mut expected = seeded_ids(7);
            assert_eq!(first, expected());
            let second = store(&vault, &app, b"the second file", seeded_ids(7)).await;
            assert_eq!(second, expected(), "the generator's second id");
            assert_ne!(first, second);
            assert_eq!(read_all(&vault, &app, &first).await, b"the first file");
            assert_eq!(read_all(&vault, &app, &second).await, b"the second file");
            // The refused attempt reserved nothing that stayed.
            let stats = vault.app_stats(&app.id).await.unwrap();
            assert_eq!((stats.media_used, stats.bytes_used), (2, 29));
        })
        .await;
    }

    /// A generator that keeps drawing a taken id is not retried forever:
    /// the upload fails after a few draws and leaves nothing.
    #[tokio::test]
    async fn an_upload_gives_up_on_a_generator_that_repeats_itself() {
        on_each_dialect(|vault| async move {
            let app = capi_app(&vault).await;
            let taken = store(&vault, &app, b"stored", seeded_ids(1)).await;
            let again = {
                let taken = taken.clone();
                move || taken.clone()
            };
            let refused = vault.begin_upload_with_ids(&app, None, None, again).await;
            assert!(
                matches!(
                    refused,
                    Err(UploadError::Unavailable(StoreError::IdsExhausted(
                        super::ID_DRAWS
                    )))
                ),
                "{:?}",
                refused.err()
            );
            assert_eq!(vault.referenced_blob_keys().await.unwrap().len(), 1);
            assert_eq!(vault.app_stats(&app.id).await.unwrap().media_used, 1);
            assert_eq!(read_all(&vault, &app, &taken).await, b"stored");
        })
        .await;
    }

    /// Media stored under the UUID ids issued before numeric ones (the
    /// format binds whichever id into its keys) are found, read and
    /// deleted as before.
    #[tokio::test]
    async fn media_stored_under_a_uuid_id_stay_readable() {
        on_each_dialect(|vault| async move {
            let app = capi_app(&vault).await;
            let uuid = MediaId::new("4c3f0b1e-52c8-4c57-9d2a-3f1c2b7a9e10");
            let given = uuid.clone();
            let id = store(&vault, &app, b"stored before numeric ids", move || given.clone()).await;
            assert_eq!(id, uuid);
            assert_eq!(read_all(&vault, &app, &id).await, b"stored before numeric ids");
            vault.delete(&app.id, &id).await.unwrap();
            assert!(vault.find(&app.id, &id).await.is_err());
        })
        .await;
    }

    /// An app may take files up to 2^63 − 1 bytes, more than one blob
    /// holds: its uploads are limited to what a blob holds, and a declared
    /// length past that is only a guess, reserved up to the limit.
    #[tokio::test]
    async fn an_app_limit_past_what_a_blob_holds_is_a_blobs_limit() {
        on_each_dialect(|vault| async move {
            let largest = u64::try_from(i64::MAX).unwrap();
            let app = vault
                .create_app(NewApp {
                    name: "archive".into(),
                    capi: true,
                    max_file_bytes: Some(largest),
                    ..NewApp::default()
                })
                .await
                .unwrap();
            store(&vault, &app, b"held", seeded_ids(1)).await;
            let mut upload = vault.begin_sized_upload(&app, None, Some(largest)).await.unwrap();
            // Past that, refused as too large: its segments' indices, 32
            // bits, would run out.
            assert_eq!(upload.limit, crate::format::MAX_PLAINTEXT);
            upload.write(b"and more").await.unwrap();
            let id = upload.finish("text/plain").await.unwrap();
            assert_eq!(read_all(&vault, &app, &id).await, b"and more");
            let stats = vault.app_stats(&app.id).await.unwrap();
            assert_eq!((stats.media_used, stats.bytes_used), (2, 12), "{stats:?}");
        })
        .await;
    }

    /// A reservation more than an app's usage can count beside what it
    /// holds is refused like one past a quota: not added (PostgreSQL
    /// refused the sum with an error, a 500; SQLite made the counter a
    /// float, which then compared with every limit as a float).
    #[tokio::test]
    async fn a_reservation_past_what_usage_can_count_is_refused() {
        on_each_dialect(|vault| async move {
            let app = capi_app(&vault).await;
            store(&vault, &app, b"held", seeded_ids(2)).await;
            let upload = vault.begin_upload(&app, None).await.unwrap();
            let meta = &vault.inner.meta;
            let growth = meta
                .reserve_more(upload.id(), i64::MAX, vault.quota_defaults())
                .await;
            assert!(matches!(growth, Ok(Growth::Refused)), "{growth:?}");
            let grown = meta.reserve_more(upload.id(), 1000, vault.quota_defaults()).await;
            assert!(matches!(grown, Ok(Growth::Granted)), "{grown:?}");
            upload.abort().await;
            let stats = vault.app_stats(&app.id).await.unwrap();
            assert_eq!((stats.media_used, stats.bytes_used), (1, 4), "{stats:?}");
        })
        .await;
    }

    /// What the vault issues is a numeric id, whatever reads it.
    #[tokio::test]
    async fn uploads_are_given_numeric_ids() {
        on_each_dialect(|vault| async move {
            let app = capi_app(&vault).await;
            let mut upload = vault.begin_upload(&app, None).await.unwrap();
            upload.write(b"words").await.unwrap();
            let id = upload.finish("text/plain").await.unwrap();
            let digits = id.as_str();
            assert!((16..=19).contains(&digits.len()), "{digits}");
            assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{digits}");
            assert_eq!(read_all(&vault, &app, &id).await, b"words");
        })
        .await;
    }

    /// Waits until everything `app`'s rows hold is what its readable media
    /// hold, and every blob stored is one a row names: no intent, blob or
    /// reservation left behind. Fails if that takes over 5 s.
    async fn settles(vault: &Vault, app: &App, case: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stats = vault.app_stats(&app.id).await.unwrap();
            let mut stored = vault.stored_blob_keys().await.unwrap();
            let mut named = vault.referenced_blob_keys().await.unwrap();
            stored.sort();
            named.sort();
            let settled = stats.media_used == stats.media_count && stats.bytes_used == stats.bytes_stored;
            if settled && stored == named {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{case}: left behind: {stats:?}, blobs {stored:?}, named by rows {named:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An upload whose caller goes away while it begins, completes or is
    /// undone (a client hanging up once its body is sent) runs to the end
    /// of that step all the same: whichever wait it is dropped at, nothing
    /// is left half settled. (Dropped while the intent row's statement was
    /// in flight, the row was written and nobody undid it until the
    /// reaper came, an hour later.)
    #[tokio::test]
    async fn an_upload_dropped_at_any_wait_leaves_nothing_half_settled() {
        on_each_dialect(|vault| async move {
            let app = capi_app(&vault).await;
            for waits in 1..=6 {
                dropped_after(vault.begin_upload(&app, None), waits).await;
                settles(&vault, &app, &format!("begun, dropped at wait {waits}")).await;

                let mut upload = vault.begin_upload(&app, None).await.unwrap();
                upload.write(b"some words").await.unwrap();
                dropped_after(upload.finish("text/plain"), waits).await;
                settles(&vault, &app, &format!("finished, dropped at wait {waits}")).await;

                let mut upload = vault.begin_upload(&app, None).await.unwrap();
                upload.write(b"not a picture").await.unwrap();
                dropped_after(upload.finish("image/png"), waits).await;
                settles(&vault, &app, &format!("refused, dropped at wait {waits}")).await;

                let mut upload = vault.begin_upload(&app, None).await.unwrap();
                upload.write(b"some words").await.unwrap();
                dropped_after(upload.abort(), waits).await;
                settles(&vault, &app, &format!("aborted, dropped at wait {waits}")).await;
            }
        })
        .await;
    }

    /// An upload whose bytes keep arriving is not taken as abandoned,
    /// however long it runs past `reaper.stale_upload_after`: it notes its
    /// progress in its row, and the reaper judges by that. One whose bytes
    /// stop is taken once the setting has passed since its last progress,
    /// and learns of it at its next write.
    #[tokio::test]
    async fn an_upload_still_receiving_is_not_abandoned_however_long_it_runs() {
        const STALE: Duration = Duration::from_millis(400);
        on_each_dialect_with(STALE, |vault| async move {
            let app = capi_app(&vault).await;
            let mut slow = vault.begin_upload(&app, None).await.unwrap();
            let started = std::time::Instant::now();
            let mut sent = Vec::new();
            while started.elapsed() < 3 * STALE {
                slow.write(b"a few words more ").await.unwrap();
                sent.extend_from_slice(b"a few words more ");
                tokio::time::sleep(STALE / 8).await;
                let counts = vault.reap_batch(now_millis(), 10).await.unwrap();
                assert_eq!(counts.abandoned, 0, "taken after {:?}", started.elapsed());
            }
            let id = slow.finish("text/plain").await.unwrap();
            assert_eq!(read_all(&vault, &app, &id).await, sent);

            let mut stopped = vault.begin_upload(&app, None).await.unwrap();
            stopped.write(b"a few words").await.unwrap();
            tokio::time::sleep(STALE + STALE / 4).await;
            assert_eq!(vault.reap_batch(now_millis(), 10).await.unwrap().abandoned, 1);
            assert!(matches!(
                stopped.write(b" and then no more").await,
                Err(UploadError::Reclaimed)
            ));
        })
        .await;
    }

    /// The reaper takes an upload as abandoned once it has shown no
    /// progress for the setting (here 1 ms), though its client may still be
    /// there: completing it fails, and the blob it wrote goes too.
    #[tokio::test]
    async fn an_upload_reaped_while_it_runs_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let vault = sqlite_file_vault(dir.path(), Duration::from_millis(1)).await;
        let app = capi_app(&vault).await;
        let mut upload = vault.begin_upload(&app, None).await.unwrap();
        upload.write(b"just some words").await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let counts = vault.reap_batch(now_millis(), 10).await.unwrap();
        assert_eq!(counts.abandoned, 1);

        assert!(matches!(
            upload.finish("text/plain").await,
            Err(UploadError::Reclaimed)
        ));
        assert!(vault.referenced_blob_keys().await.unwrap().is_empty());
        assert!(vault.stored_blob_keys().await.unwrap().is_empty());
    }

    /// Uploads stop at the blob directory's reserve of free space
    /// (`blobs.min_free_bytes`), each refused with nothing left behind: at
    /// the start where the file system has no room past the reserve, or no
    /// room for all of a declared length, and part way where a file of
    /// unknown length outgrows the room there was. Files that fit are kept,
    /// and an upload holds a step of the room at a time, not all it declared.
    #[tokio::test]
    async fn uploads_stop_at_the_reserve_of_free_space_and_leave_nothing() {
        const MIB: u64 = 1024 * 1024;
        const STALE: Duration = Duration::from_secs(3600);
        let blobs_in = |dir: &std::path::Path, min_free_bytes| BlobConfig {
            min_free_bytes,
            ..BlobConfig::local(dir.join("blobs").display().to_string())
        };

        let full = tempfile::tempdir().unwrap();
        let vault = sqlite_file_vault_with(full.path(), blobs_in(full.path(), u64::MAX), STALE).await;
        let app = capi_app(&vault).await;
        let refused = vault.begin_upload(&app, None).await;
        assert!(matches!(refused, Err(UploadError::StoreFull)), "no room at all");
        settles(&vault, &app, "no room at all").await;

        // About 64 MiB of room, give or take what others write meanwhile.
        let dir = tempfile::tempdir().unwrap();
        let reserve = crate::store_room::free_bytes(dir.path())
            .unwrap()
            .saturating_sub(64 * MIB);
        let vault = sqlite_file_vault_with(dir.path(), blobs_in(dir.path(), reserve), STALE).await;
        let app = vault
            .create_app(NewApp {
                name: "large files".into(),
                capi: true,
                max_file_bytes: Some(1024 * MIB),
                ..NewApp::default()
            })
            .await
            .unwrap();
        let kept = store(&vault, &app, b"a file that fits", seeded_ids(1)).await;

        let refused = vault.begin_sized_upload(&app, None, Some(512 * MIB)).await;
        assert!(
            matches!(refused, Err(UploadError::StoreFull)),
            "a declared length past the room"
        );
        // Each holds a step of the room, not all it declared: uploads that
        // trickle in cannot hold the room from others.
        let mut running = Vec::new();
        for n in 1..=3 {
            let begun = vault.begin_sized_upload(&app, None, Some(30 * MIB)).await;
            running.push(begun.unwrap_or_else(|e| panic!("declared upload {n}: {e}")));
        }
        for upload in running {
            upload.abort().await;
        }
        settles(&vault, &app, "declared uploads aborted").await;
        settles(&vault, &app, "a declared length past the room").await;

        let mut upload = vault.begin_upload(&app, None).await.unwrap();
        let chunk = vec![7; MIB as usize];
        let refused = loop {
            match upload.write(&chunk).await {
                Ok(()) => assert!(upload.received() < 512 * MIB, "never refused"),
                Err(error) => break error,
            }
        };
        assert!(matches!(refused, UploadError::StoreFull), "{refused:?}");
        upload.abort().await;
        settles(&vault, &app, "refused part way").await;
        assert_eq!(read_all(&vault, &app, &kept).await, b"a file that fits");
    }
}
