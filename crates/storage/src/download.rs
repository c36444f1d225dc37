//! Reading stored media: find a readable row, then stream the plaintext of a
//! byte range, fetching and decrypting only the segments it overlaps. No byte
//! of a segment is handed out before the segment's tag has verified, and none
//! after the media has been deleted: a delete here stops the stream at once,
//! and the stream re-reads its row every `RECHECK_EVERY` to learn of deletes
//! made through other replicas. A read takes its place among the reads a
//! delete stops before it looks its row up, so no delete falls between the
//! two; and a blob that fails to read is a failure of the store or of its
//! integrity only while its media is still readable: one that went away
//! with a delete is just not found.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, stream};

use crate::blobs::RangeError;
use crate::error::{ReadError, StoreError};
use crate::format::{self, HEADER_LEN, ciphertext_range, plaintext_range, segment_of};
use crate::ids::{AppId, MediaId, TokenId};
use crate::meta::MediaRow;
use crate::model::{MediaInfo, now_millis};
use crate::reads::Registration;
use crate::seal::{Header, SegmentOpener};
use crate::vault::Vault;

/// How stale a stream's knowledge that its media still exists may grow.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// What was wrong with stored media: the `kind` label of
/// `mediavault_integrity_failures_total`, a closed set.
#[derive(Debug, Clone, Copy)]
enum Integrity {
    /// A ready row whose blob is not in the store.
    MissingBlob,
    /// The blob ends before the row says it does.
    Truncated,
    /// A segment, or the blob's header, failed authentication.
    Tampered,
    /// The wrapped data key did not unwrap under its key.
    KeyUnwrap,
    /// The row itself is not readable (unknown format, bad lengths).
    BadRow,
}

impl Integrity {
    fn label(self) -> &'static str {
        match self {
            Integrity::MissingBlob => "missing_blob",
            Integrity::Truncated => "truncated",
            Integrity::Tampered => "tampered",
            Integrity::KeyUnwrap => "key_unwrap",
            Integrity::BadRow => "bad_row",
        }
    }
}

/// Logs and counts an integrity failure of `media_id`; the error to return.
fn integrity_failure(media_id: &MediaId, kind: Integrity, what: &str) -> ReadError {
    let kind = kind.label();
    tracing::error!(%media_id, kind, "stored media failed verification: {what}");
    metrics::counter!("mediavault_integrity_failures_total", "kind" => kind).increment(1);
    ReadError::Integrity(format!("{kind}: {what}"))
}

/// Logs that a read of `media_id` stopped because the media went away; the
/// error it ends with.
fn deleted_while_read(media_id: &MediaId) -> ReadError {
    tracing::info!(%media_id, "media deleted while being read; read stopped");
    ReadError::NotFound
}

/// Why a blob could not be read, before it is known whether its media was
/// deleted meanwhile (a blob removed by a delete is neither damaged nor a
/// failure of the store).
enum BlobFailure {
    Integrity(Integrity, String),
    Store(StoreError),
}

/// Plaintext of stored media, in order.
pub type PlaintextStream = BoxStream<'static, Result<Bytes, ReadError>>;

/// A readable file: its metadata, and what is needed to decrypt it.
#[derive(Debug, Clone)]
pub struct StoredMedia {
    pub info: MediaInfo,
    row: MediaRow,
    /// Taken before the row was looked up: a delete here that the lookup
    /// did not see cancels it.
    registration: Arc<Registration>,
    /// When the lookup began: the row was readable at least until then.
    found: Instant,
    /// The token whose link allows the read, if a link does: a read goes
    /// on only while it is live.
    granted_by: Option<TokenId>,
}

impl StoredMedia {
    /// Marks the read as allowed by a link made with `token_id`, if one
    /// is given: a stream of it stops, as for a delete, within about a
    /// second of the token's revocation on any replica, as the link itself
    /// would be refused.
    pub fn granted_by(mut self, token_id: Option<TokenId>) -> StoredMedia {
        self.granted_by = token_id;
        self
    }
}

