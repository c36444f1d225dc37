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

/// The claim: one statement claims, shreds and leases. `FOR UPDATE SKIP
/// LOCKED` lets replicas claim disjoint rows. Rows that are done with
/// uploading come first, by `due_at` (a range scan of `media_due_at`); then
/// uploads started before `$4`, the cut-off of the current
/// `reaper.stale_upload_after`, by start (a range scan of the partial index
/// `media_uploading_created_at`), so a lowered setting applies to uploads
/// already running. Parameters: now, limit, lease end, stale cut-off.
pub(crate) const CLAIM_SQL: &str = "WITH settled AS ( \
                           SELECT id, state FROM media WHERE state <> 'uploading' AND due_at <= $1 \
                           ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED), \
                       stale AS ( \
                           SELECT id, state FROM media WHERE state = 'uploading' AND created_at <= $4 \
                           ORDER BY created_at LIMIT $2 - (SELECT COUNT(*) FROM settled) \
                           FOR UPDATE SKIP LOCKED), \
                       due AS (SELECT id, state FROM settled UNION ALL SELECT id, state FROM stale) \
                       UPDATE media m SET state = 'deleting', wrapped_dek = NULL, \
                           deleted_at = COALESCE(m.deleted_at, $1), due_at = $3 \
                       FROM due WHERE m.id = due.id \
                       RETURNING m.id, m.blob_key, due.state";

pub(super) async fn claim_due(
    pool: &PgPool,
    now: i64,
    limit: u32,
    lease_until: i64,
    stale_before: i64,
) -> Result<Vec<crate::reap::Claimed>, StoreError> {
    Ok(sqlx::query_as(CLAIM_SQL)
        .bind(now)
        .bind(i64::from(limit))
        .bind(lease_until)
        .bind(stale_before)
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

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;

    /// The claim the reaper sends is served by range scans of
    /// `media_due_at` and `media_uploading_created_at`, never a sequential
    /// scan of `media`. EXPLAIN runs on the production statement itself, so
    /// a change to it is checked too. (Sequential scans are off because the
    /// table is empty, where the planner would rightly prefer one.)
    #[tokio::test]
    async fn the_claim_is_served_by_the_due_and_uploading_indexes() {
        let url = std::env::var("MEDIAVAULT_TEST_DATABASE_URL")
            .expect("MEDIAVAULT_TEST_DATABASE_URL is not set: run the tests with `make test`");
        let name = format!("mv_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let server = url.rsplit_once('/').map_or(url.as_str(), |(server, _)| server);
        let pool = connect(&format!("{server}/{name}")).await.unwrap();
        migrate(&pool).await.unwrap();
        let mut db = pool.acquire().await.unwrap();
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut *db)
            .await
            .unwrap();
        let plan: Result<Vec<String>, _> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {CLAIM_SQL}")))
                .bind(1_i64)
                .bind(500_i64)
                .bind(2_i64)
                .bind(0_i64)
                .fetch_all(&mut *db)
                .await;
        drop(db);
        pool.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
            .execute(&mut admin)
            .await
            .unwrap();
        let plan = plan.unwrap().join("\n");
        assert!(plan.contains("media_due_at"), "{plan}");
        assert!(plan.contains("media_uploading_created_at"), "{plan}");
        assert!(!plan.contains("Seq Scan on media"), "{plan}");
    }
}
