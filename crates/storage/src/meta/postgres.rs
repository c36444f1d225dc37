//! Postgres: production metadata, shared by every replica.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

use super::usage::QuotaDefaults;
use super::{Intent, NewMedia, ReadyMedia};
use crate::error::StoreError;
use crate::ids::MediaId;

pub(super) async fn connect(url: &str) -> Result<PgPool, StoreError> {
    pool(PgConnectOptions::from_str(url)?, 16).await
}

/// A small pool whose commits do not wait for their WAL flush, for writes
/// that a crash may lose without losing anything (intent rows, reservations
/// and their settlements).
pub(super) async fn connect_relaxed(url: &str) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url)?.options([("synchronous_commit", "off")]);
    pool(options, 4).await
}

/// A connection idle for longer than this is tested before it is used.
const TEST_AFTER_IDLING: Duration = Duration::from_secs(1);

async fn pool(options: PgConnectOptions, size: u32) -> Result<PgPool, StoreError> {
    Ok(PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
        // sqlx would test every connection before handing it out: a round
        // trip to PostgreSQL before each statement, two on every upload's
        // path. What the test catches, a connection the server or the
        // network dropped, happens to connections that sit idle (a restart
        // of PostgreSQL takes longer than `TEST_AFTER_IDLING`), so only
        // those are tested; one that fails is closed and another taken.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= TEST_AFTER_IDLING {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
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

/// An upload's settlement as one statement (binds: id, size): its row's
/// reservation falls to its size, and the app gets back what the row held
/// over that. What the row holds is read, not taken from the upload: a
/// reservation committed without waiting for its flush may have been lost
/// in a crash the upload lived through, and then the row holds less than
/// the upload believes, or less than its size. The shortfall is charged, so
/// usage stays the sum of the rows' reservations and no stored byte goes
/// uncounted. (Settling only a row that held what the upload believed
/// left such a file counted short for its whole life.)
const SETTLE_RESERVATION_SQL: &str = concat!(
    "WITH held AS (SELECT id, app_id, reserved_bytes FROM media WHERE id = $1 AND state = ",
    state_sql!(Uploading),
    " FOR UPDATE), \
     settled AS (UPDATE media SET reserved_bytes = $2 FROM held WHERE media.id = held.id \
     RETURNING held.app_id, held.reserved_bytes - $2 AS back) \
     UPDATE apps SET used_bytes = used_bytes - settled.back FROM settled WHERE apps.id = settled.app_id"
);

/// Settles the upload's reservation on the `relaxed` pool, then marks the
/// row ready on the durable one. Two transactions, so that no upload holds
/// its app's row locked while its commit waits for the WAL flush: in one,
/// every upload of an app queued on that row behind the one before it,
/// flush after flush. The settlement may be lost in a crash with nothing
/// lost (the row keeps its whole reservation, and the app's usage counts
/// it, until the row goes), and the ready-marking's flush makes it durable
/// first.
pub(super) async fn mark_ready(
    pool: &PgPool,
    relaxed: &PgPool,
    ready: &ReadyMedia<'_>,
) -> Result<bool, StoreError> {
    if ready.unused_bytes != 0 {
        settle_reservation(relaxed, ready).await?;
    }
    let done = bind_ready!(sqlx::query(mark_ready_sql!()), ready)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(done == 1)
}

/// `SETTLE_RESERVATION_SQL` for `ready`, committed without waiting for its flush.
async fn settle_reservation(relaxed: &PgPool, ready: &ReadyMedia<'_>) -> Result<(), StoreError> {
    sqlx::query(SETTLE_RESERVATION_SQL)
        .bind(ready.id)
        .bind(ready.size_bytes)
        .execute(relaxed)
        .await?;
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

/// The claim: one statement claims, shreds (deletes the claimed rows' keys),
/// releases what the claimed rows held of their apps' quotas (rows that
/// were ready or uploading; rows deleted on request released theirs then)
/// and moves them out of `media` into `reaping`, leased until `$2`.
/// `FOR UPDATE SKIP LOCKED` lets replicas claim disjoint rows. Rows that
/// are done with uploading come first, by `due_at` (a range scan of
/// `media_due_at`); then uploads whose last progress (`active_at`, or their
/// start) came before `$4`, the cut-off of the current
/// `reaper.stale_upload_after`, oldest first (a range scan of the partial
/// index `media_uploading_active`), so a lowered setting applies to uploads
/// already running; then, in what room is left, rows an earlier
/// pass claimed and did not finish, whose lease has passed (they are
/// leased again). Parameters: now, lease end, limit, stale cut-off.
///
/// A media id is unique in `media` only: should an id come back into use
/// while its former row still waits in `reaping`, the new row is not
/// parked; its blob is deleted with the batch all the same, or, failing
/// that, by the orphan sweep.
pub(crate) const CLAIM_SQL: &str = concat!(
    "WITH settled AS ( \
         SELECT id, state, app_id, reserved_bytes FROM media WHERE state <> ",
    state_sql!(Uploading),
    " AND due_at <= $1 ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED), \
     stale AS ( \
         SELECT id, state, app_id, reserved_bytes FROM media WHERE state = ",
    state_sql!(Uploading),
    " AND COALESCE(active_at, created_at) <= $4 ORDER BY COALESCE(active_at, created_at) \
         LIMIT $3 - (SELECT COUNT(*) FROM settled) \
         FOR UPDATE SKIP LOCKED), \
     due AS (SELECT * FROM settled UNION ALL SELECT * FROM stale), \
     unfinished AS ( \
         SELECT media_id FROM reaping WHERE lease_until <= $1 ORDER BY lease_until \
         LIMIT $3 - (SELECT COUNT(*) FROM due) FOR UPDATE SKIP LOCKED), \
     shredded AS (DELETE FROM media_keys k USING due WHERE k.media_id = due.id), \
     released AS (UPDATE apps SET used_bytes = apps.used_bytes - held.bytes, used_media = apps.used_media - held.media \
         FROM (SELECT app_id, CAST(SUM(reserved_bytes) AS BIGINT) AS bytes, COUNT(*) AS media FROM due \
               WHERE state <> ",
    state_sql!(Deleting),
    " AND reserved_bytes IS NOT NULL GROUP BY app_id) held \
         WHERE apps.id = held.app_id), \
     moved AS (DELETE FROM media USING due WHERE media.id = due.id \
         RETURNING media.id, media.blob_key, due.state), \
     parked AS (INSERT INTO reaping (media_id, blob_key, state, lease_until) \
         SELECT id, blob_key, state, $2 FROM moved ON CONFLICT (media_id) DO NOTHING), \
     leased AS (UPDATE reaping SET lease_until = $2 FROM unfinished \
         WHERE reaping.media_id = unfinished.media_id \
         RETURNING reaping.media_id AS id, reaping.blob_key, reaping.state) \
     SELECT id, blob_key, state FROM moved UNION ALL SELECT id, blob_key, state FROM leased"
);

pub(super) async fn claim_due(
    pool: &PgPool,
    now: i64,
    limit: u32,
    lease_until: i64,
    stale_before: i64,
) -> Result<Vec<super::reaping::Claimed>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::raw_sql(ROW_BY_ROW_PLAN).execute(&mut *tx).await?;
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

/// Plans a transaction's joins as nested loops, each row looked up on its
/// own, and runs them without JIT compilation: for the claim, and for an
/// app's deletion, whose statements join a set of media rows to the key
/// table. The key table is split into hash partitions, and the planner
/// prices a join into it as a lookup in every partition per row (it does
/// not count that each lookup is pruned to one partition when run):
/// - for a set of rows that is not small against the table it chose to
///   hash the whole key table instead: 680 ms a claim of 500 at a million
///   media, against 6 ms with a lookup per row; 6.3-7.1 s to delete an app
///   of 10,000 media among 10 million, against 1.8-3.5 s;
/// - at 10 million media the same overpricing puts even the nested loop
///   past `jit_above_cost`, and compiling the statement then took 80 ms
///   of a claim's 120 (21 ms without).
///
/// The settings end with the transaction.
pub(super) const ROW_BY_ROW_PLAN: &str =
    "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL jit = off";

/// One statement for the whole batch.
pub(super) async fn delete_reaped(pool: &PgPool, ids: &[MediaId]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM reaping WHERE media_id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}

/// Those of `keys` that a row refers to: see `Metadata::referenced_among`.
pub(super) async fn referenced_among(pool: &PgPool, keys: &[String]) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT blob_key FROM media WHERE blob_key = ANY($1) \
         UNION ALL SELECT blob_key FROM reaping WHERE blob_key = ANY($1)",
    )
    .bind(keys)
    .fetch_all(pool)
    .await?)
}