impl Vault {
    /// The media `media_id` of `app_id` if it is readable now: unknown,
    /// expired, deleted and other apps' media are all `NotFound`.
    pub async fn find(&self, app_id: &AppId, media_id: &MediaId) -> Result<StoredMedia, ReadError> {
        // Registered first: a delete either commits before the lookup below
        // begins, which then does not find the row, or cancels this.
        let registration = Arc::new(self.inner.reads.register(app_id, media_id));
        let found = Instant::now();
        let row = self
            .inner
            .meta
            .find_readable(app_id, media_id, now_millis())
            .await?
            .ok_or(ReadError::NotFound)?;
        let info = MediaInfo::from(row.info.clone());
        Ok(StoredMedia {
            info,
            row,
            registration,
            found,
            granted_by: None,
        })
    }

    /// The metadata of media `media_id` of `app_id` if it is readable now,
    /// as `find` tells it, for a caller that will not read its bytes: no
    /// wrapped key is read.
    pub async fn info(&self, app_id: &AppId, media_id: &MediaId) -> Result<MediaInfo, ReadError> {
        let row = self
            .inner
            .meta
            .find_readable_info(app_id, media_id, now_millis())
            .await?
            .ok_or(ReadError::NotFound)?;
        Ok(row.into())
    }

    /// Whether `media` is still readable: not deleted here since it was
    /// found, its row still readable (a delete through another replica),
    /// and the token whose link allows the read, if one does, still live.
    async fn still_readable(
        &self,
        media_id: &MediaId,
        app_id: &AppId,
        registration: &Registration,
        granted_by: Option<&TokenId>,
    ) -> Result<bool, ReadError> {
        if registration.is_cancelled() {
            return Ok(false);
        }
        if let Some(token_id) = granted_by
            && !self.token_is_live(app_id, token_id).await?
        {
            tracing::info!(%media_id, "the token of the link being read was revoked; read stopped");
            return Ok(false);
        }
        let row = self
            .inner
            .meta
            .find_readable_info(app_id, media_id, now_millis())
            .await?;
        Ok(row.is_some())
    }

    /// The error a read of `media_id` ends with after `failure`: not found
    /// if the media went away meanwhile; else the failure, logged and
    /// counted as damage where it is one (and as damage too if whether the
    /// media still exists cannot be told).
    async fn read_failed(
        &self,
        media_id: &MediaId,
        app_id: &AppId,
        registration: &Registration,
        granted_by: Option<&TokenId>,
        failure: BlobFailure,
    ) -> ReadError {
        if let Ok(false) = self
            .still_readable(media_id, app_id, registration, granted_by)
            .await
        {
            return deleted_while_read(media_id);
        }
        match failure {
            BlobFailure::Integrity(kind, what) => integrity_failure(media_id, kind, &what),
            BlobFailure::Store(error) => ReadError::Unavailable(error),
        }
    }

    /// Deletes readable media: shreds its key at once (the media is
    /// unreadable from then on, in every copy of the blob), then removes the
    /// blob and the row. What fails after the shred is left to the reaper.
    /// A delete waits its app's turn first (`delete_turns`), so that one
    /// app's burst of deletes cannot hold every database connection.
    ///
    /// From the shred on it runs to its end on a task of its own: a client
    /// that hangs up mid-way (its handler dropped) must not leave a shred
    /// committed (SQLite's worker finishes a statement already sent) without
    /// its blob, its row and, on SQLite, the WAL's copy of the key removed.
    pub async fn delete(&self, app_id: &AppId, media_id: &MediaId) -> Result<(), ReadError> {
        // Waited for here, so that a caller who hangs up while it waits
        // leaves nothing behind; then held by the task, until its work ends.
        // Held by the caller instead, a hang-up would hand the turn on while
        // the delete still held its connection, and a client hanging up on
        // deletes in a loop would run any number of them at once.
        let turn = self.inner.delete_turns.take(app_id).await;
        let (vault, app_id, media_id) = (self.clone(), app_id.clone(), media_id.clone());
        self.to_the_end(async move {
            let _turn = turn;
            vault.shred_and_remove(&app_id, &media_id).await
        })
        .await
        .unwrap_or(Err(ReadError::Unavailable(StoreError::Stopping)))
    }

