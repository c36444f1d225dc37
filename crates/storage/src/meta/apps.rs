//! Apps: their settings, and deleting one with all its media.

use std::time::Duration;

use futures::TryStreamExt;

use super::Metadata;
use crate::error::StoreError;
use crate::ids::AppId;
use crate::model::{App, Millis, TypeLimit, type_limits_object};

pub(super) const APP_COLUMNS: &str = "id, name, capi, retention_seconds, max_file_bytes, allowed_types, \
                                      uploads_per_second, max_bytes_stored, max_media, wa_type_limits, created_at";

/// An app's deletion shreds its rows (binds: now, now, app): every row with
/// a key counts (uploading or ready). Uploads still running find their row
/// shredded and drop their blob. Rows it has shredded already are left out,
/// so that it may run twice in one deletion (see `delete_app`).
pub(super) const SHRED_APP: &str = shred_media!(concat!(
    "WHERE app_id = $3 AND state <> ",
    state_sql!(Deleting),
    " AND id IN (SELECT media_id FROM media_keys) RETURNING reserved_bytes"
));

/// What `SHRED_APP` shredded: how many rows, and what those that counted
/// held of their app's quota.
struct Shredded {
    rows: u64,
    bytes: i64,
    counted: i64,
}

/// Runs `SHRED_APP` for app `$id` at `$now` on the transaction `$tx`: a
/// `Shredded`. (A macro: its body is the same on either dialect's
/// transaction.)
macro_rules! shred_app_rows {
    ($tx:ident, $id:expr, $now:expr) => {{
        let mut shredded = Shredded {
            rows: 0,
            bytes: 0,
            counted: 0,
        };
        let mut rows = sqlx::query_scalar::<_, Option<i64>>(SHRED_APP)
            .bind($now)
            .bind($now)
            .bind($id)
            .fetch(&mut *$tx);
        while let Some(reserved) = rows.try_next().await? {
            shredded.rows += 1;
            if let Some(reserved) = reserved {
                shredded.bytes += reserved;
                shredded.counted += 1;
            }
        }
        shredded
    }};
}

/// Then deletes their keys (bind: app).
pub(super) const DROP_APP_KEYS: &str =
    "DELETE FROM media_keys WHERE media_id IN (SELECT id FROM media WHERE app_id = $1)";

/// An app as its row stores it: integers where the database has no
/// unsigned types, the allowed types joined by commas, the WhatsApp type
/// limits as a JSON object in their order.
#[derive(sqlx::FromRow)]
pub(super) struct AppRow {
    id: AppId,
    name: String,
    capi: bool,
    retention_seconds: i64,
    max_file_bytes: i64,
    allowed_types: Option<String>,
    uploads_per_second: Option<i32>,
    max_bytes_stored: Option<i64>,
    max_media: Option<i64>,
    wa_type_limits: Option<String>,
    created_at: Millis,
}

/// Binds `$1`–`$10` of `$query` to the id and settings of `$app` (an
/// `AppRow`), in the order the insert and the update name them.
macro_rules! bind_app_settings {
    ($query:expr, $app:expr) => {
        $query
            .bind(&$app.id)
            .bind(&$app.name)
            .bind($app.capi)
            .bind($app.retention_seconds)
            .bind($app.max_file_bytes)
            .bind(&$app.allowed_types)
            .bind($app.uploads_per_second)
            .bind($app.max_bytes_stored)
            .bind($app.max_media)
            .bind(&$app.wa_type_limits)
    };
}

/// What changing an app's row and its phone-number ids came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AppWrite {
    Written,
    /// No such live app; nothing is written.
    NotFound,
    /// Another app has this phone-number id; nothing is written.
    PhoneNumberTaken(String),
}

