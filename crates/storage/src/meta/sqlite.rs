//! SQLite: the embedded default, one process on one machine.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Connection, SqliteConnection, SqlitePool};

use super::group_commit::GroupCommit;
use super::usage::{QuotaDefaults, RELEASE};
use super::{Intent, NewMedia, ReadyMedia};
use crate::error::StoreError;
use crate::ids::{AppId, MediaId};

pub(super) async fn connect(url: &str) -> Result<SqlitePool, StoreError> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // Deleted content is overwritten with zeros, not merely unlinked: a
        // shredded wrapped key must not stay in the free space of a page.
        .pragma("secure_delete", "ON")
        .busy_timeout(Duration::from_secs(5));
    let file = options.get_filename();
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Config(format!("database.url: cannot create {}: {e}", dir.display())))?;
    }
    Ok(SqlitePoolOptions::new()
        .max_connections(8)
        // A connection to a file does not go stale as a socket does; the
        // test would cost each query a round trip to SQLite's thread.
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?)
}

/// The migrations built into this binary.
pub(super) fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!("../../migrations/sqlite")
}

/// Checkpoints tried before giving up; each waits up to the busy timeout for
/// readers and the writer, then briefly before the next.
const CHECKPOINT_ATTEMPTS: u32 = 3;

/// The truncations of one database's WAL that make shreds final in its
/// files (see `settle`).
#[derive(Default)]
pub(crate) struct WalTruncations {
    /// Checkpoints begun so far. A shred reads it, without waiting, once it
    /// has committed: any checkpoint numbered above what it read began
    /// after its commit, and so reaches its keys.
    begun: AtomicU64,
    /// Held while a checkpoint runs, one at a time (SQLite answers a second
    /// one that starts while another runs "busy" at once, without waiting):
    /// the number of the last checkpoint that truncated the WAL.
    truncated: tokio::sync::Mutex<u64>,
}

impl WalTruncations {
    /// Makes the shreds committed before this call final in the files:
    /// copies the WAL into the database file (whose pages `secure_delete`
    /// has already zeroed) and truncates the WAL to zero bytes, so that the
    /// older page images it held, with the keys just shredded, are gone
    /// from the directory.
    ///
    /// A truncation that began after the caller's commit does that for it
    /// too, so the shreds that wait while one runs share the next: deletes
    /// at once cost two checkpoints, not one each, and take the write turn
    /// from the uploads twice, not once each.
    ///
    /// A reader holding an old snapshot, or a writer, past the busy timeout
    /// on every attempt leaves the WAL as it is: that is logged, and the
    /// next shred, SQLite's own checkpoints or a clean stop (which removes
    /// the WAL) finish the job.
    pub(super) async fn settle(&self, pool: &SqlitePool, writes: &GroupCommit) {
        let committed = self.begun.load(Ordering::SeqCst);
        let mut truncated = self.truncated.lock().await;
        if *truncated > committed {
            return;
        }
        // Between the upload path's batches: a checkpoint waits out an open
        // transaction.
        let _turn = writes.turn().await;
        let number = self.begun.fetch_add(1, Ordering::SeqCst) + 1;
        if truncate_wal(pool).await {
            *truncated = number;
        }
    }
}

/// Checkpoints the WAL into the database file and truncates it; whether it
/// did.
async fn truncate_wal(pool: &SqlitePool) -> bool {
    for attempt in 1..=CHECKPOINT_ATTEMPTS {
        let result: Result<(i64, i64, i64), sqlx::Error> = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(pool)
            .await;
        match result {
            Ok((0, _, _)) => return true,
            Ok(_) if attempt < CHECKPOINT_ATTEMPTS => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(_) => tracing::warn!(
                "WAL checkpoint stayed busy; shredded keys may remain in the WAL until the next checkpoint"
            ),
            Err(error) => {
                tracing::warn!(%error, "WAL checkpoint failed; shredded keys may remain in the WAL until the next checkpoint");
                return false;
            }
        }
    }
    false
}

pub(super) async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    migrator().run(pool).await?;
    Ok(())
}

/// Whether sqlx's bookkeeping table exists (only reads: never creates it).
pub(super) async fn migrations_tracked(pool: &SqlitePool) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(pool)
    .await?)
}