/// Ends the lease of claimed rows at `now`: one statement.
pub(super) async fn set_due(pool: &PgPool, ids: &[MediaId], now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE reaping SET lease_until = $2 WHERE media_id = ANY($1)")
        .bind(ids)
        .bind(now)
        .execute(pool)
        .await?;
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
    use sqlx::Arguments;
    use sqlx::postgres::PgArguments;

    use super::*;
    use crate::ids::AppId;
    use crate::meta::Metadata;
    use crate::testing::{drop_postgres_database, fresh_postgres_database};

    /// A connection that PostgreSQL dropped while it sat idle in the pool
    /// (a restart, an idle timeout) is found out before it is handed out:
    /// the next statement runs on a new one. Without the test of idle
    /// connections it fails.
    #[tokio::test]
    async fn a_connection_dropped_while_idle_is_replaced_before_use() {
        let (url, name) = fresh_postgres_database().await;
        let pool = connect(&url).await.unwrap();
        let first: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
        tokio::time::sleep(TEST_AFTER_IDLING + Duration::from_millis(100)).await;
        let mut admin = sqlx::PgConnection::connect(&crate::testing::server_url())
            .await
            .unwrap();
        let dropped: i64 = sqlx::query_scalar(
            // Waits (up to 5 s) until each has exited.
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) \
             FROM pg_stat_activity WHERE datname = $1",
        )
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert!(dropped >= 1, "the pool's idle connection was dropped");
        let second: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .expect("a statement after the idle connection was dropped");
        assert_ne!(first, second, "a new connection serves it");
        pool.close().await;
        drop_postgres_database(&name).await;
    }

    /// The claim the reaper sends is served by range scans of
    /// `media_due_at` and `media_uploading_active`, never a sequential
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
        assert!(plan.contains("media_uploading_active"), "{plan}");
        assert!(!plan.contains("Seq Scan on media"), "{plan}");
    }

    /// An app holding one upload in progress, `m`, which has reserved 100
    /// bytes; what its completion at 60 bytes sends.
    const ONE_UPLOAD: &str = "INSERT INTO apps (id, name, capi, retention_seconds, max_file_bytes, created_at, \
                                used_bytes, used_media) VALUES ('app', 'app', true, 60, 1000, 0, 100, 1); \
        INSERT INTO media (id, app_id, state, blob_key, format_version, segment_size, salt, \
                           nonce_prefix, created_at, expires_at, due_at, reserved_bytes) \
            VALUES ('m', 'app', 'uploading', 'media/m', 1, 65536, '\\x00', '\\x00', 0, 1, 1, 100)";

    fn completion(id: &MediaId, unused_bytes: i64) -> ReadyMedia<'_> {
        ReadyMedia {
            id,
            mime_type: "text/plain",
            size_bytes: 60,
            sha256: "00",
            expires_at: 1_000,
            unused_bytes,
        }
    }

    /// The app's usage, and the sum of its rows' reservations.
    async fn usage(pool: &PgPool) -> (i64, i64) {
        sqlx::query_as(
            "SELECT used_bytes, (SELECT CAST(COALESCE(SUM(reserved_bytes), 0) AS BIGINT) FROM media \
             WHERE app_id = 'app' AND state <> 'deleting') FROM apps WHERE id = 'app'",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    }

    /// What the app `app` has used of its quota: bytes, media.
    async fn app_used(pool: &PgPool) -> (i64, i64) {
        sqlx::query_as("SELECT used_bytes, used_media FROM apps WHERE id = 'app'")
            .fetch_one(pool)
            .await
            .unwrap()
    }

    /// A fresh database (its name), its two pools, and `ONE_UPLOAD` (its id).
    async fn one_upload() -> (String, PgPool, PgPool, MediaId) {
        let (url, name) = fresh_postgres_database().await;
        let pool = connect(&url).await.unwrap();
        let relaxed = connect_relaxed(&url).await.unwrap();
        migrate(&pool).await.unwrap();
        sqlx::raw_sql(ONE_UPLOAD).execute(&pool).await.unwrap();
        (name, pool, relaxed, MediaId::new("m"))
    }

    /// `one_upload`, its reservation settled at 60 of its 100 bytes.
    async fn one_settled_upload() -> (String, PgPool, PgPool, MediaId) {
        let (name, pool, relaxed, id) = one_upload().await;
        settle_reservation(&relaxed, &completion(&id, 40)).await.unwrap();
        (name, pool, relaxed, id)
    }

    /// Once its reservation is settled, an upload turns ready without
    /// touching its app's row, so it does not wait while another upload of
    /// the same app holds that row until its commit has flushed (every
    /// upload of an app used to queue there, flush after flush).
    #[tokio::test]
    async fn an_upload_turns_ready_while_another_of_its_app_holds_the_app() {
        let (name, pool, relaxed, id) = one_settled_upload().await;

        // As another upload's reservation does until it commits.
        let mut other = pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM apps WHERE id = 'app' FOR NO KEY UPDATE")
            .execute(&mut *other)
            .await
            .unwrap();
        let ready = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            mark_ready(&pool, &relaxed, &completion(&id, 0)),
        )
        .await;
        other.rollback().await.unwrap();
        let after = usage(&pool).await;
        pool.close().await;
        relaxed.close().await;
        drop_postgres_database(&name).await;
        assert!(
            ready
                .expect("the ready-marking waited for the app's row")
                .unwrap(),
            "the upload did not turn ready"
        );
        assert_eq!(after, (60, 60));
    }

    /// An upload whose intent commits while its app's deletion shreds
    /// (here, while the shred waits for a row another transaction holds) and
    /// which then turns ready, is shredded with the app: no row of it is left
    /// readable or with its key, and its usage is given back. Before, the
    /// shred's snapshot missed it: a ready medium of a deleted app, kept for
    /// its whole retention.
    #[tokio::test]
    async fn an_upload_written_while_its_app_is_deleted_is_shredded_with_it() {
        const STORED: &str = "INSERT INTO apps (id, name, capi, retention_seconds, max_file_bytes, created_at, \
                                used_bytes, used_media) VALUES ('app', 'app', true, 60, 1000, 0, 100, 1); \
            INSERT INTO media (id, app_id, state, blob_key, format_version, segment_size, salt, \
                               nonce_prefix, created_at, expires_at, due_at, reserved_bytes) \
                VALUES ('stored', 'app', 'ready', 'media/stored', 1, 65536, '\\x00', '\\x00', 0, 1000, 1000, 100); \
            INSERT INTO media_keys (media_id, kek_id, wrapped_dek) VALUES ('stored', 'k1', '\\x00')";
        let (url, name) = fresh_postgres_database().await;
        let pool = connect(&url).await.unwrap();
        let relaxed = connect_relaxed(&url).await.unwrap();
        migrate(&pool).await.unwrap();
        sqlx::raw_sql(STORED).execute(&pool).await.unwrap();

        let mut holder = pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM media WHERE id = 'stored' FOR UPDATE")
            .execute(&mut *holder)
            .await
            .unwrap();
        let deletion = tokio::spawn({
            let meta = Metadata::Postgres {
                pool: pool.clone(),
                relaxed: relaxed.clone(),
            };
            async move { meta.delete_app(&AppId::new("app"), 5).await }
        });
        let waiting = async {
            while sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND query LIKE 'UPDATE media SET state%'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
                == 0
            {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("the deletion's shred waits for the held row");

        let (late, app) = (MediaId::new("late"), AppId::new("app"));
        let intent = NewMedia {
            id: &late,
            app_id: &app,
            filename: None,
            blob_key: "media/late",
            kek_id: "k1",
            wrapped_dek: &[0],
            salt: &[0],
            nonce_prefix: &[0],
            created_at: 1,
            expires_at: 1_000,
            abandon_at: 100,
            reserved_bytes: 60,
        };
        let written = insert_uploading(&relaxed, &intent, QuotaDefaults::default())
            .await
            .unwrap();
        assert!(matches!(written, Intent::Written), "{written:?}");
        let ready = mark_ready(&pool, &relaxed, &completion(&late, 0)).await.unwrap();
        holder.rollback().await.unwrap();
        let deleted = deletion.await.unwrap().unwrap();

        let (left, keys): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM media WHERE app_id = 'app' AND state <> 'deleting'), \
                    (SELECT COUNT(*) FROM media_keys)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let used = app_used(&pool).await;
        pool.close().await;
        relaxed.close().await;
        drop_postgres_database(&name).await;
        assert!(
            ready,
            "the upload turned ready before the deletion marked its app"
        );
        assert_eq!(left, 0, "rows of the deleted app left unshredded");
        assert_eq!(keys, 0, "keys of the deleted app left");
        assert_eq!(used, (0, 0), "usage left to the deleted app");
        assert_eq!(deleted, Some(2));
    }

    /// A settlement whose ready-marking never comes (a crash between the
    /// two) leaves the app's usage equal to its rows' reservations, and the
    /// reaper, taking the stale upload, gives back exactly what it held.
    #[tokio::test]
    async fn a_settled_upload_that_never_turns_ready_is_reaped_with_its_app_usage_exact() {
        let (name, pool, relaxed, id) = one_settled_upload().await;
        let settled = usage(&pool).await;
        // A second settlement of the same completion changes nothing.
        settle_reservation(&relaxed, &completion(&id, 40)).await.unwrap();
        let again = usage(&pool).await;
        let claimed = claim_due(&pool, 10, 500, 20, 10).await.unwrap();
        let (used_bytes, used_media) = app_used(&pool).await;
        pool.close().await;
        relaxed.close().await;
        drop_postgres_database(&name).await;
        assert_eq!(settled, (60, 60));
        assert_eq!(again, (60, 60));
        assert_eq!(claimed.len(), 1);
        assert_eq!((used_bytes, used_media), (0, 0));
    }

    /// An upload that believes it reserved more than its row holds (a
    /// reservation committed without its flush, lost in a crash the upload
    /// lived through) settles to its size all the same: the app is charged
    /// the shortfall, and its usage is what it stores. (The row used to be
    /// settled only when it held what the upload believed, and turned
    /// ready counted short: 160 bytes stored, 100 counted.)
    #[tokio::test]
    async fn a_reservation_lost_in_a_crash_is_charged_at_completion() {
        let (name, pool, relaxed, id) = one_upload().await;
        // Reserved 100, then 100 more that the crash took: 200 believed.
        let ready = ReadyMedia {
            size_bytes: 160,
            unused_bytes: 40,
            ..completion(&id, 40)
        };
        let done = mark_ready(&pool, &relaxed, &ready).await.unwrap();
        let counted = usage(&pool).await;
        pool.close().await;
        relaxed.close().await;
        drop_postgres_database(&name).await;
        assert!(done);
        assert_eq!(counted, (160, 160), "(the app's usage, its rows' reservations)");
    }

    /// 20,000 media, 200 of them of the app `app`, with their keys,
    /// analysed.
    const FILL: &str = "INSERT INTO apps (id, name, capi, retention_seconds, max_file_bytes, created_at) \
            VALUES ('app', 'app', true, 60, 1000, 0), ('other', 'other', true, 60, 1000, 0); \
        INSERT INTO media (id, app_id, state, blob_key, format_version, segment_size, salt, \
                           nonce_prefix, created_at, expires_at, due_at, reserved_bytes) \
            SELECT i::text, CASE WHEN i <= 200 THEN 'app' ELSE 'other' END, 'ready', 'media/' || i, 1, 65536, '\\x00', '\\x00', 0, 1, 1, 1 \
            FROM generate_series(1, 20000) i; \
        INSERT INTO media_keys (media_id, kek_id, wrapped_dek) \
            SELECT i::text, 'k1', '\\x00' FROM generate_series(1, 20000) i; \
        ANALYZE";

    /// The plans of `statements` (each with its arguments) on `FILL`, under
    /// `ROW_BY_ROW_PLAN` and without it.
    async fn plans_with_and_without_lookups_by_row(
        statements: Vec<(&'static str, PgArguments)>,
    ) -> Vec<(String, String)> {
        let (url, name) = fresh_postgres_database().await;
        let pool = connect(&url).await.unwrap();
        migrate(&pool).await.unwrap();
        sqlx::raw_sql(FILL).execute(&pool).await.unwrap();
        let mut plans = Vec::new();
        for (sql, arguments) in statements {
            let mut plan = Vec::new();
            for settings in [Some(ROW_BY_ROW_PLAN), None] {
                let mut tx = pool.begin().await.unwrap();
                // As the estimates of a table of 10 million media do.
                sqlx::raw_sql("SET LOCAL jit_above_cost = 0")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                if let Some(settings) = settings {
                    sqlx::raw_sql(settings).execute(&mut *tx).await.unwrap();
                }
                let lines: Vec<String> =
                    sqlx::query_scalar_with(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")), arguments.clone())
                        .fetch_all(&mut *tx)
                        .await
                        .unwrap();
                plan.push(lines.join("\n"));
            }
            plans.push((plan[0].clone(), plan[1].clone()));
        }
        pool.close().await;
        drop_postgres_database(&name).await;
        plans
    }

    /// Under `ROW_BY_ROW_PLAN` the key table is reached by one lookup a
    /// row, in the partition the id hashes to, and nothing is compiled by
    /// JIT even where the estimates pass its threshold; without it, by a
    /// scan of every partition, compiled, which shows the statement is one
    /// the settings must cover.
    fn assert_lookups_by_row((by_row, unsettled): &(String, String)) {
        assert!(!by_row.contains("JIT"), "{by_row}");
        assert!(unsettled.contains("JIT"), "{unsettled}");
        assert!(!by_row.contains("Hash Join"), "{by_row}");
        assert!(!by_row.contains("Merge Join"), "{by_row}");
        assert!(!by_row.contains("Seq Scan on media_keys"), "{by_row}");
        assert!(by_row.contains("Index Scan using media_keys_00_pkey"), "{by_row}");
        assert!(unsettled.contains("Seq Scan on media_keys_00"), "{unsettled}");
    }

    fn arguments(add: impl FnOnce(&mut PgArguments) -> Result<(), sqlx::error::BoxDynError>) -> PgArguments {
        let mut arguments = PgArguments::default();
        add(&mut arguments).unwrap();
        arguments
    }

    /// The claim deletes the claimed rows' keys one lookup each, however
    /// many rows it claims: not by hashing the whole key table, which the
    /// planner prefers for a batch that is large against the table (here
    /// all 20,000 media; 500 of a million were too). EXPLAIN runs
    /// on the production statement.
    #[tokio::test]
    async fn the_claim_looks_up_each_key_in_its_partition() {
        let claim = arguments(|a| {
            a.add(2_i64)?;
            a.add(3_i64)?;
            a.add(20_000_i64)?;
            a.add(0_i64)
        });
        let plans = plans_with_and_without_lookups_by_row(vec![(CLAIM_SQL, claim)]).await;
        assert_lookups_by_row(&plans[0]);
    }

    /// Deleting an app shreds its rows and deletes their keys by lookups
    /// too: an app's media may be many against the whole table (here a
    /// hundredth of it).
    #[tokio::test]
    async fn an_app_deletion_looks_up_each_key_in_its_partition() {
        let shred = arguments(|a| {
            a.add(5_i64)?;
            a.add(5_i64)?;
            a.add("app")
        });
        let drop_keys = arguments(|a| a.add("app"));
        let plans = plans_with_and_without_lookups_by_row(vec![
            (super::super::apps::SHRED_APP, shred),
            (super::super::apps::DROP_APP_KEYS, drop_keys),
        ])
        .await;
        for plan in &plans {
            assert_lookups_by_row(plan);
        }
    }
}