    async fn shred_and_remove(&self, app_id: &AppId, media_id: &MediaId) -> Result<(), ReadError> {
        let shredded = self
            .inner
            .meta
            .shred(app_id, media_id, now_millis())
            .await?
            .ok_or(ReadError::NotFound)?;
        let blob_key = shredded.blob_key;
        self.inner.reads.cancel(media_id);
        match self.inner.blobs.delete(&blob_key).await {
            Ok(()) => {
                if let Err(error) = self.inner.meta.delete_shredded(media_id).await {
                    tracing::warn!(%media_id, %error, "shredded; row left to the reaper");
                }
            }
            Err(error) => tracing::warn!(%media_id, %error, "shredded; blob left to the reaper"),
        }
        self.inner.meta.settle_shredded().await;
        if shredded.expired {
            return Err(ReadError::NotFound);
        }
        Ok(())
    }

    /// Streams plaintext bytes `range` (already clamped to the file) of `media`.
    pub async fn read(&self, media: &StoredMedia, range: Range<u64>) -> Result<PlaintextStream, ReadError> {
        let row = &media.row;
        let len = media.info.size_bytes;
        // Deleted since it was found: its key is not to be used.
        if media.registration.is_cancelled() {
            return Err(ReadError::NotFound);
        }
        assert!(
            range.start <= range.end && range.end <= len,
            "range {range:?} outside 0..{len}"
        );
        let bad_row = |what: &str| integrity_failure(&row.info.id, Integrity::BadRow, what);
        if row.format_version != format::VERSION || row.segment_size as usize != format::SEGMENT_SIZE {
            return Err(bad_row(&format!("unknown format version {}", row.format_version)));
        }
        let wrapped = row.wrapped_dek.as_deref().ok_or(ReadError::NotFound)?;
        let dek = self
            .inner
            .keys
            .unwrap(row.info.id.as_str(), &row.kek_id, wrapped)
            .await
            .map_err(|e| match e {
                // The key provider failed, not the stored key: a 500 like a store's.
                e if e.is_provider_failure() => ReadError::Unavailable(e.into()),
                e => integrity_failure(&row.info.id, Integrity::KeyUnwrap, &e.to_string()),
            })?;
        let header = Header {
            salt: row
                .salt
                .as_slice()
                .try_into()
                .map_err(|_| bad_row("salt length"))?,
            nonce_prefix: row
                .nonce_prefix
                .as_slice()
                .try_into()
                .map_err(|_| bad_row("nonce prefix length"))?,
        };
        if range.is_empty() {
            return Ok(stream::empty().boxed());
        }
        let first = segment_of(range.start);
        let last = segment_of(range.end - 1);
        // A read from segment 0 fetches the blob's header too, and checks
        // it against the row: a blob whose header is damaged would no longer
        // decrypt with any other implementation of the format.
        let expected_header = (first == 0).then(|| header.to_bytes());
        let blob_start = match expected_header {
            Some(_) => 0,
            None => ciphertext_range(first, len).start,
        };
        let blob_range = blob_start..ciphertext_range(last, len).end;
        let opened = match self
            .inner
            .blobs
            .read_range(&row.blob_key, blob_range.clone())
            .await
        {
            Ok(source) => Ok(source),
            Err(RangeError::Missing) => Err(BlobFailure::Integrity(Integrity::MissingBlob, "no blob".into())),
            Err(RangeError::Short(size)) => {
                let what = format!("blob is {size} bytes, read wants {blob_range:?}");
                Err(BlobFailure::Integrity(Integrity::Truncated, what))
            }
            Err(RangeError::Store(error)) => Err(BlobFailure::Store(error)),
        };
        let source = match opened {
            Ok(source) => source,
            Err(failure) => {
                return Err(self
                    .read_failed(
                        &row.info.id,
                        &row.info.app_id,
                        &media.registration,
                        media.granted_by.as_ref(),
                        failure,
                    )
                    .await);
            }
        };
        let reader = SegmentReader {
            source,
            expected_header,
            pending: Bytes::new(),
            buffered: BytesMut::new(),
            opener: SegmentOpener::new(&dek, &header, row.info.id.as_str(), len),
            media_id: row.info.id.clone(),
            next: first,
            last,
            len,
            want: range,
        };
        let live = LiveRead {
            vault: self.clone(),
            app_id: row.info.app_id.clone(),
            registration: media.registration.clone(),
            granted_by: media.granted_by.clone(),
            checked: media.found,
            reader,
        };
        Ok(stream::unfold(Some(live), |live| async move {
            let mut live = live?;
            match live.next_piece().await {
                Some(Ok(piece)) => Some((Ok(piece), Some(live))),
                // Stop after the first failure: nothing more is read or sent.
                Some(Err(error)) => Some((Err(error), None)),
                None => None,
            }
        })
        .boxed())
    }
}

