//! Media rows through their life: the intent row of an upload, its
//! completion or failure, reads, and deletion on request.

use super::state::DROP_KEY;
use super::{Metadata, sqlite};
use crate::error::StoreError;
use crate::ids::{AppId, MediaId};
use crate::model::Millis;

/// A media row, with its wrapped key, as the read path needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct MediaRow {
    pub id: MediaId,
    pub app_id: AppId,
    pub mime_type: Option<String>,
    pub filename: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub blob_key: String,
    pub kek_id: String,
    /// Always present on a readable row (it is read by joining its key).
    pub wrapped_dek: Option<Vec<u8>>,
    pub format_version: i32,
    pub segment_size: i32,
    pub salt: Vec<u8>,
    pub nonce_prefix: Vec<u8>,
    pub created_at: Millis,
    pub expires_at: Millis,
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
}

/// What completes an upload.
pub(crate) struct ReadyMedia<'a> {
    pub id: &'a MediaId,
    pub mime_type: &'a str,
    pub size_bytes: i64,
    pub sha256: &'a str,
    pub expires_at: Millis,
}

impl Metadata {
    pub(crate) async fn count_ready(&self) -> Result<u64, StoreError> {
        const SQL: &str = concat!("SELECT COUNT(*) FROM media WHERE state = ", state_sql!(Ready));
        let count: i64 = on_pool!(self, pool => sqlx::query_scalar(SQL).fetch_one(pool).await)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Writes the intent row and its wrapped key, in one transaction. On
    /// Postgres it is committed without waiting for its WAL flush. A crash
    /// may lose it, and that loses nothing: the upload's `mark_ready` then
    /// finds no row and drops the blob (or the orphan sweep does), while
    /// `mark_ready`'s own durable commit flushes the WAL up to and past this
    /// row. That halves the fsyncs of a small upload.
    pub(crate) async fn insert_uploading(&self, row: &NewMedia<'_>) -> Result<(), StoreError> {
        const MEDIA: &str = concat!(
            "INSERT INTO media (id, app_id, state, filename, blob_key, \
             format_version, segment_size, salt, nonce_prefix, created_at, expires_at, due_at) \
             VALUES ($1, $2, ",
            state_sql!(Uploading),
            ", $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        );
        const KEY: &str = "INSERT INTO media_keys (media_id, kek_id, wrapped_dek) VALUES ($1, $2, $3)";
        on_relaxed_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(MEDIA)
                .bind(row.id)
                .bind(row.app_id)
                .bind(row.filename)
                .bind(row.blob_key)
                .bind(crate::format::VERSION)
                .bind(crate::format::SEGMENT_SIZE as i32)
                .bind(row.salt)
                .bind(row.nonce_prefix)
                .bind(row.created_at)
                .bind(row.expires_at)
                .bind(row.abandon_at)
                .execute(&mut *tx)
                .await?;
            sqlx::query(KEY)
                .bind(row.id)
                .bind(row.kek_id)
                .bind(row.wrapped_dek)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })?;
        Ok(())
    }

    /// Completes an upload. `false` means the row is no longer `uploading`
    /// (the reaper took it as abandoned, or its app was deleted and shredded
    /// it): the caller must drop its blob. The app check also covers an
    /// upload whose intent row was written just after its app was deleted.
    pub(crate) async fn mark_ready(&self, ready: &ReadyMedia<'_>) -> Result<bool, StoreError> {
        const SQL: &str = concat!(
            "UPDATE media SET state = ",
            state_sql!(Ready),
            ", mime_type = $2, size_bytes = $3, sha256 = $4, expires_at = $5, due_at = $5 \
             WHERE id = $1 AND state = ",
            state_sql!(Uploading),
            " AND EXISTS (SELECT 1 FROM apps WHERE apps.id = media.app_id AND apps.deleted_at IS NULL)"
        );
        let done = on_pool!(self, pool => sqlx::query(SQL)
            .bind(ready.id)
            .bind(ready.mime_type)
            .bind(ready.size_bytes)
            .bind(ready.sha256)
            .bind(ready.expires_at)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// Removes the row of an upload that failed (its key goes with it); only
    /// while still `uploading`.
    pub(crate) async fn delete_uploading(&self, id: &MediaId) -> Result<(), StoreError> {
        const SQL: &str = concat!(
            "DELETE FROM media WHERE id = $1 AND state = ",
            state_sql!(Uploading)
        );
        on_pool!(self, pool => sqlx::query(SQL).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Shreds a failed upload whose blob could not be removed and hands it
    /// to the reaper at once.
    pub(crate) async fn abandon_uploading(&self, id: &MediaId, now: Millis) -> Result<(), StoreError> {
        const SQL: &str = shred_media!(concat!("WHERE id = $3 AND state = ", state_sql!(Uploading)));
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if sqlx::query(SQL).bind(now).bind(now).bind(id).execute(&mut *tx).await?.rows_affected() == 1 {
                sqlx::query(DROP_KEY).bind(id).execute(&mut *tx).await?;
            }
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
            "SELECT m.id, m.app_id, m.mime_type, m.filename, m.size_bytes, m.sha256, m.blob_key, \
                           k.kek_id, k.wrapped_dek, m.format_version, m.segment_size, m.salt, m.nonce_prefix, \
                           m.created_at, m.expires_at \
                           FROM media m JOIN media_keys k ON k.media_id = m.id \
                           WHERE m.app_id = $1 AND m.id = $2 AND m.state = ",
            state_sql!(Ready),
            " AND m.expires_at > $3"
        );
        Ok(
            on_pool!(self, pool => sqlx::query_as(SQL).bind(app_id).bind(id).bind(now).fetch_optional(pool).await)?,
        )
    }

    /// Crypto-shreds readable media of `app_id` in one transaction: from its
    /// commit on, the wrapped key's row is gone. Returns the blob key to delete.
    pub(crate) async fn shred(
        &self,
        app_id: &AppId,
        id: &MediaId,
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        const SQL: &str = shred_media!(concat!(
            "WHERE app_id = $3 AND id = $4 AND state = ",
            state_sql!(Ready),
            " AND expires_at > $1 AND id IN (SELECT media_id FROM media_keys) RETURNING blob_key"
        ));
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let blob_key: Option<String> =
                sqlx::query_scalar(SQL).bind(now).bind(now).bind(app_id).bind(id).fetch_optional(&mut *tx).await?;
            if blob_key.is_some() {
                sqlx::query(DROP_KEY).bind(id).execute(&mut *tx).await?;
            }
            tx.commit().await.map(|()| blob_key)
        })?)
    }

    /// Removes the row of shredded media once its blob is gone.
    pub(crate) async fn delete_shredded(&self, id: &MediaId) -> Result<(), StoreError> {
        const SQL: &str = concat!(
            "DELETE FROM media WHERE id = $1 AND state = ",
            state_sql!(Deleting)
        );
        on_pool!(self, pool => sqlx::query(SQL).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Makes shredding reach the database's files where the store can: on
    /// SQLite the WAL, which still holds page images with the shredded keys,
    /// is checkpointed and truncated. Postgres keeps old tuple versions until
    /// vacuum (see docs/format.md).
    pub(crate) async fn settle_shredded(&self) {
        if let Metadata::Sqlite(pool) = self {
            sqlite::truncate_wal(pool).await;
        }
    }
}
