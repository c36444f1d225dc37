//! Apps: their settings, and deleting one with all its media.

use std::time::Duration;

use super::Metadata;
use crate::error::StoreError;
use crate::ids::AppId;
use crate::model::{App, Millis};

pub(super) const APP_COLUMNS: &str =
    "id, name, capi, retention_seconds, max_file_bytes, allowed_types, uploads_per_second, created_at";

/// An app as its row stores it: integers where the database has no
/// unsigned types, the allowed types joined by commas.
#[derive(sqlx::FromRow)]
pub(super) struct AppRow {
    id: AppId,
    name: String,
    capi: bool,
    retention_seconds: i64,
    max_file_bytes: i64,
    allowed_types: Option<String>,
    uploads_per_second: Option<i32>,
    created_at: Millis,
}

impl From<AppRow> for App {
    fn from(row: AppRow) -> App {
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
            created_at: app.created_at,
        }
    }
}

impl Metadata {
    pub(crate) async fn insert_app(&self, app: &App) -> Result<(), StoreError> {
        let app = AppRow::from(app);
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

    /// Changes an app's settings; `false` if there is no such live app.
    pub(crate) async fn update_app(&self, app: &App) -> Result<bool, StoreError> {
        let app = AppRow::from(app);
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
    pub(crate) async fn delete_app(&self, id: &AppId, now: Millis) -> Result<Option<u64>, StoreError> {
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

    /// Readable media of an app: how many, and their plaintext bytes.
    pub(crate) async fn app_stats(&self, app_id: &AppId, now: Millis) -> Result<(i64, i64), StoreError> {
        // SUM of BIGINT is NUMERIC in Postgres: cast back so both dialects agree.
        const SQL: &str = concat!(
            "SELECT COUNT(*), CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM media \
             WHERE app_id = $1 AND state = ",
            state_sql!(Ready),
            " AND expires_at > $2 AND id IN (SELECT media_id FROM media_keys)"
        );
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(app_id).bind(now).fetch_one(pool).await)?)
    }
}