/// A stream of verified plaintext that ends as soon as its media is deleted.
struct LiveRead {
    vault: Vault,
    app_id: AppId,
    registration: Arc<Registration>,
    /// The token whose link allows the read, if one does.
    granted_by: Option<TokenId>,
    /// When the row was last found readable.
    checked: Instant,
    reader: SegmentReader,
}

impl LiveRead {
    async fn next_piece(&mut self) -> Option<Result<Bytes, ReadError>> {
        let piece = tokio::select! {
            biased;
            () = self.registration.cancelled() => None,
            piece = self.reader.next_piece() => Some(piece?),
        };
        let (vault, media_id) = (&self.vault, &self.reader.media_id);
        let piece = match piece {
            Some(Ok(piece)) => piece,
            Some(Err(failure)) => {
                let error = vault
                    .read_failed(
                        media_id,
                        &self.app_id,
                        &self.registration,
                        self.granted_by.as_ref(),
                        failure,
                    )
                    .await;
                return Some(Err(error));
            }
            None => return Some(Err(deleted_while_read(media_id))),
        };
        if self.checked.elapsed() >= RECHECK_EVERY {
            match vault
                .still_readable(
                    media_id,
                    &self.app_id,
                    &self.registration,
                    self.granted_by.as_ref(),
                )
                .await
            {
                Ok(true) => self.checked = Instant::now(),
                Ok(false) => return Some(Err(deleted_while_read(media_id))),
                // Unable to tell whether the media still exists: stop.
                Err(error) => return Some(Err(error)),
            }
        }
        if self.registration.is_cancelled() {
            return Some(Err(deleted_while_read(media_id)));
        }
        Some(Ok(piece))
    }
}

struct SegmentReader {
    source: BoxStream<'static, Result<Bytes, StoreError>>,
    /// The header the blob must open with, until it has been checked.
    expected_header: Option<[u8; HEADER_LEN]>,
    /// What is left of the source's last chunk.
    pending: Bytes,
    /// Bytes taken from `pending` towards the next segment: never more than
    /// one segment (and the header), whatever the size of the source's
    /// chunks, so that a download waiting for its client holds one chunk
    /// and one segment here, not a segment's worth past every chunk.
    buffered: BytesMut,
    opener: SegmentOpener,
    media_id: MediaId,
    next: u64,
    last: u64,
    len: u64,
    want: Range<u64>,
}

