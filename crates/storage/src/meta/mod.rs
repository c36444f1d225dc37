//! The metadata store: apps, tokens and media rows, in SQLite (embedded) or
//! Postgres (production). Both dialects run the same SQL wherever they can
//! (sqlx binds `$1` placeholders on both); where they differ, the dialect's
//! own file says how.
//!
//! Wrapped data keys live in `media_keys`, one narrow row per live medium,
//! apart from the wide `media` rows: crypto-shredding deletes that row, in
//! the same transaction that marks the medium `deleting`, and a table this
//! narrow is cheap to rewrite, which is what finally removes a shredded key
//! from Postgres's pages (see `rewrite_key_table`).

#[macro_use]
mod state;
mod postgres;
mod sqlite;

use std::sync::LazyLock;

use sqlx::{PgPool, SqlitePool};

use crate::error::StoreError;
use crate::model::{App, Millis, TokenInfo};

pub(crate) use state::MediaState;

pub(crate) enum Metadata {
    /// `relaxed` commits without waiting for the WAL flush: only for intent
    /// rows (see `insert_uploading`).
    Postgres {
        pool: PgPool,
        relaxed: PgPool,
    },
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to whichever pool this store uses. The
/// body is compiled once per dialect, so shared SQL is written once; it must
/// yield the same type in both (for `execute`, the count of rows affected).
macro_rules! on_pool {
    ($meta:expr, $pool:ident => $body:expr) => {
        match $meta {
            Metadata::Postgres { pool: $pool, .. } => $body,
            Metadata::Sqlite($pool) => $body,
        }
    };
}

/// As `on_pool!`, on the pool for writes that a crash may lose without
/// losing anything: Postgres's `relaxed` one, SQLite's only one.
macro_rules! on_relaxed_pool {
    ($meta:expr, $pool:ident => $body:expr) => {
        match $meta {
            Metadata::Postgres { relaxed: $pool, .. } => $body,
            Metadata::Sqlite($pool) => $body,
        }
    };
}

/// A media row, with its wrapped key, as the read path needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct MediaRow {
    pub id: String,
    pub app_id: String,
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
    pub id: &'a str,
    pub app_id: &'a str,
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
    pub id: &'a str,
    pub mime_type: &'a str,
    pub size_bytes: i64,
    pub sha256: &'a str,
    pub expires_at: Millis,
}

/// Crypto-shreds one medium: run in the transaction of its `shred_media!`.
const DROP_KEY: &str = "DELETE FROM media_keys WHERE media_id = $1";

const APP_COLUMNS: &str =
    "id, name, capi, retention_seconds, max_file_bytes, allowed_types, uploads_per_second, created_at";

/// The live app of a live token, and the token's last use. Built once: it
/// is asked on every authenticated request.
static APP_FOR_TOKEN: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<String> = APP_COLUMNS.split(", ").map(|c| format!("a.{c}")).collect();
    format!(
        "SELECT {}, t.last_used_at FROM tokens t JOIN apps a ON a.id = t.app_id \
         WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL AND a.deleted_at IS NULL",
        columns.join(", ")
    )
});

/// An app found by one of its tokens, with the token's last use.
#[derive(sqlx::FromRow)]
struct TokenApp {
    #[sqlx(flatten)]
    app: App,
    last_used_at: Option<Millis>,
}

/// A live data key wrapped by some key other than the active one.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct WrappedRow {
    pub id: String,
    pub kek_id: String,
    pub wrapped_dek: Vec<u8>,
}

/// A data key re-wrapped, to be written only if its row still holds `old_kek_id`.
pub(crate) struct Rewrapped {
    pub id: String,
    pub old_kek_id: String,
    pub new_kek_id: String,
    pub wrapped_dek: Vec<u8>,
}

