//! WhatsApp phone-number ids: which app the requests naming one belong to.
//! Each maps to one app at most (the table's primary key), whichever app.

use std::collections::HashMap;

use super::Metadata;
use crate::error::StoreError;
use crate::ids::AppId;

pub(super) const MAP_PHONE_NUMBER: &str =
    "INSERT INTO whatsapp_phone_numbers (phone_number_id, app_id, created_at) VALUES ($1, $2, $3)";

/// Replaces the phone-number ids of app `$app_id` with `$ids` (a slice of
/// `String`, without duplicates), at `$now`, on transaction `$tx`. Yields
/// the first id another app holds (the caller rolls back: on Postgres the
/// failed insert has ended the transaction anyway), or `None`; `?` passes
/// any other error on.
macro_rules! map_phone_numbers {
    ($tx:expr, $app_id:expr, $ids:expr, $now:expr) => {{
        sqlx::query("DELETE FROM whatsapp_phone_numbers WHERE app_id = $1")
            .bind($app_id)
            .execute(&mut *$tx)
            .await?;
        let mut taken = None;
        for id in $ids {
            let mapped = sqlx::query(super::phone_numbers::MAP_PHONE_NUMBER)
                .bind(id)
                .bind($app_id)
                .bind($now)
                .execute(&mut *$tx)
                .await;
            match mapped {
                Ok(_) => {}
                // The app's own ids are gone and the list has no duplicates:
                // the primary key, this table's one unique index, names
                // another app's row.
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    taken = Some(id.clone());
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        taken
    }};
}

impl Metadata {
    /// The live app a phone-number id maps to.
    pub(crate) async fn app_of_phone_number(
        &self,
        phone_number_id: &str,
    ) -> Result<Option<AppId>, StoreError> {
        const SQL: &str = "SELECT p.app_id FROM whatsapp_phone_numbers p JOIN apps a ON a.id = p.app_id \
                           WHERE p.phone_number_id = $1 AND a.deleted_at IS NULL";
        Ok(on_pool!(self, pool => sqlx::query_scalar(SQL).bind(phone_number_id).fetch_optional(pool).await)?)
    }

    /// The phone-number ids mapped to an app, in order.
    pub(crate) async fn phone_number_ids(&self, app_id: &AppId) -> Result<Vec<String>, StoreError> {
        const SQL: &str =
            "SELECT phone_number_id FROM whatsapp_phone_numbers WHERE app_id = $1 ORDER BY phone_number_id";
        Ok(on_pool!(self, pool => sqlx::query_scalar(SQL).bind(app_id).fetch_all(pool).await)?)
    }

    /// The phone-number ids of every live app that has any, each app's in order.
    pub(crate) async fn all_phone_number_ids(&self) -> Result<HashMap<AppId, Vec<String>>, StoreError> {
        const SQL: &str = "SELECT p.app_id, p.phone_number_id FROM whatsapp_phone_numbers p \
                           JOIN apps a ON a.id = p.app_id WHERE a.deleted_at IS NULL \
                           ORDER BY p.phone_number_id";
        let rows: Vec<(AppId, String)> = on_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await)?;
        let mut by_app: HashMap<AppId, Vec<String>> = HashMap::new();
        for (app_id, phone_number_id) in rows {
            by_app.entry(app_id).or_default().push(phone_number_id);
        }
        Ok(by_app)
    }
}
