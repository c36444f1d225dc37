//! Postgres: production metadata, shared by every replica.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::error::StoreError;

pub(super) async fn connect(url: &str) -> Result<PgPool, StoreError> {
    pool(PgConnectOptions::from_str(url)?, 16).await
}

/// A small pool whose commits do not wait for their WAL flush, for writes
/// that a crash may lose without losing anything (intent rows).
pub(super) async fn connect_relaxed(url: &str) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url)?.options([("synchronous_commit", "off")]);
    pool(options, 4).await
}

async fn pool(options: PgConnectOptions, size: u32) -> Result<PgPool, StoreError> {
    Ok(PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?)
}

pub(super) async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut migrator = sqlx::migrate!("../../migrations/postgres");
    // Old and new replicas run side by side during a rolling deploy: an old
    // one must not refuse a database that a newer one already migrated.
    migrator.set_ignore_missing(true);
    migrator.run(pool).await?;
    Ok(())
}

/// Any constant both replicas agree on: the reaper's advisory-lock key.
const REAPER_LOCK_KEY: i64 = 0x6d76_7265_6170; // "mvreap"

/// A transaction holding the reaper lock, or `None` if another pass has it.
/// A transaction-level lock ends with its transaction, so it cannot leak on
/// a pooled connection the way a session lock would.
pub(super) async fn try_reaper_lock(
    pool: &PgPool,
) -> Result<Option<sqlx::Transaction<'static, sqlx::Postgres>>, StoreError> {
    let mut tx = pool.begin().await?;
    let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(REAPER_LOCK_KEY)
        .fetch_one(&mut *tx)
        .await?;
    Ok(held.then_some(tx))
}

/// One statement claims, shreds and leases: `FOR UPDATE SKIP LOCKED` lets
/// replicas claim disjoint rows, and the claim is one range scan of
/// `media_due_at`.
pub(super) async fn claim_due(
    pool: &PgPool,
    now: i64,
    limit: u32,
    lease_until: i64,
) -> Result<Vec<crate::reap::Claimed>, StoreError> {
    const SQL: &str = "WITH due AS ( \
                           SELECT id, state FROM media WHERE due_at <= $1 \
                           ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
                       UPDATE media m SET state = 'deleting', wrapped_dek = NULL, \
                           deleted_at = COALESCE(m.deleted_at, $1), due_at = $3 \
                       FROM due WHERE m.id = due.id \
                       RETURNING m.id, m.blob_key, due.state";
    Ok(sqlx::query_as(SQL)
        .bind(now)
        .bind(i64::from(limit))
        .bind(lease_until)
        .fetch_all(pool)
        .await?)
}

/// One statement for the whole batch.
pub(super) async fn delete_reaped(pool: &PgPool, ids: &[String]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM media WHERE id = ANY($1) AND state = 'deleting'")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}