/// The intent row, its wrapped key and the app's reservation, sent as one
/// string of statements: one call to the connection's worker thread, where
/// every write of the group commit queues, instead of one per statement.
/// The rows are inserted only if the conditional reservation just before
/// was granted (`changes()` is the rows the last statement changed). Binds:
/// the reservation's `$1`-`$5`, then the row's.
const INTENT: &str = concat!(
    reserve_sql!(),
    "; INSERT INTO media (id, app_id, state, filename, blob_key, format_version, segment_size, \
     salt, nonce_prefix, created_at, expires_at, due_at, reserved_bytes) \
     SELECT $6, $1, ",
    state_sql!(Uploading),
    ", $7, $8, $9, $10, $11, $12, $13, $14, $15, $2 WHERE changes() = 1; \
     INSERT INTO media_keys (media_id, kek_id, wrapped_dek) SELECT $6, $16, $17 WHERE changes() = 1"
);

/// `INTENT` for `row`, in a savepoint of `conn`'s open transaction (a group
/// commit's batch), so that writing nothing undoes only this write. The
/// savepoint is sqlx's: dropped part way (its caller gone, or a statement
/// failed), it is rolled back before the batch can commit.
pub(super) async fn insert_uploading(
    conn: &mut SqliteConnection,
    row: &NewMedia<'_>,
    quota: QuotaDefaults,
) -> Result<Intent, StoreError> {
    let mut tx = conn.begin().await?;
    let written = bind_reservation!(sqlx::query(INTENT), row.app_id, row.reserved_bytes, 1_i64, quota)
        .bind(row.id)
        .bind(row.filename)
        .bind(row.blob_key)
        .bind(crate::format::VERSION)
        .bind(crate::format::SEGMENT_SIZE as i32)
        .bind(row.salt)
        .bind(row.nonce_prefix)
        .bind(row.created_at)
        .bind(row.expires_at)
        .bind(row.abandon_at)
        .bind(row.kek_id)
        .bind(row.wrapped_dek)
        .execute(&mut *tx)
        .await;
    match written {
        // Nothing was reserved, so nothing was written.
        Ok(done) if done.rows_affected() == 0 => Ok(Intent::NoRoom),
        // The reservation, the row and its key.
        Ok(_) => {
            tx.commit().await?;
            Ok(Intent::Written)
        }
        // Dropping the transaction rolls the reservation back.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() && e.message() == MEDIA_ID_TAKEN => {
            Ok(Intent::IdTaken)
        }
        Err(e) => Err(e.into()),
    }
}

/// SQLite's message for a unique violation of `media`'s primary key (it
/// names no constraint otherwise): that one, and no other, means an intent
/// row's id is taken.
const MEDIA_ID_TAKEN: &str = "UNIQUE constraint failed: media.id";

