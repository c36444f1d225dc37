//! Postgres: production metadata, shared by every replica.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::usage::QuotaDefaults;
use super::{Intent, NewMedia, ReadyMedia};
use crate::error::StoreError;
use crate::ids::MediaId;

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

/// The migrations built into this binary.
pub(super) fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!("../../migrations/postgres")
}

pub(super) async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut migrator = migrator();
    // Old and new replicas run side by side during a rolling deploy: an old
    // one must not refuse a database that a newer one already migrated.
    migrator.set_ignore_missing(true);
    migrator.run(pool).await?;
    Ok(())
}

/// Whether sqlx's bookkeeping table exists (only reads: never creates it).
pub(super) async fn migrations_tracked(pool: &PgPool) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?,
    )
}

/// The intent row, its wrapped key and the app's reservation, as one
/// statement: the conditional reservation (`reserve_sql!`, binds 1–5)
/// yields the app's id only if it has room, and the rows are written from
/// it, so a refusal writes nothing.
const INSERT_UPLOADING_SQL: &str = concat!(
    "WITH reserved AS (",
    reserve_sql!(),
    " RETURNING id), \
     intent AS (INSERT INTO media (id, app_id, state, filename, blob_key, format_version, segment_size, \
         salt, nonce_prefix, created_at, expires_at, due_at, reserved_bytes) \
         SELECT $6, id, ",
    state_sql!(Uploading),
    ", $7, $8, $9, $10, $11, $12, $13, $14, $15, $2 FROM reserved RETURNING id) \
     INSERT INTO media_keys (media_id, kek_id, wrapped_dek) SELECT id, $16, $17 FROM intent"
);

pub(super) async fn insert_uploading(
    relaxed: &PgPool,
    row: &NewMedia<'_>,
    quota: QuotaDefaults,
) -> Result<Intent, StoreError> {
    let written = bind_reservation!(
        sqlx::query(INSERT_UPLOADING_SQL),
        row.app_id,
        row.reserved_bytes,
        1_i64,
        quota
    )
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
    .execute(relaxed)
    .await;
    match written {
        Ok(done) if done.rows_affected() == 1 => Ok(Intent::Written),
        Ok(_) => Ok(Intent::NoRoom),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() && e.constraint() == Some(MEDIA_PKEY) => {
            Ok(Intent::IdTaken)
        }
        Err(e) => Err(e.into()),
    }
}

/// The constraint of `media`'s primary key, as Postgres names it: a unique
/// violation of it, and of no other, means an intent row's id is taken.
const MEDIA_PKEY: &str = "media_pkey";

/// Completion and its settlement as one statement: the row turns ready
/// (locking it), then the app gives back the unused reservation (`$6`).
const MARK_READY_SQL: &str = concat!(
    "WITH ready AS (",
    mark_ready_sql!(),
    " RETURNING app_id) \
     UPDATE apps SET used_bytes = used_bytes - $6 FROM ready WHERE apps.id = ready.app_id"
);

