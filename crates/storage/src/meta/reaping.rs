//! What the reaper asks of the store: its lock, claiming due rows (and
//! shredding them), and removing what it has reaped.

use std::collections::HashSet;

use super::{MediaState, Metadata, postgres, sqlite};
use crate::error::StoreError;
use crate::ids::MediaId;
use crate::model::Millis;

/// A row the reaper has claimed (and shredded).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Claimed {
    pub id: MediaId,
    pub blob_key: String,
    /// The state before the claim: ready (expired), deleting (deleted on
    /// request), uploading (abandoned).
    pub state: MediaState,
}

/// Held while a reaper pass runs, by one replica at a time; released when
/// dropped. Opaque: what holds it depends on the store.
pub struct ReaperLock {
    _held: LockInner,
}

enum LockInner {
    /// A transaction-level advisory lock: it ends with its transaction
    /// (dropped, or its connection lost), so it cannot leak on a pooled
    /// connection.
    Postgres {
        _held: sqlx::Transaction<'static, sqlx::Postgres>,
    },
    /// SQLite is one process, whose passes never overlap: always free.
    Sqlite,
}

impl Metadata {
    /// The reaper's lock, or `None` while another replica's pass holds it.
    pub(crate) async fn try_reaper_lock(&self) -> Result<Option<ReaperLock>, StoreError> {
        Ok(match self {
            Metadata::Postgres { pool, .. } => postgres::try_reaper_lock(pool).await?.map(|tx| ReaperLock {
                _held: LockInner::Postgres { _held: tx },
            }),
            Metadata::Sqlite { .. } => Some(ReaperLock {
                _held: LockInner::Sqlite,
            }),
        })
    }

    /// Claims up to `limit` rows due at `now` (uploads count as due once
    /// started before `stale_before`), shreds them and moves them out of
    /// `media` into `reaping`, leased until `lease_until`; with what room
    /// is left, leases again the rows an earlier pass left unfinished.
    /// Returns them with the state they had when first claimed.
    pub(crate) async fn claim_due(
        &self,
        now: Millis,
        limit: u32,
        lease_until: Millis,
        stale_before: Millis,
    ) -> Result<Vec<Claimed>, StoreError> {
        match self {
            Metadata::Postgres { pool, .. } => {
                postgres::claim_due(pool, now, limit, lease_until, stale_before).await
            }
            Metadata::Sqlite { pool, writes, .. } => {
                let _turn = writes.turn().await;
                sqlite::claim_due(pool, now, limit, lease_until, stale_before).await
            }
        }
    }

    /// Removes claimed rows whose blobs are gone.
    pub(crate) async fn delete_reaped(&self, ids: &[MediaId]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        match self {
            Metadata::Postgres { pool, .. } => postgres::delete_reaped(pool, ids).await,
            Metadata::Sqlite { pool, writes, .. } => {
                let _turn = writes.turn().await;
                sqlite::delete_reaped(pool, ids).await
            }
        }
    }

    /// Ends the lease of claimed rows at `now` (their blob delete failed),
    /// so that the next pass takes them up again.
    pub(crate) async fn set_due(&self, ids: &[MediaId], now: Millis) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        match self {
            Metadata::Postgres { pool, .. } => postgres::set_due(pool, ids, now).await,
            Metadata::Sqlite { pool, writes, .. } => {
                let _turn = writes.turn().await;
                sqlite::set_due(pool, ids, now).await
            }
        }
    }

    /// Removes deleted apps whose media the reaper has all removed.
    pub(crate) async fn delete_emptied_apps(&self) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM apps WHERE deleted_at IS NOT NULL \
                           AND NOT EXISTS (SELECT 1 FROM media WHERE media.app_id = apps.id)";
        Ok(on_write_pool!(self, pool => sqlx::query(SQL).execute(pool).await.map(|r| r.rows_affected()))?)
    }

    /// Those of `keys` that a row refers to, whatever its state, claimed
    /// rows included: one statement, through the indexes of `blob_key`.
    pub(crate) async fn referenced_among(&self, keys: &[String]) -> Result<HashSet<String>, StoreError> {
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let found = match self {
            Metadata::Postgres { pool, .. } => postgres::referenced_among(pool, keys).await?,
            Metadata::Sqlite { pool, .. } => sqlite::referenced_among(pool, keys).await?,
        };
        Ok(found.into_iter().collect())
    }

    /// Every blob key a row refers to, whatever its state, claimed rows
    /// included.
    pub(crate) async fn blob_keys(&self) -> Result<Vec<String>, StoreError> {
        const SQL: &str =
            "SELECT blob_key FROM media UNION ALL SELECT blob_key FROM reaping ORDER BY blob_key";
        Ok(on_pool!(self, pool => sqlx::query_scalar(SQL).fetch_all(pool).await)?)
    }

    /// The blob keys of uploads in progress: few, in the partial index
    /// `media_uploading_active`.
    pub(crate) async fn uploading_blob_keys(&self) -> Result<HashSet<String>, StoreError> {
        const SQL: &str = concat!("SELECT blob_key FROM media WHERE state = ", state_sql!(Uploading));
        let keys: Vec<String> = on_pool!(self, pool => sqlx::query_scalar(SQL).fetch_all(pool).await)?;
        Ok(keys.into_iter().collect())
    }
}
