//! Media rows through their life: the intent row of an upload, its
//! completion or failure, reads, and deletion on request.

use super::group_commit::Answered;
use super::state::DROP_KEY;
use super::usage::{Growth, Held, QuotaDefaults, RESERVE};
use super::{Metadata, postgres, sqlite};
use crate::error::StoreError;
use crate::ids::{AppId, MediaId};
use crate::model::{MediaInfo, Millis};

/// What a readable medium shows of itself: its metadata, from `media`
/// alone.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct InfoRow {
    pub id: MediaId,
    pub app_id: AppId,
    pub mime_type: Option<String>,
    pub filename: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub created_at: Millis,
    pub expires_at: Millis,
}

impl From<InfoRow> for MediaInfo {
    fn from(row: InfoRow) -> MediaInfo {
        MediaInfo {
            id: row.id,
            app_id: row.app_id,
            mime_type: row.mime_type.unwrap_or_default(),
            filename: row.filename,
            size_bytes: row.size_bytes.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            sha256: row.sha256.unwrap_or_default(),
            created_at: row.created_at,
            expires_at: row.expires_at,
        }
    }
}

/// A media row, with its wrapped key, as the read path needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct MediaRow {
    #[sqlx(flatten)]
    pub info: InfoRow,
    pub blob_key: String,
    pub kek_id: String,
    /// Always present on a readable row (it is read by joining its key).
    pub wrapped_dek: Option<Vec<u8>>,
    pub format_version: i32,
    pub segment_size: i32,
    pub salt: Vec<u8>,
    pub nonce_prefix: Vec<u8>,
}

/// The columns of `InfoRow`, of `media m`.
macro_rules! info_columns {
    () => {
        "m.id, m.app_id, m.mime_type, m.filename, m.size_bytes, m.sha256, m.created_at, m.expires_at"
    };
}

/// Binds: the app, the medium, now.
macro_rules! where_readable {
    () => {
        concat!(
            " WHERE m.app_id = $1 AND m.id = $2 AND m.state = ",
            state_sql!(Ready),
            " AND m.expires_at > $3"
        )
    };
}

/// The intent row written before any blob byte.
pub(crate) struct NewMedia<'a> {
    pub id: &'a MediaId,
    pub app_id: &'a AppId,
    pub filename: Option<&'a str>,
    pub blob_key: &'a str,
    pub kek_id: &'a str,
    pub wrapped_dek: &'a [u8],
    pub salt: &'a [u8],
    pub nonce_prefix: &'a [u8],
    pub created_at: Millis,
    pub expires_at: Millis,
    /// The row's `due_at` while it uploads: when it would be abandoned under
    /// the setting of the moment. The claim judges uploads by `created_at`
    /// and the setting of the pass instead, so a changed setting applies to
    /// uploads already running.
    pub abandon_at: Millis,
    /// The bytes of its app's quota it reserves (with one medium).
    pub reserved_bytes: i64,
}

/// What writing an intent row came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intent {
    /// The row, its key and its reservation are written.
    Written,
    /// The app's quota has no room for the reservation; nothing is written.
    NoRoom,
    /// Another row has the id (ids are random: a collision, or an id drawn
    /// twice); nothing is written, and another id may be tried.
    IdTaken,
}

/// What completes an upload.
pub(crate) struct ReadyMedia<'a> {
    pub id: &'a MediaId,
    pub mime_type: &'a str,
    pub size_bytes: i64,
    pub sha256: &'a str,
    pub expires_at: Millis,
    /// The upload's reservation beyond `size_bytes`, given back to the
    /// app's quota as it completes.
    pub unused_bytes: i64,
}

/// A row just shredded: its blob, whether it had expired, and what it held
/// of its app's quota.
#[derive(sqlx::FromRow)]
struct Shredded {
    blob_key: String,
    expired: bool,
    #[sqlx(flatten)]
    held: Held,
}

/// What `shred` left to finish.
pub(crate) struct ShredOutcome {
    /// The blob to delete.
    pub(crate) blob_key: String,
    /// The media had expired, unknown to the reaper so far.
    pub(crate) expired: bool,
}

