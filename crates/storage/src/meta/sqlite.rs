//! SQLite: the embedded default, one process on one machine.

use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use crate::error::StoreError;

pub(super) async fn connect(url: &str) -> Result<SqlitePool, StoreError> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5));
    let file = options.get_filename();
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Config(format!("database.url: cannot create {}: {e}", dir.display())))?;
    }
    Ok(SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?)
}

pub(super) async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    sqlx::migrate!("../../migrations/sqlite").run(pool).await?;
    Ok(())
}

/// The rows the claim takes, as in Postgres's claim: rows done with
/// uploading by `due_at`, then uploads started before `$3` (the current
/// `reaper.stale_upload_after`'s cut-off) by start.
const DUE_SQL: &str = "SELECT id, blob_key, state FROM (SELECT id, blob_key, state FROM media \
                       WHERE state <> 'uploading' AND due_at <= $1 ORDER BY due_at LIMIT $2) \
                       UNION ALL \
                       SELECT id, blob_key, state FROM (SELECT id, blob_key, state FROM media \
                       WHERE state = 'uploading' AND created_at <= $3 ORDER BY created_at LIMIT $2) \
                       LIMIT $2";

/// SQLite serves one process, whose passes never overlap: select the due
/// rows, then claim and shred them, in one transaction.
pub(super) async fn claim_due(
    pool: &SqlitePool,
    now: i64,
    limit: u32,
    lease_until: i64,
    stale_before: i64,
) -> Result<Vec<crate::reap::Claimed>, StoreError> {
    let mut tx = pool.begin().await?;
    let due: Vec<crate::reap::Claimed> = sqlx::query_as(DUE_SQL)
        .bind(now)
        .bind(i64::from(limit))
        .bind(stale_before)
        .fetch_all(&mut *tx)
        .await?;
    for row in &due {
        sqlx::query(
            "UPDATE media SET state = 'deleting', wrapped_dek = NULL, deleted_at = COALESCE(deleted_at, $2), \
             due_at = $3 WHERE id = $1",
        )
        .bind(&row.id)
        .bind(now)
        .bind(lease_until)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(due)
}

/// SQLite has no array parameters: one statement a row, in one transaction.
pub(super) async fn delete_reaped(pool: &SqlitePool, ids: &[String]) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    for id in ids {
        sqlx::query("DELETE FROM media WHERE id = $1 AND state = 'deleting'")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