impl SegmentReader {
    /// The wanted plaintext of the next segment, once it has verified.
    async fn next_piece(&mut self) -> Option<Result<Bytes, BlobFailure>> {
        if self.next > self.last {
            return None;
        }
        let segment = self.next;
        if let Some(expected) = self.expected_header.take() {
            if let Err(error) = self.fill(segment, HEADER_LEN).await {
                return Some(Err(error));
            }
            let header_matches = self.buffered[..HEADER_LEN] == expected[..];
            self.buffered.advance(HEADER_LEN);
            if !header_matches {
                let what = "blob header does not match the row";
                return Some(Err(self.integrity(segment, Integrity::Tampered, what)));
            }
        }
        let sealed_len = {
            let r = ciphertext_range(segment, self.len);
            (r.end - r.start) as usize
        };
        if let Err(error) = self.fill(segment, sealed_len).await {
            return Some(Err(error));
        }
        // A segment of its own, not a split of `buffered`: a split would
        // share (and keep alive, while the piece waits to be sent) the
        // whole buffer it came from; a copy lets `buffered` reuse its room.
        let mut sealed = BytesMut::from(&self.buffered[..sealed_len]);
        self.buffered.advance(sealed_len);
        let plain_len = match self.opener.open(segment, &mut sealed) {
            Ok(n) => n,
            Err(_) => {
                let what = "segment failed authentication";
                return Some(Err(self.integrity(segment, Integrity::Tampered, what)));
            }
        };
        sealed.truncate(plain_len);
        let plain = plaintext_range(segment, self.len);
        let from = (self.want.start.max(plain.start) - plain.start) as usize;
        let to = (self.want.end.min(plain.end) - plain.start) as usize;
        self.next += 1;
        Some(Ok(sealed.freeze().slice(from..to)))
    }

    /// Buffers `needed` bytes of the blob (or more, if already buffered).
    async fn fill(&mut self, segment: u64, needed: usize) -> Result<(), BlobFailure> {
        while self.buffered.len() < needed {
            if self.pending.is_empty() {
                self.pending = match self.source.next().await {
                    Some(Ok(chunk)) => chunk,
                    Some(Err(error)) => return Err(BlobFailure::Store(error)),
                    None => return Err(self.integrity(segment, Integrity::Truncated, "blob ends early")),
                };
            }
            let take = (needed - self.buffered.len()).min(self.pending.len());
            self.buffered.extend_from_slice(&self.pending.split_to(take));
        }
        Ok(())
    }

