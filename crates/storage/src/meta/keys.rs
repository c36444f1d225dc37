//! Wrapped data keys and the key-encryption keys that wrap them: use,
//! rotation, fingerprints, and rewriting the key table.

use super::{Metadata, postgres};
use crate::error::StoreError;
use crate::ids::MediaId;
use crate::keys::WrappedUnder;
use crate::model::Millis;

/// A live data key that `keys rewrap` moves, and when its media expire.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct WrappedRow {
    pub id: MediaId,
    pub kek_id: String,
    pub wrapped_dek: Vec<u8>,
    pub expires_at: Millis,
}

/// A data key re-wrapped, to be written only if its row still holds `old_kek_id`.
pub(crate) struct Rewrapped {
    pub id: MediaId,
    pub old_kek_id: String,
    pub new_kek_id: String,
    pub wrapped_dek: Vec<u8>,
}

impl Metadata {
    /// How many live data keys each key-encryption key wraps. Reads every
    /// entry of the `kek_id` index: for the operator, not for start-up.
    pub(crate) async fn key_use(&self) -> Result<Vec<(String, i64)>, StoreError> {
        const SQL: &str = "SELECT kek_id, COUNT(*) FROM media_keys GROUP BY kek_id ORDER BY kek_id";
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await)?)
    }

    /// The key-encryption keys that wrap live data keys, in order. Each is
    /// found by one step of the `kek_id` index past the one before, so the
    /// cost is a few index lookups per key however many media there are:
    /// start-up and every command check the keys with this.
    pub(crate) async fn keys_in_use(&self) -> Result<Vec<String>, StoreError> {
        const SQL: &str = "WITH RECURSIVE used (kek_id) AS ( \
                               SELECT (SELECT kek_id FROM media_keys ORDER BY kek_id LIMIT 1) \
                               UNION ALL \
                               SELECT (SELECT k.kek_id FROM media_keys k WHERE k.kek_id > used.kek_id \
                                       ORDER BY k.kek_id LIMIT 1) \
                               FROM used WHERE used.kek_id IS NOT NULL) \
                           SELECT kek_id FROM used WHERE kek_id IS NOT NULL";
        Ok(on_pool!(self, pool => sqlx::query_scalar(SQL).fetch_all(pool).await)?)
    }

    /// How many live data keys `kek_id` wraps.
    pub(crate) async fn key_use_of(&self, kek_id: &str) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT COUNT(*) FROM media_keys WHERE kek_id = $1";
        Ok(on_pool!(self, pool => sqlx::query_scalar(SQL).bind(kek_id).fetch_one(pool).await)?)
    }

    /// Up to `limit` live data keys not wrapped as `settled` says they stay,
    /// with ids after `after` in id order, so that a caller can page past
    /// rows it skips.
    pub(crate) async fn wrapped_unsettled(
        &self,
        settled: &WrappedUnder,
        after: &MediaId,
        limit: u32,
    ) -> Result<Vec<WrappedRow>, StoreError> {
        macro_rules! unsettled {
            ($condition:literal) => {
                concat!(
                    "SELECT k.media_id AS id, k.kek_id, k.wrapped_dek, m.expires_at \
                     FROM media_keys k JOIN media m ON m.id = k.media_id WHERE ",
                    $condition,
                    " AND k.media_id > $2 ORDER BY k.media_id LIMIT $3"
                )
            };
        }
        let (sql, value) = match settled {
            WrappedUnder::Key(active) => (unsettled!("k.kek_id <> $1"), active),
            // substr, not LIKE: SQLite's LIKE ignores case, and '_' in a label is a wildcard.
            WrappedUnder::EpochPrefix(prefix) => {
                (unsettled!("substr(k.kek_id, 1, length($1)) <> $1"), prefix)
            }
        };
        Ok(on_pool!(self, pool => sqlx::query_as(sql)
            .bind(value)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)?)
    }

    /// Whether live media — not expired by `now`, or still being uploaded —
    /// have data keys wrapped under `kek_id`. An uploading row counts
    /// whatever its `expires_at`: that is the expiry computed when the
    /// upload began, which chose the key that wraps its data key, and
    /// finishing sets a later one, so a long upload may outrun it and still
    /// need the key.
    pub(crate) async fn live_media_need(&self, kek_id: &str, now: Millis) -> Result<bool, StoreError> {
        const SQL: &str = concat!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM media_keys k JOIN media m ON m.id = k.media_id \
             WHERE k.kek_id = $1 AND (m.state = ",
            state_sql!(Uploading),
            " OR m.expires_at > $2) LIMIT 1) AS needing"
        );
        let (count,): (i64,) = on_pool!(self, pool => sqlx::query_as(SQL)
            .bind(kek_id)
            .bind(now)
            .fetch_one(pool)
            .await)?;
        Ok(count > 0)
    }

    /// Writes re-wrapped data keys in one transaction. Each is written only
    /// if its row still holds the old wrapping, so a delete or another
    /// rotation that got there first is never undone. Returns how many were
    /// written.
    pub(crate) async fn replace_wrapped(&self, rows: &[Rewrapped]) -> Result<u64, StoreError> {
        const SQL: &str =
            "UPDATE media_keys SET kek_id = $3, wrapped_dek = $4 WHERE media_id = $1 AND kek_id = $2";
        Ok(on_write_pool!(self, pool => {
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

    /// One live wrapped data key of `kek_id`, if any, as (media id, bytes).
    pub(crate) async fn one_wrapped(&self, kek_id: &str) -> Result<Option<(MediaId, Vec<u8>)>, StoreError> {
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
        on_write_pool!(self, pool => sqlx::query(SQL)
            .bind(kek_id)
            .bind(fingerprint)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
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
            Metadata::Sqlite { .. } => Ok(true),
        }
    }
}