/// The WhatsApp type limits as the column holds them.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
struct TypeLimitsColumn(#[serde(with = "type_limits_object")] Vec<TypeLimit>);

impl From<AppRow> for App {
    fn from(row: AppRow) -> App {
        let wa_type_limits = row.wa_type_limits.as_deref().and_then(|json| {
            // The vault writes only checked lists; one it cannot read was
            // written by hand, and Meta's limits are the safe reading.
            serde_json::from_str::<TypeLimitsColumn>(json)
                .inspect_err(|error| {
                    tracing::warn!(app_id = %row.id, %error, "wa_type_limits unreadable; Meta's limits apply");
                })
                .ok()
                .map(|column| column.0)
        });
        App {
            id: row.id,
            name: row.name,
            capi: row.capi,
            retention: Duration::from_secs(u64::try_from(row.retention_seconds).unwrap_or(0)),
            max_file_bytes: u64::try_from(row.max_file_bytes).unwrap_or(0),
            allowed_types: row.allowed_types.map(|list| {
                list.split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect()
            }),
            uploads_per_second: row.uploads_per_second.and_then(|n| u32::try_from(n).ok()),
            max_bytes_stored: row.max_bytes_stored.and_then(|n| u64::try_from(n).ok()),
            max_media: row.max_media.and_then(|n| u64::try_from(n).ok()),
            wa_type_limits,
            created_at: row.created_at,
        }
    }
}

impl From<&App> for AppRow {
    /// The vault checks settings against these columns' ranges before it
    /// stores them; out of range here is saturated, never wrapped.
    fn from(app: &App) -> AppRow {
        AppRow {
            id: app.id.clone(),
            name: app.name.clone(),
            capi: app.capi,
            retention_seconds: i64::try_from(app.retention.as_secs()).unwrap_or(i64::MAX),
            max_file_bytes: i64::try_from(app.max_file_bytes).unwrap_or(i64::MAX),
            allowed_types: app.allowed_types.as_ref().map(|list| list.join(",")),
            uploads_per_second: app
                .uploads_per_second
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
            max_bytes_stored: app.max_bytes_stored.map(saturating_i64),
            max_media: app.max_media.map(saturating_i64),
            wa_type_limits: app.wa_type_limits.as_ref().map(|limits| {
                serde_json::to_string(&TypeLimitsColumn(limits.clone()))
                    .expect("strings and integers always serialise")
            }),
            created_at: app.created_at,
        }
    }
}

pub(crate) fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An app's usage against its quota, and what it stores readably.
#[derive(sqlx::FromRow)]
pub(crate) struct UsageRow {
    pub readable_media: i64,
    pub readable_bytes: i64,
    pub used_media: i64,
    pub used_bytes: i64,
}

impl Metadata {
    /// Writes a new app and maps `phone_number_ids` (without duplicates) to
    /// it, in one transaction. Returns, writing nothing, the first of them
    /// that another app has.
    pub(crate) async fn insert_app(
        &self,
        app: &App,
        phone_number_ids: &[String],
    ) -> Result<Option<String>, StoreError> {
        let app = AppRow::from(app);
        const SQL: &str = "INSERT INTO apps (id, name, capi, retention_seconds, max_file_bytes, allowed_types, \
                           uploads_per_second, max_bytes_stored, max_media, wa_type_limits, created_at) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
        Ok(on_write_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            bind_app_settings!(sqlx::query(SQL), app)
                .bind(app.created_at)
                .execute(&mut *tx)
                .await?;
            let taken = map_phone_numbers!(tx, &app.id, phone_number_ids, app.created_at);
            if taken.is_none() {
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(taken)
        })?)
    }

    pub(crate) async fn list_apps(&self) -> Result<Vec<App>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {APP_COLUMNS} FROM apps WHERE deleted_at IS NULL ORDER BY created_at, id"
        ));
        let rows: Vec<AppRow> = on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(App::from).collect())
    }

    pub(crate) async fn get_app(&self, id: &AppId) -> Result<Option<App>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {APP_COLUMNS} FROM apps WHERE id = $1 AND deleted_at IS NULL"
        ));
        let row: Option<AppRow> =
            on_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)?;
        Ok(row.map(App::from))
    }

    /// Changes an app's settings as `change` says and, given
    /// `phone_number_ids` (without duplicates), replaces the set mapped to
    /// it, in one transaction; the app as written comes back with
    /// `AppWrite::Written`. Usage is left as it is: a changed quota judges
    /// the next reservation.
    ///
    /// The app is read in the transaction that writes it, its row locked
    /// (PostgreSQL; SQLite writes one at a time): two changes at once, each
    /// of other settings, both hold, where writing back settings read before
    /// would undo the other's.
    pub(crate) async fn update_app(
        &self,
        id: &AppId,
        change: impl FnOnce(&mut App),
        phone_number_ids: Option<&[String]>,
        now: Millis,
    ) -> Result<(AppWrite, Option<App>), StoreError> {
        let lock = match self {
            Metadata::Postgres { .. } => " FOR NO KEY UPDATE",
            Metadata::Sqlite { .. } => "",
        };
        let read = sqlx::AssertSqlSafe(format!(
            "SELECT {APP_COLUMNS} FROM apps WHERE id = $1 AND deleted_at IS NULL{lock}"
        ));
        const SQL: &str = "UPDATE apps SET name = $2, capi = $3, retention_seconds = $4, max_file_bytes = $5, \
                           allowed_types = $6, uploads_per_second = $7, max_bytes_stored = $8, max_media = $9, \
                           wa_type_limits = $10 WHERE id = $1 AND deleted_at IS NULL";
        Ok(on_write_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let found: Option<AppRow> = sqlx::query_as(read).bind(id).fetch_optional(&mut *tx).await?;
            let Some(found) = found else {
                return Ok((AppWrite::NotFound, None));
            };
            let mut changed = App::from(found);
            change(&mut changed);
            let app = AppRow::from(&changed);
            let updated = bind_app_settings!(sqlx::query(SQL), app)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated == 0 {
                return Ok((AppWrite::NotFound, None));
            }
            let taken = match phone_number_ids {
                Some(ids) => map_phone_numbers!(tx, &app.id, ids, now),
                None => None,
            };
            match taken {
                Some(taken) => Ok::<_, sqlx::Error>((AppWrite::PhoneNumberTaken(taken), None)),
                None => {
                    tx.commit().await?;
                    Ok((AppWrite::Written, Some(changed)))
                }
            }
        })?)
    }

    /// Deletes an app in one transaction: every media row of it is shredded
    /// and handed to the reaper (which removes the blobs, the rows and
    /// finally the app), what they held of the app's quota is released, the
    /// app is marked deleted, its tokens go and its phone-number ids are
    /// free for another app. Media rows first, the app
    /// row last, as every transaction that changes both takes them.
    /// Returns how many media were shredded, or `None` if there is no such app.
    ///
    /// On PostgreSQL an upload's intent may commit while the first shred
    /// runs, after the snapshot it reads: its row is not among those
    /// shredded. Marking the app takes its row, which every intent's
    /// reservation updates, so once it is marked every intent that reserved
    /// before has committed and is seen by the next statement: a second
    /// shred takes those rows, and the keys go only after it. (On SQLite the
    /// deletion writes alone, and the second shred finds nothing.) The
    /// second shred takes media rows after the app's, against the order
    /// above, but only rows of uploads begun during the deletion; should a
    /// DELETE of one of them hold its row meanwhile, PostgreSQL ends the
    /// deadlock by failing one of the two, which may be sent again.
    pub(crate) async fn delete_app(&self, id: &AppId, now: Millis) -> Result<Option<u64>, StoreError> {
        const MARK: &str = "UPDATE apps SET deleted_at = $2, used_bytes = used_bytes - $3, \
                            used_media = used_media - $4 WHERE id = $1 AND deleted_at IS NULL";
        const TOKENS: &str = "DELETE FROM tokens WHERE app_id = $1";
        const PHONE_NUMBERS: &str = "DELETE FROM whatsapp_phone_numbers WHERE app_id = $1";
        Ok(on_write_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if matches!(self, Metadata::Postgres { .. }) {
                // Both statements join the app's rows to the partitioned
                // key table (see `ROW_BY_ROW_PLAN`).
                sqlx::raw_sql(super::postgres::ROW_BY_ROW_PLAN).execute(&mut *tx).await?;
            }
            let first = shred_app_rows!(tx, id, now);
            let marked = sqlx::query(MARK)
                .bind(id)
                .bind(now)
                .bind(first.bytes)
                .bind(first.counted)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if marked == 0 {
                // No such live app (and so nothing of it was shredded): undone.
                Ok::<_, sqlx::Error>(None)
            } else {
                let late = shred_app_rows!(tx, id, now);
                if late.rows > 0 {
                    sqlx::query(super::usage::RELEASE)
                        .bind(id)
                        .bind(late.bytes)
                        .bind(late.counted)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(DROP_APP_KEYS).bind(id).execute(&mut *tx).await?;
                sqlx::query(TOKENS).bind(id).execute(&mut *tx).await?;
                sqlx::query(PHONE_NUMBERS).bind(id).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(Some(first.rows + late.rows))
            }
        })?)
    }

    /// The bytes an app's quota has left (its limit, or the configured
    /// default `max_bytes_stored`, less its usage); `None` when it has no
    /// byte limit or there is no such app. A hint only: reservations are
    /// made by the conditional update, which another may beat.
    pub(crate) async fn byte_room(
        &self,
        app_id: &AppId,
        default_max_bytes_stored: Option<i64>,
    ) -> Result<Option<i64>, StoreError> {
        const SQL: &str = "SELECT COALESCE(max_bytes_stored, $2) - used_bytes FROM apps WHERE id = $1";
        let room: Option<Option<i64>> = on_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(app_id)
            .bind(default_max_bytes_stored)
            .fetch_optional(pool)
            .await)?;
        Ok(room.flatten())
    }

    /// Readable media of an app (how many, and their plaintext bytes), and
    /// its usage against its quota. Readable media are those its usage
    /// counts, less its uploads in progress and its ready media that have
    /// expired but are not yet reaped: the counters and two small index
    /// ranges (uploads in progress, the app's rows due to the reaper),
    /// however many media the app stores. A ready row's reservation is its size, and it
    /// keeps its key until it stops being ready. Rows an older version wrote
    /// without a reservation count once `apps recount` has adopted them.
    pub(crate) async fn app_usage(
        &self,
        app_id: &AppId,
        now: Millis,
    ) -> Result<Option<UsageRow>, StoreError> {
        // SUM of BIGINT is NUMERIC in Postgres: cast back so both dialects agree.
        macro_rules! held {
            ($where:expr) => {
                concat!(
                    "(SELECT COUNT(*) AS media, CAST(COALESCE(SUM(reserved_bytes), 0) AS BIGINT) AS bytes \
                     FROM media WHERE reserved_bytes IS NOT NULL AND ",
                    $where,
                    ")"
                )
            };
        }
        const SQL: &str = concat!(
            "SELECT a.used_media - u.media - e.media AS readable_media, \
             a.used_bytes - u.bytes - e.bytes AS readable_bytes, a.used_media, a.used_bytes FROM apps a, ",
            // In the partial index of uploads in progress.
            held!(concat!("state = ", state_sql!(Uploading), " AND app_id = $1")),
            " u, ",
            // In `media_app_id_due_at`, from the app's first due row on.
            held!(concat!(
                "app_id = $1 AND due_at <= $2 AND state = ",
                state_sql!(Ready),
                " AND expires_at <= $2"
            )),
            " e WHERE a.id = $1 AND a.deleted_at IS NULL"
        );
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(app_id).bind(now).fetch_optional(pool).await)?)
    }

    /// Sets an app's usage to the sum over its rows that count, counting
    /// from now on rows that an older version wrote without a reservation
    /// (at their size, or as nothing while still uploading), and stored
    /// rows that reserve less than their size (an upload that an older
    /// replica finished after the quota migration had set its reservation
    /// to nothing: that version never settles it). Safe while
    /// serving: the app row is locked before the sum is taken, so a change
    /// to a media row that the sum does not see yet waits on that lock and
    /// applies its own change to the counters after. Returns the usage as
    /// (media, bytes) set, or `None` if there is no such live app.
    pub(crate) async fn recount_usage(&self, app_id: &AppId) -> Result<Option<(i64, i64)>, StoreError> {
        const ADOPT: &str = concat!(
            "UPDATE media SET reserved_bytes = COALESCE(size_bytes, 0) \
             WHERE app_id = $1 AND state <> ",
            state_sql!(Deleting),
            " AND (reserved_bytes IS NULL OR (state = ",
            state_sql!(Ready),
            " AND reserved_bytes < size_bytes))"
        );
        // A no-op write: it takes the app row's lock in both dialects.
        const LOCK: &str = "UPDATE apps SET used_bytes = used_bytes WHERE id = $1 AND deleted_at IS NULL";
        const SUM: &str = concat!(
            "UPDATE apps SET \
             used_media = (SELECT COUNT(*) FROM media WHERE media.app_id = apps.id AND media.state <> ",
            state_sql!(Deleting),
            " AND media.reserved_bytes IS NOT NULL), \
             used_bytes = (SELECT CAST(COALESCE(SUM(reserved_bytes), 0) AS BIGINT) FROM media \
                 WHERE media.app_id = apps.id AND media.state <> ",
            state_sql!(Deleting),
            " AND media.reserved_bytes IS NOT NULL) \
             WHERE id = $1 RETURNING used_media, used_bytes"
        );
        Ok(on_write_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(ADOPT).bind(app_id).execute(&mut *tx).await?;
            if sqlx::query(LOCK).bind(app_id).execute(&mut *tx).await?.rows_affected() == 0 {
                Ok::<_, sqlx::Error>(None)
            } else {
                let usage: (i64, i64) = sqlx::query_as(SUM).bind(app_id).fetch_one(&mut *tx).await?;
                tx.commit().await?;
                Ok(Some(usage))
            }
        })?)
    }
}