    fn integrity(&self, segment: u64, kind: Integrity, what: &str) -> BlobFailure {
        BlobFailure::Integrity(kind, format!("segment {segment}: {what}"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::ReadError;
    use crate::ids::MediaId;
    use crate::model::{App, now_millis};
    use crate::testing::{
        capi_app, dropped_after, on_each_dialect, read_all, sqlite_file_vault, wal_len, wal_truncated,
    };
    use crate::vault::Vault;

    const FILE: &[u8] = b"a file that is deleted while it is being fetched";

    async fn store(vault: &Vault, app: &App) -> MediaId {
        let mut upload = vault.begin_upload(app, None).await.unwrap();
        upload.write(FILE).await.unwrap();
        upload.finish("text/plain").await.unwrap()
    }

    /// A delete whose caller goes away at any point after its shred (a
    /// client that hangs up) still makes the shred final in the files: on
    /// SQLite the WAL, which held the key's page images, is truncated. It was
    /// left until the next shred.
    #[tokio::test]
    async fn a_delete_dropped_after_its_shred_still_clears_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let vault = sqlite_file_vault(dir.path(), std::time::Duration::from_secs(3600)).await;
        let app = capi_app(&vault).await;
        for waits in 1..=10 {
            let id = store(&vault, &app).await;
            assert!(wal_len(dir.path()) > 0);
            dropped_after(vault.delete(&app.id, &id), waits).await;
            let what = format!("dropped at wait {waits}: shredded");
            wal_truncated(dir.path(), &what, async || {
                if vault.find(&app.id, &id).await.is_ok() {
                    // Dropped before it began, or before its task shredded:
                    // delete it (or find that task has meanwhile).
                    match vault.delete(&app.id, &id).await {
                        Ok(()) | Err(ReadError::NotFound) => {}
                        Err(error) => panic!("delete at wait {waits}: {error}"),
                    }
                }
            })
            .await;
        }
        vault.close().await;
    }

    /// A delete's turn is held by the task that runs the delete to its end,
    /// not by its caller. Clients that hang up while their deletes' shreds
    /// wait (on PostgreSQL for the app's row, which the test holds locked)
    /// leave those deletes holding the app's turns; the deletes after them,
    /// still waiting for a turn when their clients hung up, never run. When
    /// the caller held the turn, every hang-up handed it on, and all the
    /// deletes ran at once, each holding one of the pool's connections.
    #[tokio::test]
    async fn a_delete_keeps_its_turn_when_its_client_hangs_up() {
        use sqlx::Connection;

        use crate::BlobConfig;
        use crate::delete_turns::DELETES_PER_APP;
        use crate::testing::{drop_postgres_database, postgres_vault};

        let (vault, url, name) = postgres_vault(BlobConfig::local("memory://")).await;
        let app = capi_app(&vault).await;
        let mut ids = Vec::new();
        for _ in 0..DELETES_PER_APP + 2 {
            ids.push(store(&vault, &app).await);
        }

        let mut locker = sqlx::PgConnection::connect(&url).await.unwrap();
        let mut app_row = locker.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM apps WHERE id = $1 FOR UPDATE")
            .bind(&app.id)
            .execute(&mut *app_row)
            .await
            .unwrap();
        for id in &ids {
            let (vault, app_id, id) = (vault.clone(), app.id.clone(), id.clone());
            let client = tokio::spawn(async move { vault.delete(&app_id, &id).await });
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.abort();
            assert!(client.await.unwrap_err().is_cancelled(), "the delete waits");
        }
        let turns = &vault.inner.delete_turns;
        assert_eq!(
            turns.taken(&app.id),
            DELETES_PER_APP,
            "the deletes still running hold their turns"
        );

        app_row.rollback().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while turns.taken(&app.id) > 0 {
            assert!(std::time::Instant::now() < deadline, "the deletes end");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut deleted = 0;
        for id in &ids {
            match vault.find(&app.id, id).await {
                Err(ReadError::NotFound) => deleted += 1,
                Ok(_) => {}
                Err(error) => panic!("{id}: {error}"),
            }
        }
        assert_eq!(
            deleted, DELETES_PER_APP,
            "the deletes that had their turn, and no other"
        );
        vault.close().await;
        drop_postgres_database(&name).await;
    }

    /// The outcome of reading a medium whole, its bytes or the error.
    async fn read(vault: &Vault, media: &super::StoredMedia) -> Result<Vec<u8>, ReadError> {
        use futures::TryStreamExt;
        let pieces: Vec<bytes::Bytes> = vault
            .read(media, 0..media.info.size_bytes)
            .await?
            .try_collect()
            .await?;
        Ok(pieces.concat())
    }

    /// A lookup of metadata alone answers what a lookup for reading does:
    /// the same fields for a stored medium, and not found for one still
    /// uploading, one deleted, and one asked for through another app.
    #[tokio::test]
    async fn a_lookup_of_metadata_answers_what_a_lookup_for_reading_does() {
        on_each_dialect(|vault| async move {
            let app = capi_app(&vault).await;
            let other = capi_app(&vault).await;
            let stored = store(&vault, &app).await;
            let info = vault.info(&app.id, &stored).await.unwrap();
            assert_eq!(info, vault.find(&app.id, &stored).await.unwrap().info);
            assert_eq!(
                (info.size_bytes, info.mime_type.as_str()),
                (FILE.len() as u64, "text/plain")
            );

            let mut running = vault.begin_upload(&app, None).await.unwrap();
            running.write(FILE).await.unwrap();
            let deleted = store(&vault, &app).await;
            vault.delete(&app.id, &deleted).await.unwrap();
            for (app_id, id) in [(&app.id, running.id()), (&app.id, &deleted), (&other.id, &stored)] {
                assert!(
                    matches!(vault.info(app_id, id).await, Err(ReadError::NotFound)),
                    "{id}"
                );
                assert!(
                    matches!(vault.find(app_id, id).await, Err(ReadError::NotFound)),
                    "{id}"
                );
            }
        })
        .await;
    }

    /// A download found its medium, then the medium was deleted through the
    /// same replica before the download started reading: the read is not
    /// found, and does not unwrap the key it still holds in its row.
    #[tokio::test]
    async fn a_medium_deleted_between_its_lookup_and_its_read_is_not_found() {
        on_each_dialect(|vault| async move {
            let app = capi_app(&vault).await;
            let id = store(&vault, &app).await;
            let found = vault.find(&app.id, &id).await.unwrap();
            vault.delete(&app.id, &id).await.unwrap();
            assert!(matches!(read(&vault, &found).await, Err(ReadError::NotFound)));
        })
        .await;
    }

    /// A DELETE of media expired by this host's clock but not yet reaped
    /// (a replica whose clock runs fast, or the moments before a pass)
    /// answers not found, as for expired media, and shreds it all the
    /// same: its key was left in the database, and other replicas served
    /// it, until the reaper's next pass.
    #[tokio::test]
    async fn a_delete_of_media_expired_but_not_reaped_shreds_it() {
        on_each_dialect(|vault| async move {
            let app = vault
                .create_app(crate::NewApp {
                    name: "brief".into(),
                    capi: true,
                    retention: Some(Duration::from_secs(1)),
                    ..crate::NewApp::default()
                })
                .await
                .unwrap();
            let id = store(&vault, &app).await;
            tokio::time::sleep(Duration::from_millis(1_100)).await;
            assert!(matches!(vault.find(&app.id, &id).await, Err(ReadError::NotFound)));
            assert!(matches!(
                vault.delete(&app.id, &id).await,
                Err(ReadError::NotFound)
            ));
            let meta = &vault.inner.meta;
            assert_eq!(meta.key_use().await.unwrap(), Vec::new(), "the key is gone");
            assert!(matches!(
                vault.delete(&app.id, &id).await,
                Err(ReadError::NotFound)
            ));
        })
        .await;
    }

    /// A medium deleted through another replica (its key shredded and its
    /// blob removed there, nothing cancelled here) after a download here
    /// found it: the missing blob is the delete, not damage, so the read is
    /// not found. A blob missing under a row that is still readable is
    /// damage all the same.
    #[tokio::test]
    async fn a_blob_removed_by_a_delete_elsewhere_is_not_found_not_damage() {
        on_each_dialect(|vault| async move {
            let app = capi_app(&vault).await;
            let (gone, damaged) = (store(&vault, &app).await, store(&vault, &app).await);
            assert_eq!(read_all(&vault, &app, &gone).await, FILE);

            let found = vault.find(&app.id, &gone).await.unwrap();
            let meta = &vault.inner.meta;
            let blob_key = meta
                .shred(&app.id, &gone, now_millis())
                .await
                .unwrap()
                .unwrap()
                .blob_key;
            vault.inner.blobs.delete(&blob_key).await.unwrap();
            assert!(matches!(read(&vault, &found).await, Err(ReadError::NotFound)));

            let found = vault.find(&app.id, &damaged).await.unwrap();
            vault.inner.blobs.delete(&found.row.blob_key).await.unwrap();
            let error = read(&vault, &found).await.unwrap_err();
            assert!(
                matches!(&error, ReadError::Integrity(what) if what.starts_with("missing_blob")),
                "{error:?}"
            );
        })
        .await;
    }
}