impl Metadata {
    /// Ready media: those the apps' usage counts (`used_media`), less the
    /// uploads among them (found in the small index of uploads in progress).
    /// A sum over the apps, not a count of the media table, which every
    /// reaper pass would otherwise read whole. Rows an older version wrote
    /// without a reservation count once `apps recount` has adopted them.
    pub(crate) async fn count_ready(&self) -> Result<u64, StoreError> {
        const SQL: &str = concat!(
            "SELECT CAST(COALESCE((SELECT SUM(used_media) FROM apps), 0) \
             - (SELECT COUNT(*) FROM media WHERE state = ",
            state_sql!(Uploading),
            " AND reserved_bytes IS NOT NULL) AS BIGINT)"
        );
        let count: i64 = on_pool!(self, pool => sqlx::query_scalar(SQL).fetch_one(pool).await)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Writes the intent row and its wrapped key, and reserves one medium
    /// and `row.reserved_bytes` of its app's quota, all in one transaction;
    /// writes nothing if the quota has no room for them or the id is
    /// another row's (`Intent` says which). On
    /// Postgres it is one statement, committed without waiting for its WAL
    /// flush. A crash may lose it, and that loses nothing: the upload's
    /// `mark_ready` then finds no row and drops the blob (or the orphan sweep
    /// does), while `mark_ready`'s own durable commit flushes the WAL up to
    /// and past this row. That halves the fsyncs of a small upload. On
    /// SQLite it joins a group commit (see `group_commit`) and, for the same
    /// reason, is answered at the commit, before the WAL is synced: the sync
    /// that answers `mark_ready` covers it.
    pub(crate) async fn insert_uploading(
        &self,
        row: &NewMedia<'_>,
        quota: QuotaDefaults,
    ) -> Result<Intent, StoreError> {
        match self {
            Metadata::Postgres { relaxed, .. } => postgres::insert_uploading(relaxed, row, quota).await,
            Metadata::Sqlite { writes, .. } => {
                writes
                    .write(Answered::Committed, async |conn| {
                        sqlite::insert_uploading(conn, row, quota).await
                    })
                    .await
            }
        }
    }

    /// Reserves `bytes` more of the app's quota for an upload that outgrew
    /// its reservation: the row's reservation and the app's usage grow
    /// together, or neither does. Unlike the intent row, committed with its
    /// flush on Postgres: a lost intent row is found at completion (the row
    /// is gone, and the upload undone), but a lost growth would leave the
    /// upload storing bytes its app's usage no longer counts. One flush per
    /// `RESERVATION_STEP` of a large upload costs nothing much.
    pub(crate) async fn reserve_more(
        &self,
        id: &MediaId,
        bytes: i64,
        quota: QuotaDefaults,
    ) -> Result<Growth, StoreError> {
        // A growth the row cannot count is not added to it (the sum would
        // overflow); the app's, which counts the row too, refuses it then,
        // and the transaction is rolled back.
        const GROW: &str = concat!(
            "UPDATE media SET reserved_bytes = reserved_bytes + \
             CASE WHEN $2 <= 9223372036854775807 - reserved_bytes THEN $2 ELSE 0 END \
             WHERE id = $1 AND state = ",
            state_sql!(Uploading),
            " RETURNING app_id"
        );
        Ok(on_write_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let app_id: Option<AppId> =
                sqlx::query_scalar(GROW).bind(id).bind(bytes).fetch_optional(&mut *tx).await?;
            match app_id {
                None => Ok::<_, sqlx::Error>(Growth::Gone),
                Some(app_id) => {
                    let reserved = bind_reservation!(sqlx::query(RESERVE), &app_id, bytes, 0_i64, quota)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if reserved == 0 {
                        Ok(Growth::Refused)
                    } else {
                        tx.commit().await?;
                        Ok(Growth::Granted)
                    }
                }
            }
        })?)
    }

    /// Records that upload `id` is still receiving its file at `now`, so
    /// that the reaper does not take it as abandoned while its bytes arrive
    /// (`media_uploading_active`). `false`: the row is no longer uploading
    /// (the reaper took it, or its app was deleted). On Postgres committed
    /// without waiting for its WAL flush: a lost one only leaves the reaper
    /// to judge by the progress noted before it.
    pub(crate) async fn note_progress(&self, id: &MediaId, now: Millis) -> Result<bool, StoreError> {
        const SQL: &str = concat!(
            "UPDATE media SET active_at = $2 WHERE id = $1 AND state = ",
            state_sql!(Uploading)
        );
        let noted = on_relaxed_pool!(self, pool => {
            sqlx::query(SQL).bind(id).bind(now).execute(pool).await.map(|done| done.rows_affected())
        })?;
        Ok(noted == 1)
    }

    /// Settles an upload's reservation to its size (`ready.unused_bytes` go
    /// back to the app's quota), then completes it. `false` means the row is
    /// no longer `uploading` (the reaper took it as abandoned, or its app
    /// was deleted and shredded it): the caller must drop its blob. The app
    /// check also covers an upload whose intent row was written just after
    /// its app was deleted. On SQLite both are one write of a group commit,
    /// as `insert_uploading` is; on Postgres the settlement commits first,
    /// on its own (see `postgres::mark_ready`).
    pub(crate) async fn mark_ready(&self, ready: &ReadyMedia<'_>) -> Result<bool, StoreError> {
        match self {
            Metadata::Postgres { pool, relaxed } => postgres::mark_ready(pool, relaxed, ready).await,
            Metadata::Sqlite { writes, .. } => {
                writes
                    .write(Answered::Synced, async |conn| {
                        sqlite::mark_ready(conn, ready).await
                    })
                    .await
            }
        }
    }

    /// Removes the row of an upload that failed (its key goes with it); only
    /// while still `uploading`. Its reservation is released with it.
    pub(crate) async fn delete_uploading(&self, id: &MediaId) -> Result<(), StoreError> {
        const SQL: &str = concat!(
            "DELETE FROM media WHERE id = $1 AND state = ",
            state_sql!(Uploading),
            " RETURNING app_id, reserved_bytes"
        );
        on_write_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let held: Option<Held> = sqlx::query_as(SQL).bind(id).fetch_optional(&mut *tx).await?;
            release_held!(tx, held);
            tx.commit().await
        })?;
        Ok(())
    }

    /// Shreds a failed upload whose blob could not be removed and hands it
    /// to the reaper at once; its reservation is released.
    pub(crate) async fn abandon_uploading(&self, id: &MediaId, now: Millis) -> Result<(), StoreError> {
        const SQL: &str = shred_media!(concat!(
            "WHERE id = $3 AND state = ",
            state_sql!(Uploading),
            " RETURNING app_id, reserved_bytes"
        ));
        self.abandon(SQL, id, now).await
    }

    /// `abandon_uploading` for an upload whose ready-marking failed: its
    /// caller is told the upload failed, yet the statement may have
    /// committed unseen (a reply lost to a crash or a dropped connection),
    /// so the row is taken whether still uploading or ready. Nobody was
    /// given its id; its app's quota must not count it until it expires.
    pub(crate) async fn withdraw_unacknowledged(&self, id: &MediaId, now: Millis) -> Result<(), StoreError> {
        const SQL: &str = shred_media!(concat!(
            "WHERE id = $3 AND state IN (",
            state_sql!(Uploading),
            ", ",
            state_sql!(Ready),
            ") RETURNING app_id, reserved_bytes"
        ));
        self.abandon(SQL, id, now).await
    }

    /// Shreds the row `sql` selects (binds: now, now, id), drops its key
    /// and releases what it held, in one transaction.
    async fn abandon(&self, sql: &'static str, id: &MediaId, now: Millis) -> Result<(), StoreError> {
        on_write_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let held: Option<Held> =
                sqlx::query_as(sql).bind(now).bind(now).bind(id).fetch_optional(&mut *tx).await?;
            if held.is_some() {
                sqlx::query(DROP_KEY).bind(id).execute(&mut *tx).await?;
            }
            release_held!(tx, held);
            tx.commit().await
        })?;
        Ok(())
    }

    /// A readable media row of `app_id`: ready, not shredded, not expired.
    pub(crate) async fn find_readable(
        &self,
        app_id: &AppId,
        id: &MediaId,
        now: Millis,
    ) -> Result<Option<MediaRow>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            info_columns!(),
            ", m.blob_key, k.kek_id, k.wrapped_dek, m.format_version, m.segment_size, m.salt, m.nonce_prefix \
             FROM media m JOIN media_keys k ON k.media_id = m.id",
            where_readable!()
        );
        Ok(
            on_pool!(self, pool => sqlx::query_as(SQL).bind(app_id).bind(id).bind(now).fetch_optional(pool).await)?,
        )
    }

    /// What `find_readable` finds of the same row, without its key: one
    /// table read where that reads two. A ready row always has its key:
    /// the intent writes both, and a shred, a claim by the reaper and an
    /// app's deletion each take the row out of `ready` in the transaction
    /// that deletes the key.
    pub(crate) async fn find_readable_info(
        &self,
        app_id: &AppId,
        id: &MediaId,
        now: Millis,
    ) -> Result<Option<InfoRow>, StoreError> {
        const SQL: &str = concat!("SELECT ", info_columns!(), " FROM media m", where_readable!());
        Ok(
            on_pool!(self, pool => sqlx::query_as(SQL).bind(app_id).bind(id).bind(now).fetch_optional(pool).await)?,
        )
    }

    /// Crypto-shreds stored media of `app_id` in one transaction: from its
    /// commit on, the wrapped key's row is gone, and what the media held of
    /// its app's quota is released. Returns what to finish: the blob key
    /// to delete, and whether the media had expired by `now`.
    ///
    /// Media expired but not yet reaped is shredded too (and the caller
    /// answers as for media not found): expiry is judged by this host's
    /// clock, and a replica whose clock runs fast must not leave the key
    /// of media that a DELETE named, and that others still serve, to the
    /// reaper's next pass.
    pub(crate) async fn shred(
        &self,
        app_id: &AppId,
        id: &MediaId,
        now: Millis,
    ) -> Result<Option<ShredOutcome>, StoreError> {
        const SQL: &str = shred_media!(concat!(
            "WHERE app_id = $3 AND id = $4 AND state = ",
            state_sql!(Ready),
            " AND id IN (SELECT media_id FROM media_keys) \
             RETURNING blob_key, expires_at <= $1 AS expired, app_id, reserved_bytes"
        ));
        Ok(on_write_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let shredded: Option<Shredded> =
                sqlx::query_as(SQL).bind(now).bind(now).bind(app_id).bind(id).fetch_optional(&mut *tx).await?;
            let outcome = shredded.as_ref().map(|row| ShredOutcome {
                blob_key: row.blob_key.clone(),
                expired: row.expired,
            });
            if outcome.is_some() {
                sqlx::query(DROP_KEY).bind(id).execute(&mut *tx).await?;
            }
            release_held!(tx, shredded.map(|row| row.held));
            tx.commit().await.map(|()| outcome)
        })?)
    }

    /// Removes the row of shredded media once its blob is gone.
    pub(crate) async fn delete_shredded(&self, id: &MediaId) -> Result<(), StoreError> {
        const SQL: &str = concat!(
            "DELETE FROM media WHERE id = $1 AND state = ",
            state_sql!(Deleting)
        );
        on_write_pool!(self, pool => sqlx::query(SQL).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Makes shredding reach the database's files where the store can: on
    /// SQLite the WAL, which still holds page images with the shredded keys,
    /// is checkpointed and truncated. Postgres keeps old tuple versions until
    /// vacuum (see docs/format.md).
    pub(crate) async fn settle_shredded(&self) {
        if let Metadata::Sqlite {
            pool,
            writes,
            wal_truncations,
        } = self
        {
            wal_truncations.settle(pool, writes).await;
        }
    }
}