pub(super) async fn mark_ready(pool: &PgPool, ready: &ReadyMedia<'_>) -> Result<bool, StoreError> {
    let done = sqlx::query(MARK_READY_SQL)
        .bind(ready.id)
        .bind(ready.mime_type)
        .bind(ready.size_bytes)
        .bind(ready.sha256)
        .bind(ready.expires_at)
        .bind(ready.unused_bytes)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(done == 1)
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

/// The claim: one statement claims, shreds (deletes the claimed rows' keys),
/// releases what the claimed rows held of their apps' quotas (rows that
/// were ready or uploading; rows deleted on request released theirs then)
/// and leases. `FOR UPDATE SKIP LOCKED` lets replicas claim disjoint rows. Rows that are done with
/// uploading come first, by `due_at` (a range scan of `media_due_at`); then
/// uploads started before `$4`, the cut-off of the current
/// `reaper.stale_upload_after`, by start (a range scan of the partial index
/// `media_uploading_created_at`), so a lowered setting applies to uploads
/// already running. Parameters: now, lease end, limit, stale cut-off.
pub(crate) const CLAIM_SQL: &str = concat!(
    "WITH settled AS ( \
         SELECT id, state, app_id, reserved_bytes FROM media WHERE state <> ",
    state_sql!(Uploading),
    " AND due_at <= $1 ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED), \
     stale AS ( \
         SELECT id, state, app_id, reserved_bytes FROM media WHERE state = ",
    state_sql!(Uploading),
    " AND created_at <= $4 ORDER BY created_at LIMIT $3 - (SELECT COUNT(*) FROM settled) \
         FOR UPDATE SKIP LOCKED), \
     due AS (SELECT * FROM settled UNION ALL SELECT * FROM stale), \
     shredded AS (DELETE FROM media_keys k USING due WHERE k.media_id = due.id), \
     released AS (UPDATE apps SET used_bytes = apps.used_bytes - held.bytes, used_media = apps.used_media - held.media \
         FROM (SELECT app_id, CAST(SUM(reserved_bytes) AS BIGINT) AS bytes, COUNT(*) AS media FROM due \
               WHERE state <> ",
    state_sql!(Deleting),
    " AND reserved_bytes IS NOT NULL GROUP BY app_id) held \
         WHERE apps.id = held.app_id) ",
    shred_media!("FROM due WHERE media.id = due.id RETURNING media.id, media.blob_key, due.state")
);

pub(super) async fn claim_due(
    pool: &PgPool,
    now: i64,
    limit: u32,
    lease_until: i64,
    stale_before: i64,
) -> Result<Vec<super::reaping::Claimed>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::raw_sql(ONE_ROW_AT_A_TIME).execute(&mut *tx).await?;
    let claimed = sqlx::query_as(CLAIM_SQL)
        .bind(now)
        .bind(lease_until)
        .bind(i64::from(limit))
        .bind(stale_before)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(claimed)
}

/// Plans the claim's joins as nested loops, each claimed row looked up on
/// its own. The key table is split into hash partitions, and the planner
/// prices a join into it as a lookup in every partition per claimed row
/// (it does not count that each lookup is pruned to one partition when
/// run), so from about a million media on it chose instead to hash the
/// whole key table for every batch: 680 ms a batch of 500 at a million
/// media, against 6 ms with a lookup per row. The setting ends with the
/// transaction.
const ONE_ROW_AT_A_TIME: &str = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off";

/// One statement for the whole batch.
pub(super) async fn delete_reaped(pool: &PgPool, ids: &[MediaId]) -> Result<(), StoreError> {
    const SQL: &str = concat!(
        "DELETE FROM media WHERE id = ANY($1) AND state = ",
        state_sql!(Deleting)
    );
    sqlx::query(SQL).bind(ids).execute(pool).await?;
    Ok(())
}

/// Any constant replicas agree on: the key-table rewrite's advisory-lock key.
const REWRITE_LOCK_KEY: i64 = 0x6d76_6b65_7973; // "mvkeys"

