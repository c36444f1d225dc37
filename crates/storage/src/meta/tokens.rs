//! API tokens: issuing, listing, revoking, and finding the app of one.

use std::sync::LazyLock;

use super::Metadata;
use super::apps::{APP_COLUMNS, AppRow};
use crate::error::StoreError;
use crate::ids::{AppId, TokenId};
use crate::model::{App, Millis, TokenInfo};

/// The live app of a live token, and the token's last use. Built once: it
/// is asked on every authenticated request.
static APP_FOR_TOKEN: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<String> = APP_COLUMNS.split(", ").map(|c| format!("a.{c}")).collect();
    format!(
        "SELECT {}, t.last_used_at FROM tokens t JOIN apps a ON a.id = t.app_id \
         WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL AND a.deleted_at IS NULL",
        columns.join(", ")
    )
});

/// `APP_FOR_TOKEN` for a token that must be `$2`'s.
static APP_FOR_TOKEN_OF_APP: LazyLock<String> =
    LazyLock::new(|| format!("{} AND t.app_id = $2", APP_FOR_TOKEN.as_str()));

/// An app found by one of its tokens, with the token's last use.
#[derive(sqlx::FromRow)]
struct TokenApp {
    #[sqlx(flatten)]
    app: AppRow,
    last_used_at: Option<Millis>,
}

impl Metadata {
    pub(crate) async fn insert_token(
        &self,
        token_sha256: &str,
        app_id: &AppId,
        label: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO tokens (id, token_sha256, app_id, label, created_at) \
                           VALUES (substr($1, 1, 16), $1, $2, $3, $4)";
        on_write_pool!(self, pool => sqlx::query(SQL)
            .bind(token_sha256)
            .bind(app_id)
            .bind(label)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Every token of an app, revoked ones included, oldest first.
    pub(crate) async fn list_tokens(&self, app_id: &AppId) -> Result<Vec<TokenInfo>, StoreError> {
        const SQL: &str = "SELECT id, app_id, label, created_at, revoked_at, last_used_at FROM tokens \
                           WHERE app_id = $1 ORDER BY created_at, id";
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(app_id).fetch_all(pool).await)?)
    }

    /// Revokes a token of `app_id` (again is fine); the token fails from the
    /// commit on. `false` if the app has no such token.
    pub(crate) async fn revoke_token(
        &self,
        app_id: &AppId,
        id: &TokenId,
        now: Millis,
    ) -> Result<bool, StoreError> {
        const SQL: &str =
            "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $3) WHERE app_id = $1 AND id = $2";
        let revoked = on_write_pool!(self, pool => sqlx::query(SQL)
            .bind(app_id)
            .bind(id)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(revoked == 1)
    }

    /// The app `token_sha256` was issued to, whether or not the token or
    /// the app is live.
    pub(crate) async fn issuer_of_token(&self, token_sha256: &str) -> Result<Option<AppId>, StoreError> {
        const SQL: &str = "SELECT app_id FROM tokens WHERE token_sha256 = $1";
        let app_id: Option<String> =
            on_pool!(self, pool => sqlx::query_scalar(SQL).bind(token_sha256).fetch_optional(pool).await)?;
        Ok(app_id.map(AppId::new))
    }

    /// Whether `app_id` has the unrevoked token `id`, the app itself live.
    pub(crate) async fn token_is_live(&self, app_id: &AppId, id: &TokenId) -> Result<bool, StoreError> {
        const SQL: &str = "SELECT 1 FROM tokens t JOIN apps a ON a.id = t.app_id \
                           WHERE t.app_id = $1 AND t.id = $2 AND t.revoked_at IS NULL \
                           AND a.deleted_at IS NULL";
        let found: Option<i32> =
            on_pool!(self, pool => sqlx::query_scalar(SQL).bind(app_id).bind(id).fetch_optional(pool).await)?;
        Ok(found.is_some())
    }

    /// The app a live token belongs to; notes its use at most once a minute.
    /// The last use is read with the app, so the write is sent only when it
    /// changes the row: authentication does not write (nor, on SQLite, take
    /// the one write lock) on every request.
    ///
    /// With `of`, only a token of that app is found: a token of another app
    /// is answered as one never issued, by the same lookup, and its use is
    /// not noted.
    pub(crate) async fn app_for_token(
        &self,
        token_sha256: &str,
        of: Option<&AppId>,
        now: Millis,
    ) -> Result<Option<App>, StoreError> {
        const TOUCH: &str = "UPDATE tokens SET last_used_at = $2 WHERE token_sha256 = $1 \
                             AND (last_used_at IS NULL OR last_used_at < $2 - 60000)";
        let found: Option<TokenApp> = match of {
            None => {
                on_pool!(self, pool => sqlx::query_as(APP_FOR_TOKEN.as_str()).bind(token_sha256).fetch_optional(pool).await)?
            }
            Some(app_id) => {
                on_pool!(self, pool => sqlx::query_as(APP_FOR_TOKEN_OF_APP.as_str()).bind(token_sha256).bind(app_id).fetch_optional(pool).await)?
            }
        };
        let Some(TokenApp { app, last_used_at }) = found else {
            return Ok(None);
        };
        if last_used_at.is_none_or(|at| at < now - 60_000) {
            on_write_pool!(self, pool => sqlx::query(TOUCH).bind(token_sha256).bind(now).execute(pool).await.map(|r| r.rows_affected()))?;
        }
        Ok(Some(app.into()))
    }
}