impl Metadata {
    /// Opens the store named by `url` (`sqlite://…` or `postgres://…`).
    pub(crate) async fn connect(url: &str) -> Result<Metadata, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Metadata::Postgres {
                pool: postgres::connect(url).await?,
                relaxed: postgres::connect_relaxed(url).await?,
            })
        } else if url.starts_with("sqlite:") {
            sqlite::connect(url).await.map(Metadata::Sqlite)
        } else {
            Err(StoreError::Config(
                "database.url must start with sqlite:// or postgres://".into(),
            ))
        }
    }

    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Metadata::Postgres { pool, .. } => postgres::migrate(pool).await,
            Metadata::Sqlite(pool) => sqlite::migrate(pool).await,
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub(crate) async fn count_ready(&self) -> Result<u64, StoreError> {
        const SQL: &str = concat!("SELECT COUNT(*) FROM media WHERE state = ", state_sql!(Ready));
        let count: i64 = on_pool!(self, pool => sqlx::query_scalar(SQL).fetch_one(pool).await)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    pub(crate) async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
        if let Metadata::Postgres { relaxed, .. } = self {
            relaxed.close().await;
        }
    }

    pub(crate) async fn insert_app(&self, app: &App) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO apps (id, name, capi, retention_seconds, max_file_bytes, allowed_types, \
                           uploads_per_second, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        on_pool!(self, pool => sqlx::query(SQL)
            .bind(&app.id)
            .bind(&app.name)
            .bind(app.capi)
            .bind(app.retention_seconds)
            .bind(app.max_file_bytes)
            .bind(&app.allowed_types)
            .bind(app.uploads_per_second)
            .bind(app.created_at)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub(crate) async fn list_apps(&self) -> Result<Vec<App>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {APP_COLUMNS} FROM apps WHERE deleted_at IS NULL ORDER BY created_at, id"
        ));
        Ok(on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)?)
    }

    pub(crate) async fn get_app(&self, id: &str) -> Result<Option<App>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {APP_COLUMNS} FROM apps WHERE id = $1 AND deleted_at IS NULL"
        ));
        Ok(on_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)?)
    }

    /// Changes an app's settings; `false` if there is no such live app.
    pub(crate) async fn update_app(&self, app: &App) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE apps SET name = $2, capi = $3, retention_seconds = $4, max_file_bytes = $5, \
                           allowed_types = $6, uploads_per_second = $7 WHERE id = $1 AND deleted_at IS NULL";
        let updated = on_pool!(self, pool => sqlx::query(SQL)
            .bind(&app.id)
            .bind(&app.name)
            .bind(app.capi)
            .bind(app.retention_seconds)
            .bind(app.max_file_bytes)
            .bind(&app.allowed_types)
            .bind(app.uploads_per_second)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(updated == 1)
    }

    /// Deletes an app in one transaction: the app is marked deleted, its
    /// tokens go, and every media row of it is shredded and handed to the
    /// reaper, which removes the blobs, the rows and finally the app.
    /// Returns how many media were shredded, or `None` if there is no such app.
    pub(crate) async fn delete_app(&self, id: &str, now: Millis) -> Result<Option<u64>, StoreError> {
        const MARK: &str = "UPDATE apps SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL";
        const TOKENS: &str = "DELETE FROM tokens WHERE app_id = $1";
        // Uploads still running find their row shredded and drop their blob.
        const SHRED: &str = shred_media!("WHERE app_id = $3 AND id IN (SELECT media_id FROM media_keys)");
        const DROP_KEYS: &str =
            "DELETE FROM media_keys WHERE media_id IN (SELECT id FROM media WHERE app_id = $1)";
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let marked = sqlx::query(MARK).bind(id).bind(now).execute(&mut *tx).await?.rows_affected();
            if marked == 0 {
                Ok::<_, sqlx::Error>(None)
            } else {
                sqlx::query(TOKENS).bind(id).execute(&mut *tx).await?;
                let shredded =
                    sqlx::query(SHRED).bind(now).bind(now).bind(id).execute(&mut *tx).await?.rows_affected();
                sqlx::query(DROP_KEYS).bind(id).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(Some(shredded))
            }
        })?)
    }

    /// Removes deleted apps whose media the reaper has all removed.
    pub(crate) async fn delete_emptied_apps(&self) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM apps WHERE deleted_at IS NOT NULL \
                           AND NOT EXISTS (SELECT 1 FROM media WHERE media.app_id = apps.id)";
        Ok(on_pool!(self, pool => sqlx::query(SQL).execute(pool).await.map(|r| r.rows_affected()))?)
    }

    /// Readable media of an app: how many, and their plaintext bytes.
    pub(crate) async fn app_stats(&self, app_id: &str, now: Millis) -> Result<(i64, i64), StoreError> {
        // SUM of BIGINT is NUMERIC in Postgres: cast back so both dialects agree.
        const SQL: &str = concat!(
            "SELECT COUNT(*), CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM media \
             WHERE app_id = $1 AND state = ",
            state_sql!(Ready),
            " AND expires_at > $2 AND id IN (SELECT media_id FROM media_keys)"
        );
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(app_id).bind(now).fetch_one(pool).await)?)
    }

    pub(crate) async fn insert_token(
        &self,
        token_sha256: &str,
        app_id: &str,
        label: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO tokens (id, token_sha256, app_id, label, created_at) \
                           VALUES (substr($1, 1, 16), $1, $2, $3, $4)";
        on_pool!(self, pool => sqlx::query(SQL)
            .bind(token_sha256)
            .bind(app_id)
            .bind(label)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Every token of an app, revoked ones included, oldest first.
    pub(crate) async fn list_tokens(&self, app_id: &str) -> Result<Vec<TokenInfo>, StoreError> {
        const SQL: &str = "SELECT id, app_id, label, created_at, revoked_at, last_used_at FROM tokens \
                           WHERE app_id = $1 ORDER BY created_at, id";
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(app_id).fetch_all(pool).await)?)
    }

    /// Revokes a token of `app_id` (again is fine); the token fails from the
    /// commit on. `false` if the app has no such token.
    pub(crate) async fn revoke_token(&self, app_id: &str, id: &str, now: Millis) -> Result<bool, StoreError> {
        const SQL: &str =
            "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $3) WHERE id = $2 AND app_id = $1";
        let revoked = on_pool!(self, pool => sqlx::query(SQL)
            .bind(app_id)
            .bind(id)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(revoked == 1)
    }

    /// The app a live token belongs to; notes its use at most once a minute.
    /// The last use is read with the app, so the write is sent only when it
    /// changes the row: authentication does not write (nor, on SQLite, take
    /// the one write lock) on every request.
    pub(crate) async fn app_for_token(
        &self,
        token_sha256: &str,
        now: Millis,
    ) -> Result<Option<App>, StoreError> {
        const TOUCH: &str = "UPDATE tokens SET last_used_at = $2 WHERE token_sha256 = $1 \
                             AND (last_used_at IS NULL OR last_used_at < $2 - 60000)";
        let found: Option<TokenApp> = on_pool!(self, pool => sqlx::query_as(APP_FOR_TOKEN.as_str()).bind(token_sha256).fetch_optional(pool).await)?;
        let Some(TokenApp { app, last_used_at }) = found else {
            return Ok(None);
        };
        if last_used_at.is_none_or(|at| at < now - 60_000) {
            on_pool!(self, pool => sqlx::query(TOUCH).bind(token_sha256).bind(now).execute(pool).await.map(|r| r.rows_affected()))?;
        }
        Ok(Some(app))
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
    pub(crate) async fn delete_uploading(&self, id: &str) -> Result<(), StoreError> {
        const SQL: &str = concat!(
            "DELETE FROM media WHERE id = $1 AND state = ",
            state_sql!(Uploading)
        );
        on_pool!(self, pool => sqlx::query(SQL).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Shreds a failed upload whose blob could not be removed and hands it
    /// to the reaper at once.
    pub(crate) async fn abandon_uploading(&self, id: &str, now: Millis) -> Result<(), StoreError> {
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
        app_id: &str,
        id: &str,
        now: Millis,
    ) -> Result<Option<MediaRow>, StoreError> {
        const SQL: &str = concat!(
            "SELECT m.id, m.app_id, m.mime_type, m.filename, m.size_bytes, m.sha256, m.blob_key, \
                           k.kek_id, k.wrapped_dek, m.format_version, m.segment_size, m.salt, m.nonce_prefix, \
                           m.created_at, m.expires_at \
                           FROM media m JOIN media_keys k ON k.media_id = m.id \
                           WHERE m.id = $1 AND m.app_id = $2 AND m.state = ",
            state_sql!(Ready),
            " AND m.expires_at > $3"
        );
        Ok(
            on_pool!(self, pool => sqlx::query_as(SQL).bind(id).bind(app_id).bind(now).fetch_optional(pool).await)?,
        )
    }

    /// Crypto-shreds readable media of `app_id` in one transaction: from its
    /// commit on, the wrapped key's row is gone. Returns the blob key to delete.
    pub(crate) async fn shred(
        &self,
        app_id: &str,
        id: &str,
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        const SQL: &str = shred_media!(concat!(
            "WHERE id = $3 AND app_id = $4 AND state = ",
            state_sql!(Ready),
            " AND expires_at > $1 AND id IN (SELECT media_id FROM media_keys) RETURNING blob_key"
        ));
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let blob_key: Option<String> =
                sqlx::query_scalar(SQL).bind(now).bind(now).bind(id).bind(app_id).fetch_optional(&mut *tx).await?;
            if blob_key.is_some() {
                sqlx::query(DROP_KEY).bind(id).execute(&mut *tx).await?;
            }
            tx.commit().await.map(|()| blob_key)
        })?)
    }

    /// Removes the row of shredded media once its blob is gone.
    pub(crate) async fn delete_shredded(&self, id: &str) -> Result<(), StoreError> {
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

    /// Postgres: a transaction holding the reaper's advisory lock, or `None`
    /// inside `Some` when another session holds it. SQLite: always free.
    #[allow(clippy::type_complexity)]
    pub(crate) async fn try_reaper_lock(
        &self,
    ) -> Result<Option<Option<sqlx::Transaction<'static, sqlx::Postgres>>>, StoreError> {
        match self {
            Metadata::Postgres { pool, .. } => Ok(postgres::try_reaper_lock(pool).await?.map(Some)),
            Metadata::Sqlite(_) => Ok(Some(None)),
        }
    }

    /// Claims up to `limit` rows due at `now` (uploads count as due once
    /// started before `stale_before`), shreds them and leases them until
    /// `lease_until`; returns them with the state they had.
    pub(crate) async fn claim_due(
        &self,
        now: Millis,
        limit: u32,
        lease_until: Millis,
        stale_before: Millis,
    ) -> Result<Vec<crate::reap::Claimed>, StoreError> {
        match self {
            Metadata::Postgres { pool, .. } => {
                postgres::claim_due(pool, now, limit, lease_until, stale_before).await
            }
            Metadata::Sqlite(pool) => sqlite::claim_due(pool, now, limit, lease_until, stale_before).await,
        }
    }

    /// Removes reaped rows (shredded, blobs gone).
    pub(crate) async fn delete_reaped(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        match self {
            Metadata::Postgres { pool, .. } => postgres::delete_reaped(pool, ids).await,
            Metadata::Sqlite(pool) => sqlite::delete_reaped(pool, ids).await,
        }
    }

    /// Makes shredded rows due at `now` again (their blob delete failed).
    pub(crate) async fn set_due(&self, ids: &[String], now: Millis) -> Result<(), StoreError> {
        const SQL: &str = concat!(
            "UPDATE media SET due_at = $2 WHERE id = $1 AND state = ",
            state_sql!(Deleting)
        );
        if ids.is_empty() {
            return Ok(());
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for id in ids {
                sqlx::query(SQL).bind(id).bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// How many live data keys each key-encryption key wraps.
    pub(crate) async fn key_use(&self) -> Result<Vec<(String, i64)>, StoreError> {
        const SQL: &str = "SELECT kek_id, COUNT(*) FROM media_keys GROUP BY kek_id ORDER BY kek_id";
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await)?)
    }

    /// Up to `limit` live data keys not wrapped by `active`, with ids after
    /// `after` in id order, so that a caller can page past rows it skips.
    pub(crate) async fn wrapped_by_others(
        &self,
        active: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<WrappedRow>, StoreError> {
        const SQL: &str = "SELECT media_id AS id, kek_id, wrapped_dek FROM media_keys \
                           WHERE kek_id <> $1 AND media_id > $2 ORDER BY media_id LIMIT $3";
        Ok(on_pool!(self, pool => sqlx::query_as(SQL)
            .bind(active)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)?)
    }

    /// Writes re-wrapped data keys in one transaction. Each is written only
    /// if its row still holds the old wrapping, so a delete or another
    /// rotation that got there first is never undone. Returns how many were
    /// written.
    pub(crate) async fn replace_wrapped(&self, rows: &[Rewrapped]) -> Result<u64, StoreError> {
        const SQL: &str =
            "UPDATE media_keys SET kek_id = $3, wrapped_dek = $4 WHERE media_id = $1 AND kek_id = $2";
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut written = 0;
            for row in rows {
                written += sqlx::query(SQL)
                    .bind(&row.id)
                    .bind(&row.old_kek_id)
                    .bind(&row.new_kek_id)
                    .bind(&row.wrapped_dek)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await.map(|()| written)
        })?)
    }

    /// Every blob key a row refers to, whatever its state.
    pub(crate) async fn blob_keys(&self) -> Result<Vec<String>, StoreError> {
        const SQL: &str = "SELECT blob_key FROM media ORDER BY blob_key";
        Ok(on_pool!(self, pool => sqlx::query_scalar(SQL).fetch_all(pool).await)?)
    }

    /// One live wrapped data key of `kek_id`, if any, as (media id, bytes).
    pub(crate) async fn one_wrapped(&self, kek_id: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        const SQL: &str = "SELECT media_id, wrapped_dek FROM media_keys WHERE kek_id = $1 LIMIT 1";
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(kek_id).fetch_optional(pool).await)?)
    }

    /// The recorded fingerprint of every key-encryption key used so far.
    pub(crate) async fn key_fingerprints(&self) -> Result<Vec<(String, String)>, StoreError> {
        const SQL: &str = "SELECT kek_id, fingerprint FROM key_fingerprints ORDER BY kek_id";
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await)?)
    }

    /// Records the fingerprint of `kek_id` unless one is recorded already
    /// (another replica may have got there first: callers read back).
    pub(crate) async fn record_fingerprint(
        &self,
        kek_id: &str,
        fingerprint: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO key_fingerprints (kek_id, fingerprint, recorded_at) VALUES ($1, $2, $3) \
                           ON CONFLICT (kek_id) DO NOTHING";
        on_pool!(self, pool => sqlx::query(SQL)
            .bind(kek_id)
            .bind(fingerprint)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The schema versions this build knows (in order) and those the
    /// database has applied (in order; none on a database never migrated).
    pub(crate) async fn schema_versions(&self) -> Result<(Vec<i64>, Vec<i64>), StoreError> {
        const APPLIED: &str = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
        let (migrator, tracked) = match self {
            Metadata::Postgres { pool, .. } => {
                (postgres::migrator(), postgres::migrations_tracked(pool).await?)
            }
            Metadata::Sqlite(pool) => (sqlite::migrator(), sqlite::migrations_tracked(pool).await?),
        };
        let known = migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| m.version)
            .collect();
        let applied = if tracked {
            on_pool!(self, pool => sqlx::query_scalar(APPLIED).fetch_all(pool).await)?
        } else {
            Vec::new()
        };
        Ok((known, applied))
    }

    /// Rewrites the key table so that no page of it keeps a shredded key
    /// (Postgres); `false` if another replica's rewrite is running. Nothing
    /// to do on SQLite, whose freed pages are up to how it is opened.
    pub(crate) async fn rewrite_key_table(
        &self,
        lock_timeout: std::time::Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Metadata::Postgres { pool, .. } => postgres::rewrite_key_table(pool, lock_timeout).await,
            Metadata::Sqlite(_) => Ok(true),
        }
    }
}