/// `VACUUM FULL media_keys`: writes the live rows to a new file and drops
/// the old one, dead tuples (shredded keys) and all. The table is split into
/// hash partitions, which VACUUM rewrites one after another, each in a
/// transaction of its own: it holds an exclusive lock on one partition at a
/// time while it copies it (reads of media in it wait that long), and gives
/// up after `lock_timeout` if it cannot get a lock, so that readers never
/// queue behind a waiting rewrite for longer. One replica at a time;
/// `false` if another holds the turn.
pub(super) async fn rewrite_key_table(pool: &PgPool, lock_timeout: Duration) -> Result<bool, StoreError> {
    let mut turn = pool.begin().await?;
    let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(REWRITE_LOCK_KEY)
        .fetch_one(&mut *turn)
        .await?;
    if !held {
        return Ok(false);
    }
    // VACUUM cannot run inside a transaction: a connection of its own, with
    // a session setting that must not reach the pool, so it closes after.
    let mut connection = pool.acquire().await?;
    connection.close_on_drop();
    sqlx::query("SELECT set_config('lock_timeout', $1, false)")
        .bind(format!("{}ms", lock_timeout.as_millis().max(1)))
        .execute(&mut *connection)
        .await?;
    sqlx::raw_sql("VACUUM FULL media_keys")
        .execute(&mut *connection)
        .await?;
    turn.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{drop_postgres_database, fresh_postgres_database};

    /// The claim the reaper sends is served by range scans of
    /// `media_due_at` and `media_uploading_created_at`, never a sequential
    /// scan of `media`. EXPLAIN runs on the production statement itself, so
    /// a change to it is checked too. (Sequential scans are off because the
    /// table is empty, where the planner would rightly prefer one.)
    #[tokio::test]
    async fn the_claim_is_served_by_the_due_and_uploading_indexes() {
        let (url, name) = fresh_postgres_database().await;
        let pool = connect(&url).await.unwrap();
        migrate(&pool).await.unwrap();
        let mut db = pool.acquire().await.unwrap();
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut *db)
            .await
            .unwrap();
        let plan: Result<Vec<String>, _> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {CLAIM_SQL}")))
                .bind(1_i64)
                .bind(2_i64)
                .bind(500_i64)
                .bind(0_i64)
                .fetch_all(&mut *db)
                .await;
        drop(db);
        pool.close().await;
        drop_postgres_database(&name).await;
        let plan = plan.unwrap().join("\n");
        assert!(plan.contains("media_due_at"), "{plan}");
        assert!(plan.contains("media_uploading_created_at"), "{plan}");
        assert!(!plan.contains("Seq Scan on media"), "{plan}");
    }

    /// The claim deletes the claimed rows' keys one lookup each, in the
    /// partition the id hashes to, however many rows it claims: not by
    /// hashing the whole key table, which the planner prefers for a batch
    /// that is large against the table (here 20,000 of 20,000 media, as
    /// 500 are against a million). EXPLAIN runs on the production
    /// statement, with the settings the claim runs under; the same
    /// statement without them is hashed, which shows the case is the one
    /// that matters.
    #[tokio::test]
    async fn the_claim_looks_up_each_key_in_its_partition() {
        const FILL: &str = "INSERT INTO apps (id, name, capi, retention_seconds, max_file_bytes, created_at) \
                VALUES ('app', 'app', true, 60, 1000, 0); \
            INSERT INTO media (id, app_id, state, blob_key, format_version, segment_size, salt, \
                               nonce_prefix, created_at, expires_at, due_at, reserved_bytes) \
                SELECT i::text, 'app', 'ready', 'media/' || i, 1, 65536, '\\x00', '\\x00', 0, 1, 1, 1 \
                FROM generate_series(1, 20000) i; \
            INSERT INTO media_keys (media_id, kek_id, wrapped_dek) \
                SELECT i::text, 'k1', '\\x00' FROM generate_series(1, 20000) i; \
            ANALYZE";
        let (url, name) = fresh_postgres_database().await;
        let pool = connect(&url).await.unwrap();
        migrate(&pool).await.unwrap();
        sqlx::raw_sql(FILL).execute(&pool).await.unwrap();
        let explain = async |settings: Option<&'static str>| -> String {
            let mut tx = pool.begin().await.unwrap();
            if let Some(settings) = settings {
                sqlx::raw_sql(settings).execute(&mut *tx).await.unwrap();
            }
            let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {CLAIM_SQL}")))
                .bind(2_i64)
                .bind(3_i64)
                .bind(20_000_i64)
                .bind(0_i64)
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            plan.join("\n")
        };
        let claimed = explain(Some(ONE_ROW_AT_A_TIME)).await;
        let unsettled = explain(None).await;
        pool.close().await;
        drop_postgres_database(&name).await;
        assert!(!claimed.contains("Hash Join"), "{claimed}");
        assert!(!claimed.contains("Merge Join"), "{claimed}");
        assert!(!claimed.contains("Seq Scan on media_keys"), "{claimed}");
        assert!(
            claimed.contains("Index Scan using media_keys_00_pkey"),
            "{claimed}"
        );
        assert!(unsettled.contains("Seq Scan on media_keys_00"), "{unsettled}");
    }
}