/// Settlement and completion: the app gives back the unused reservation,
/// then the row turns ready. In a savepoint, as `insert_uploading`, unless
/// there is nothing to settle: one statement then writes all or nothing,
/// and the savepoint's two calls to the worker thread are saved.
pub(super) async fn mark_ready(
    conn: &mut SqliteConnection,
    ready: &ReadyMedia<'_>,
) -> Result<bool, StoreError> {
    if ready.unused_bytes == 0 {
        let done = bind_ready!(sqlx::query(mark_ready_sql!()), ready)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        return Ok(done == 1);
    }
    let mut tx = conn.begin().await?;
    let settled: Option<AppId> = bind_settlement!(
        sqlx::query_scalar(concat!(settle_reservation_sql!(), " RETURNING app_id")),
        ready
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(app_id) = settled {
        sqlx::query(RELEASE)
            .bind(&app_id)
            .bind(ready.unused_bytes)
            .bind(0_i64)
            .execute(&mut *tx)
            .await?;
    }
    let done = bind_ready!(sqlx::query(mark_ready_sql!()), ready)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if done == 0 {
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

/// The rows the claim takes, as in Postgres's claim: rows done with
/// uploading by `due_at`, then uploads whose last progress (or start) came
/// before `$3` (the current `reaper.stale_upload_after`'s cut-off), oldest
/// first.
const DUE_SQL: &str = concat!(
    "SELECT * FROM (SELECT id, blob_key, state FROM media WHERE state <> ",
    state_sql!(Uploading),
    " AND due_at <= $1 ORDER BY due_at LIMIT $2) \
     UNION ALL \
     SELECT * FROM (SELECT id, blob_key, state FROM media WHERE state = ",
    state_sql!(Uploading),
    " AND COALESCE(active_at, created_at) <= $3 ORDER BY COALESCE(active_at, created_at) LIMIT $2) \
     LIMIT $2"
);

/// Rows an earlier pass claimed and did not finish, whose lease has passed.
const UNFINISHED_SQL: &str = "SELECT media_id AS id, blob_key, state FROM reaping \
                              WHERE lease_until <= $1 ORDER BY lease_until LIMIT $2";

/// `$1` as a list: SQLite has no array parameters, so a list goes as one
/// JSON array of strings (see [`json_list`]), read back with `json_each`.
/// One statement for a whole batch, where a statement per row made each row
/// a round trip to the connection's thread while the claim held the write
/// lock.
macro_rules! listed {
    () => {
        "(SELECT value FROM json_each($1))"
    };
}

/// `items` as the list `listed!()` reads.
fn json_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    serde_json::Value::from(items.into_iter().collect::<Vec<_>>()).to_string()
}

/// Shreds the listed media rows: their wrapped keys go.
const SHRED_LISTED: &str = concat!("DELETE FROM media_keys WHERE media_id IN ", listed!());

/// Releases what the listed media rows held of their apps' quotas (rows
/// deleted on request released theirs then).
const RELEASE_LISTED: &str = concat!(
    "UPDATE apps SET used_bytes = used_bytes - held.bytes, used_media = used_media - held.media \
     FROM (SELECT app_id, SUM(reserved_bytes) AS bytes, COUNT(*) AS media FROM media \
           WHERE id IN ",
    listed!(),
    " AND state <> ",
    state_sql!(Deleting),
    " AND reserved_bytes IS NOT NULL GROUP BY app_id) AS held \
     WHERE apps.id = held.app_id"
);

/// Parks the listed media rows in `reaping`, leased until `$2`. A media id
/// is unique in `media` only (see the PostgreSQL claim).
const PARK_LISTED: &str = concat!(
    "INSERT OR IGNORE INTO reaping (media_id, blob_key, state, lease_until) \
     SELECT id, blob_key, state, $2 FROM media WHERE id IN ",
    listed!()
);

const REMOVE_LISTED: &str = concat!("DELETE FROM media WHERE id IN ", listed!());

/// Leases the listed `reaping` rows until `$2`.
const LEASE_LISTED: &str = concat!(
    "UPDATE reaping SET lease_until = $2 WHERE media_id IN ",
    listed!()
);

/// SQLite serves one process, whose passes never overlap: select the due
/// rows, then shred them (delete their keys), release what they held of
/// their apps' quotas and move them from `media` into `reaping`, leased;
/// in what room is left, lease again the rows an earlier pass left
/// unfinished. One transaction.
pub(super) async fn claim_due(
    pool: &SqlitePool,
    now: i64,
    limit: u32,
    lease_until: i64,
    stale_before: i64,
) -> Result<Vec<super::reaping::Claimed>, StoreError> {
    // IMMEDIATE: the transaction reads, then writes. A deferred one would
    // take the write lock only at its first write, and fail at once (no busy
    // wait can help) if another connection wrote since its read began. This
    // process's writers wait for the claim's turn (see `group_commit`);
    // another process's, such as the CLI's, do not.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut claimed: Vec<super::reaping::Claimed> = sqlx::query_as(DUE_SQL)
        .bind(now)
        .bind(i64::from(limit))
        .bind(stale_before)
        .fetch_all(&mut *tx)
        .await?;
    if !claimed.is_empty() {
        let ids = json_list(claimed.iter().map(|row| row.id.as_str()));
        // In this order: each reads the rows the last one deletes.
        sqlx::query(SHRED_LISTED).bind(&ids).execute(&mut *tx).await?;
        sqlx::query(RELEASE_LISTED).bind(&ids).execute(&mut *tx).await?;
        sqlx::query(PARK_LISTED)
            .bind(&ids)
            .bind(lease_until)
            .execute(&mut *tx)
            .await?;
        sqlx::query(REMOVE_LISTED).bind(&ids).execute(&mut *tx).await?;
    }
    let room = i64::from(limit) - claimed.len() as i64;
    if room > 0 {
        let unfinished: Vec<super::reaping::Claimed> = sqlx::query_as(UNFINISHED_SQL)
            .bind(now)
            .bind(room)
            .fetch_all(&mut *tx)
            .await?;
        if !unfinished.is_empty() {
            lease(&mut tx, unfinished.iter().map(|row| row.id.as_str()), lease_until).await?;
            claimed.extend(unfinished);
        }
    }
    tx.commit().await?;
    Ok(claimed)
}

/// Leases the claimed rows `ids` until `until`, in one statement.
async fn lease<'a>(
    conn: &mut SqliteConnection,
    ids: impl IntoIterator<Item = &'a str>,
    until: i64,
) -> Result<(), StoreError> {
    sqlx::query(LEASE_LISTED)
        .bind(json_list(ids))
        .bind(until)
        .execute(conn)
        .await?;
    Ok(())
}

/// Ends the lease of claimed rows at `now`: one statement.
pub(super) async fn set_due(pool: &SqlitePool, ids: &[MediaId], now: i64) -> Result<(), StoreError> {
    lease(&mut *pool.acquire().await?, ids.iter().map(MediaId::as_str), now).await
}

/// Those of `keys` that a row refers to: see `Metadata::referenced_among`.
pub(super) async fn referenced_among(pool: &SqlitePool, keys: &[String]) -> Result<Vec<String>, StoreError> {
    const SQL: &str = concat!(
        "SELECT blob_key FROM media WHERE blob_key IN ",
        listed!(),
        " UNION ALL SELECT blob_key FROM reaping WHERE blob_key IN ",
        listed!()
    );
    Ok(sqlx::query_scalar(SQL)
        .bind(json_list(keys.iter().map(String::as_str)))
        .fetch_all(pool)
        .await?)
}

/// One statement for the whole batch.
pub(super) async fn delete_reaped(pool: &SqlitePool, ids: &[MediaId]) -> Result<(), StoreError> {
    sqlx::query(concat!("DELETE FROM reaping WHERE media_id IN ", listed!()))
        .bind(json_list(ids.iter().map(MediaId::as_str)))
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Shreds that settle while another's checkpoint waits for its turn
    /// share the next checkpoint instead of taking one each, and the WAL is
    /// empty when each returns; a shred committed after that checkpoint
    /// began gets one of its own.
    #[tokio::test]
    async fn shreds_settling_at_once_share_one_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let pool = connect(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let writes = Arc::new(GroupCommit::start(&pool).await.unwrap());
        let truncations = Arc::new(WalTruncations::default());
        let wal = dir.path().join("t.db-wal");
        let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        let write = async || {
            sqlx::query("INSERT INTO t VALUES (randomblob(4096))")
                .execute(&pool)
                .await
                .unwrap();
            assert!(wal_len() > 0);
        };
        sqlx::query("CREATE TABLE t (x BLOB)")
            .execute(&pool)
            .await
            .unwrap();
        write().await;

        // The first settle waits for the turn held here, the others for it.
        let turn = writes.turn().await;
        let settles: Vec<_> = (0..16)
            .map(|_| {
                let (pool, writes, truncations) = (pool.clone(), writes.clone(), truncations.clone());
                tokio::spawn(async move { truncations.settle(&pool, &writes).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(truncations.begun.load(Ordering::SeqCst), 0);
        drop(turn);
        for settle in settles {
            settle.await.unwrap();
            assert_eq!(wal_len(), 0);
        }
        assert_eq!(truncations.begun.load(Ordering::SeqCst), 1);

        write().await;
        truncations.settle(&pool, &writes).await;
        assert_eq!((truncations.begun.load(Ordering::SeqCst), wal_len()), (2, 0));
        writes.close().await;
    }
}
