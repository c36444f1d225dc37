//! Apps and their tokens: what an operator manages (through the CLI or the
//! admin API), and how a request's token is checked.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{AdminError, AuthError, StoreError};
use crate::ids::{AppId, TokenId};
use crate::meta::AppWrite;
use crate::model::{App, AppStats, AppUpdate, IssuedToken, NewApp, TokenInfo, TypeLimit, now_millis};
use crate::vault::Vault;

/// Tokens are `mv_` and 43 URL-safe characters (32 random bytes).
const TOKEN_PREFIX: &str = "mv_";
/// Longest token worth hashing; anything longer is refused unread.
const TOKEN_MAX_LEN: usize = 256;
const NAME_MAX_LEN: usize = 200;

fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The id of an API token: the first 16 hex digits of its SHA-256, as the
/// admin API lists and revokes it. It names the token without revealing it.
pub fn token_id_of(token: &str) -> TokenId {
    TokenId::new(&token_digest(token)[..16])
}

/// The longest retention an app (or the configured default) may have:
/// expiry times are milliseconds in an i64, kept far from overflow.
pub const MAX_RETENTION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Retention in whole seconds, from one second to 100 years.
fn retention(retention: Duration) -> Result<Duration, AdminError> {
    let seconds = retention.as_secs();
    if seconds < 1 {
        return Err(AdminError::Invalid(
            "retention must be at least one second".into(),
        ));
    }
    if seconds > MAX_RETENTION.as_secs() {
        return Err(AdminError::Invalid("retention must be at most 100 years".into()));
    }
    Ok(Duration::from_secs(seconds))
}

/// The database keeps sizes as BIGINT.
fn max_file_bytes(bytes: u64) -> Result<u64, AdminError> {
    if (1..=i64::MAX as u64).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(AdminError::Invalid(
            "maxFileBytes must be between 1 and 9223372036854775807".into(),
        ))
    }
}

fn name(name: &str) -> Result<String, AdminError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > NAME_MAX_LEN {
        return Err(AdminError::Invalid(format!(
            "name must have 1 to {NAME_MAX_LEN} characters"
        )));
    }
    no_control_characters(trimmed, "name")?;
    Ok(trimmed.to_owned())
}

/// A token's label, trimmed: like a name, but it may be left out (or
/// blank, which is the same).
fn label(label: Option<&str>) -> Result<Option<String>, AdminError> {
    let Some(trimmed) = label.map(str::trim).filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    if trimmed.chars().count() > NAME_MAX_LEN {
        return Err(AdminError::Invalid(format!(
            "label must have at most {NAME_MAX_LEN} characters"
        )));
    }
    no_control_characters(trimmed, "label")?;
    Ok(Some(trimmed.to_owned()))
}

/// Refuses `text` (the setting `what`) if it holds a control character: a
/// name or label is shown, and PostgreSQL refuses a NUL in text outright.
fn no_control_characters(text: &str, what: &str) -> Result<(), AdminError> {
    if text.chars().any(char::is_control) {
        return Err(AdminError::Invalid(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

/// Whether `id` could name anything stored: PostgreSQL refuses a NUL in
/// text outright, so an id with one names nothing and is not looked up.
fn could_be_stored(id: &str) -> bool {
    !id.contains('\0')
}

/// A MIME type as a declared type must name it: `type/subtype`, RFC 6838
/// characters, compared lowercase (commas would break the stored list);
/// returned trimmed and lowercase. `setting` names the list in the error.
fn mime_type(raw: &str, setting: &str) -> Result<String, AdminError> {
    let is_token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    let normalised = raw.trim().to_ascii_lowercase();
    let valid = normalised
        .split_once('/')
        .is_some_and(|(kind, sub)| is_token(kind) && is_token(sub));
    if valid {
        Ok(normalised)
    } else {
        Err(AdminError::Invalid(format!(
            "{setting}: {raw:?} is not a MIME type of the form type/subtype"
        )))
    }
}

/// The types `file_type` may name, without duplicates, in order.
fn allowed_types(types: &[String]) -> Result<Vec<String>, AdminError> {
    let mut list: Vec<String> = Vec::with_capacity(types.len());
    for raw in types {
        let normalised = mime_type(raw, "allowedTypes")?;
        if !list.contains(&normalised) {
            list.push(normalised);
        }
    }
    if list.is_empty() {
        return Err(AdminError::Invalid(
            "allowedTypes must name at least one type (or be null for the default list)".into(),
        ));
    }
    Ok(list)
}

/// The database keeps rates as INTEGER.
fn uploads_per_second(rate: u32) -> Result<u32, AdminError> {
    if (1..=i32::MAX as u32).contains(&rate) {
        Ok(rate)
    } else {
        Err(AdminError::Invalid(
            "uploadsPerSecond must be between 1 and 2147483647".into(),
        ))
    }
}

/// A quota setting: the database keeps it as BIGINT.
fn quota_limit(limit: u64, what: &str) -> Result<u64, AdminError> {
    if (1..=i64::MAX as u64).contains(&limit) {
        Ok(limit)
    } else {
        Err(AdminError::Invalid(format!(
            "{what} must be between 1 and 9223372036854775807"
        )))
    }
}

fn max_bytes_stored(bytes: u64) -> Result<u64, AdminError> {
    quota_limit(bytes, "maxBytesStored")
}

fn max_media(media: u64) -> Result<u64, AdminError> {
    quota_limit(media, "maxMedia")
}

/// Longest phone-number id taken (Meta's have about 15 digits).
const PHONE_NUMBER_ID_MAX_LEN: usize = 64;

fn is_phone_number_id(id: &str) -> bool {
    (1..=PHONE_NUMBER_ID_MAX_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

/// WhatsApp phone-number ids: 1 to 64 ASCII digits each; duplicates count once.
fn phone_number_ids(ids: &[String]) -> Result<Vec<String>, AdminError> {
    let mut set: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        if !is_phone_number_id(id) {
            return Err(AdminError::Invalid(format!(
                "waPhoneNumberIds: {id:?} is not a phone number id (1 to {PHONE_NUMBER_ID_MAX_LEN} digits)"
            )));
        }
        if !set.contains(id) {
            set.push(id.clone());
        }
    }
    Ok(set)
}

/// The WhatsApp surface's types and their size limits: at least one, each
/// type once (compared lowercase), each limit 1 to `i64::MAX` bytes.
fn wa_type_limits(limits: &[TypeLimit]) -> Result<Vec<TypeLimit>, AdminError> {
    let mut checked: Vec<TypeLimit> = Vec::with_capacity(limits.len());
    for limit in limits {
        let mime_type = mime_type(&limit.mime_type, "waTypeLimits")?;
        if checked.iter().any(|seen| seen.mime_type == mime_type) {
            return Err(AdminError::Invalid(format!(
                "waTypeLimits: {mime_type} is listed twice"
            )));
        }
        if !(1..=i64::MAX as u64).contains(&limit.max_bytes) {
            return Err(AdminError::Invalid(format!(
                "waTypeLimits: the limit of {mime_type} must be between 1 and 9223372036854775807 bytes"
            )));
        }
        checked.push(TypeLimit {
            mime_type,
            max_bytes: limit.max_bytes,
        });
    }
    if checked.is_empty() {
        return Err(AdminError::Invalid(
            "waTypeLimits must name at least one type (or be null for Meta's list)".into(),
        ));
    }
    Ok(checked)
}

/// The error for a phone-number id another app has.
fn phone_number_taken(id: &str) -> AdminError {
    AdminError::Conflict(format!("phone number id {id} is mapped to another app"))
}

impl Vault {
    /// Creates an app with the phone-number ids of `new` mapped to it, in
    /// one transaction: `Conflict`, and no app, if another app has one.
    pub async fn create_app(&self, new: NewApp) -> Result<App, AdminError> {
        let defaults = &self.inner.defaults;
        let app = App {
            id: AppId::new(uuid::Uuid::new_v4().to_string()),
            name: name(&new.name)?,
            capi: new.capi,
            retention: retention(new.retention.unwrap_or(defaults.retention))?,
            max_file_bytes: max_file_bytes(new.max_file_bytes.unwrap_or(defaults.max_file_bytes))?,
            allowed_types: new.allowed_types.as_deref().map(allowed_types).transpose()?,
            uploads_per_second: new.uploads_per_second.map(uploads_per_second).transpose()?,
            max_bytes_stored: new.max_bytes_stored.map(max_bytes_stored).transpose()?,
            max_media: new.max_media.map(max_media).transpose()?,
            wa_type_limits: new.wa_type_limits.as_deref().map(wa_type_limits).transpose()?,
            created_at: now_millis(),
        };
        let phone_number_ids = phone_number_ids(&new.wa_phone_number_ids)?;
        match self.inner.meta.insert_app(&app, &phone_number_ids).await? {
            None => Ok(app),
            Some(taken) => Err(phone_number_taken(&taken)),
        }
    }

    /// Live apps, oldest first.
    pub async fn list_apps(&self) -> Result<Vec<App>, StoreError> {
        self.inner.meta.list_apps().await
    }

    pub async fn get_app(&self, id: &AppId) -> Result<App, AdminError> {
        if !could_be_stored(id.as_str()) {
            return Err(AdminError::AppNotFound(id.to_string()));
        }
        self.inner
            .meta
            .get_app(id)
            .await?
            .ok_or_else(|| AdminError::AppNotFound(id.to_string()))
    }

    /// Applies `update` and returns the app as it now is. New settings
    /// apply to uploads from now on; stored media keep their expiry. A
    /// changed quota judges the next reservation, on every replica; usage
    /// stays as it is, so a quota below it refuses uploads until enough is
    /// deleted or expires. A new set of phone-number ids replaces the old
    /// in the same transaction: `Conflict`, and nothing changed, if another
    /// app has one of them.
    pub async fn update_app(&self, id: &AppId, update: AppUpdate) -> Result<App, AdminError> {
        if !could_be_stored(id.as_str()) {
            return Err(AdminError::AppNotFound(id.to_string()));
        }
        // Every value is checked before anything is read: applying them to
        // the app as the transaction reads it can then not fail.
        let name = update.name.as_deref().map(name).transpose()?;
        let retention = update.retention.map(retention).transpose()?;
        let max_file_bytes = update.max_file_bytes.map(max_file_bytes).transpose()?;
        let allowed_types = update
            .allowed_types
            .as_ref()
            .map(|types| types.as_deref().map(allowed_types).transpose())
            .transpose()?;
        let uploads_per_second = update
            .uploads_per_second
            .map(|rate| rate.map(uploads_per_second).transpose())
            .transpose()?;
        let max_bytes_stored = update
            .max_bytes_stored
            .map(|bytes| bytes.map(max_bytes_stored).transpose())
            .transpose()?;
        let max_media = update
            .max_media
            .map(|media| media.map(max_media).transpose())
            .transpose()?;
        let wa_type_limits = update
            .wa_type_limits
            .as_ref()
            .map(|limits| limits.as_deref().map(wa_type_limits).transpose())
            .transpose()?;
        let phone_number_ids = update
            .wa_phone_number_ids
            .as_deref()
            .map(phone_number_ids)
            .transpose()?;
        let change = |app: &mut App| {
            if let Some(name) = name {
                app.name = name;
            }
            if let Some(capi) = update.capi {
                app.capi = capi;
            }
            if let Some(retention) = retention {
                app.retention = retention;
            }
            if let Some(bytes) = max_file_bytes {
                app.max_file_bytes = bytes;
            }
            if let Some(types) = allowed_types {
                app.allowed_types = types;
            }
            if let Some(rate) = uploads_per_second {
                app.uploads_per_second = rate;
            }
            if let Some(bytes) = max_bytes_stored {
                app.max_bytes_stored = bytes;
            }
            if let Some(media) = max_media {
                app.max_media = media;
            }
            if let Some(limits) = wa_type_limits {
                app.wa_type_limits = limits;
            }
        };
        match self
            .inner
            .meta
            .update_app(id, change, phone_number_ids.as_deref(), now_millis())
            .await?
        {
            (AppWrite::Written, Some(app)) => {
                self.inner.tokens.forget_all();
                Ok(app)
            }
            (AppWrite::PhoneNumberTaken(taken), _) => Err(phone_number_taken(&taken)),
            _ => Err(AdminError::AppNotFound(id.to_string())),
        }
    }

    /// The WhatsApp phone-number ids mapped to an app, in order.
    pub async fn phone_number_ids(&self, app_id: &AppId) -> Result<Vec<String>, AdminError> {
        self.get_app(app_id).await?;
        Ok(self.inner.meta.phone_number_ids(app_id).await?)
    }

    /// The WhatsApp phone-number ids of every live app that has any, each
    /// app's in order: `phone_number_ids` for all apps in one query.
    pub async fn all_phone_number_ids(&self) -> Result<HashMap<AppId, Vec<String>>, StoreError> {
        self.inner.meta.all_phone_number_ids().await
    }

    /// The live app a WhatsApp phone-number id is mapped to. Text that
    /// cannot be a phone-number id maps to nothing, unasked.
    pub async fn app_of_phone_number(&self, phone_number_id: &str) -> Result<Option<AppId>, StoreError> {
        if !is_phone_number_id(phone_number_id) {
            return Ok(None);
        }
        self.inner.meta.app_of_phone_number(phone_number_id).await
    }

    /// Deletes an app: its tokens stop working and every one of its media is
    /// crypto-shredded at once, its usage released, in one transaction; the
    /// reaper then removes the blobs. Returns how many media were shredded.
    ///
    /// It runs to its end on a task of its own, as a delete of one medium
    /// does: an operator's client that hangs up once the transaction has
    /// committed must not leave the app's tokens in this replica's cache,
    /// its downloads streaming, or, on SQLite, the shredded keys in the WAL.
    pub async fn delete_app(&self, id: &AppId) -> Result<u64, AdminError> {
        if !could_be_stored(id.as_str()) {
            return Err(AdminError::AppNotFound(id.to_string()));
        }
        let (vault, id) = (self.clone(), id.clone());
        self.to_the_end(async move {
            let shredded = vault
                .inner
                .meta
                .delete_app(&id, now_millis())
                .await?
                .ok_or_else(|| AdminError::AppNotFound(id.to_string()))?;
            vault.inner.tokens.forget_all();
            vault.inner.reads.cancel_app(&id);
            vault.inner.meta.settle_shredded().await;
            Ok(shredded)
        })
        .await
        .unwrap_or(Err(AdminError::Unavailable(StoreError::Stopping)))
    }

    /// What an app stores now, and its usage against the quota that applies.
    pub async fn app_stats(&self, id: &AppId) -> Result<AppStats, AdminError> {
        let app = self.get_app(id).await?;
        let usage = self
            .inner
            .meta
            .app_usage(id, now_millis())
            .await?
            .ok_or_else(|| AdminError::AppNotFound(id.to_string()))?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let defaults = &self.inner.defaults;
        Ok(AppStats {
            media_count: count(usage.readable_media),
            bytes_stored: count(usage.readable_bytes),
            media_used: count(usage.used_media),
            bytes_used: count(usage.used_bytes),
            max_media: app.max_media.or(defaults.max_media),
            max_bytes_stored: app.max_bytes_stored.or(defaults.max_bytes_stored),
        })
    }

    /// Sets every live app's usage to what its media rows hold (see
    /// `docs/operations.md`, Quotas): needed only after replicas of a
    /// version without quotas have run against the database. Safe while
    /// serving. Returns each app with its usage as (media, bytes).
    pub async fn recount_usage(&self) -> Result<Vec<(AppId, u64, u64)>, StoreError> {
        let mut counted = Vec::new();
        for app in self.inner.meta.list_apps().await? {
            if let Some((media, bytes)) = self.inner.meta.recount_usage(&app.id).await? {
                let count = |n: i64| u64::try_from(n).unwrap_or(0);
                counted.push((app.id, count(media), count(bytes)));
            }
        }
        Ok(counted)
    }

    /// Issues a token for `app_id`. The token is returned once; only its
    /// SHA-256 is stored.
    pub async fn issue_token(&self, app_id: &AppId, label: Option<&str>) -> Result<IssuedToken, AdminError> {
        let label = self::label(label)?;
        self.get_app(app_id).await?;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
        let digest = token_digest(&token);
        self.inner
            .meta
            .insert_token(&digest, app_id, label.as_deref(), now_millis())
            .await?;
        Ok(IssuedToken {
            id: token_id_of(&token),
            app_id: app_id.clone(),
            token,
            label,
        })
    }

    pub async fn list_tokens(&self, app_id: &AppId) -> Result<Vec<TokenInfo>, AdminError> {
        self.get_app(app_id).await?;
        Ok(self.inner.meta.list_tokens(app_id).await?)
    }

    /// Revokes a token: requests carrying it fail from now on.
    pub async fn revoke_token(&self, app_id: &AppId, token_id: &TokenId) -> Result<(), AdminError> {
        self.get_app(app_id).await?;
        if could_be_stored(token_id.as_str())
            && self
                .inner
                .meta
                .revoke_token(app_id, token_id, now_millis())
                .await?
        {
            self.inner.tokens.forget_all();
            Ok(())
        } else {
            Err(AdminError::TokenNotFound(token_id.to_string()))
        }
    }

    /// Whether `token_id` is a live (unrevoked) token of `app_id`, asked of
    /// the database each time: a link made with a token ends on every
    /// replica as soon as the token is revoked.
    pub async fn token_is_live(&self, app_id: &AppId, token_id: &TokenId) -> Result<bool, StoreError> {
        if !could_be_stored(token_id.as_str()) {
            return Ok(false);
        }
        self.inner.meta.token_is_live(app_id, token_id).await
    }

    /// The app behind `token`, if the token is live and belongs to `app_id`.
    ///
    /// Only a token of `app_id` is answered from memory. Any other is looked
    /// up in the database for `app_id` alone, so a live token of another
    /// app takes as long to refuse as one never issued: were it answered
    /// from memory, its speed would tell a client that tries tokens
    /// against app ids of its own making which of them are live.
    pub async fn authenticate(&self, app_id: &AppId, token: &str) -> Result<App, AuthError> {
        self.find_token_app(token, Some(app_id)).await
    }

    /// The live app of a live token, from the token alone (where the request
    /// names no app, as on the WhatsApp Cloud surface). The secret is never
    /// compared: it is hashed, and the row is found by its SHA-256 through
    /// an index (or in memory, by the same digest), so the time taken says
    /// nothing about how much of a guess was right. An answer is reused for
    /// up to half a second (`token_cache`): a token revoked, or an app
    /// changed, by another process stops working within that.
    pub async fn authenticate_token(&self, token: &str) -> Result<App, AuthError> {
        self.find_token_app(token, None).await
    }

    /// The live app of the live `token`, which must be `of`'s if given.
    async fn find_token_app(&self, token: &str, of: Option<&AppId>) -> Result<App, AuthError> {
        if token.is_empty() || token.len() > TOKEN_MAX_LEN {
            return Err(AuthError::Failed);
        }
        let digest = token_digest(token);
        if let Some(app) = self.inner.tokens.get(&digest)
            && of.is_none_or(|of| app.id == *of)
        {
            return Ok(app);
        }
        let lookup = self.inner.tokens.begin();
        let app = self
            .inner
            .meta
            .app_for_token(&digest, of, now_millis())
            .await?
            .ok_or(AuthError::Failed)?;
        self.inner.tokens.store(&digest, &app, lookup);
        Ok(app)
    }

    /// The app `token` was issued to, live or revoked; `None` for a token
    /// the database does not know (never issued, or its app deleted, which
    /// deletes its tokens). Asked only of a refused token, to tell whose
    /// client sent it.
    pub async fn issuer_of_token(&self, token: &str) -> Result<Option<AppId>, StoreError> {
        if token.is_empty() || token.len() > TOKEN_MAX_LEN {
            return Ok(None);
        }
        self.inner.meta.issuer_of_token(&token_digest(token)).await
    }

    /// The app a live token belongs to, whichever it is: `authenticate_token`
    /// with a refusal as `None`.
    pub async fn app_for_token(&self, token: &str) -> Result<Option<App>, StoreError> {
        match self.authenticate_token(token).await {
            Ok(app) => Ok(Some(app)),
            Err(AuthError::Failed) => Ok(None),
            Err(AuthError::Unavailable(error)) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::on_each_dialect;

    /// An app's deletion whose caller goes away at any point (an operator's
    /// client that hangs up) still ends once its transaction has begun:
    /// the app's shredded keys leave SQLite's WAL and its tokens stop
    /// working on this replica at once, not when its cache's answers age.
    #[tokio::test]
    async fn an_app_deletion_dropped_mid_way_still_ends() {
        use crate::testing::{capi_app, dropped_after, sqlite_file_vault, wal_len, wal_truncated};

        let dir = tempfile::tempdir().unwrap();
        let vault = sqlite_file_vault(dir.path(), Duration::from_secs(3600)).await;
        for waits in 1..=10 {
            let app = capi_app(&vault).await;
            let token = vault.issue_token(&app.id, None).await.unwrap().token;
            let mut upload = vault.begin_upload(&app, None).await.unwrap();
            upload.write(b"a file of an app that is deleted").await.unwrap();
            upload.finish("text/plain").await.unwrap();
            vault.authenticate(&app.id, &token).await.unwrap();
            assert!(wal_len(dir.path()) > 0);

            dropped_after(vault.delete_app(&app.id), waits).await;
            let what = format!("dropped at wait {waits}: the app is deleted");
            wal_truncated(dir.path(), &what, async || {
                if vault.app_stats(&app.id).await.is_ok() {
                    // Dropped before its transaction began: delete it (or
                    // find that its task has meanwhile).
                    match vault.delete_app(&app.id).await {
                        Ok(_) | Err(AdminError::AppNotFound(_)) => {}
                        Err(error) => panic!("app deletion at wait {waits}: {error}"),
                    }
                }
            })
            .await;
            assert!(
                matches!(vault.authenticate(&app.id, &token).await, Err(AuthError::Failed)),
                "dropped at wait {waits}: the deleted app's token still works"
            );
        }
        vault.close().await;
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    async fn app_with_numbers(vault: &Vault, name: &str, numbers: &[&str]) -> Result<App, AdminError> {
        vault
            .create_app(NewApp {
                name: name.into(),
                capi: true,
                wa_phone_number_ids: strings(numbers),
                ..NewApp::default()
            })
            .await
    }

    fn numbers(numbers: &[&str]) -> AppUpdate {
        AppUpdate {
            wa_phone_number_ids: Some(strings(numbers)),
            ..AppUpdate::default()
        }
    }

    /// Phone-number ids map to one live app each, whichever app: a set is
    /// written with its app and replaced whole, in one transaction, and an
    /// id another app holds refuses the whole change.
    #[tokio::test]
    async fn phone_number_ids_map_to_one_live_app() {
        on_each_dialect(|vault| async move {
            let a = app_with_numbers(&vault, "a", &["222", "111", "222"]).await.unwrap();
            assert_eq!(vault.phone_number_ids(&a.id).await.unwrap(), ["111", "222"]);
            assert_eq!(vault.app_of_phone_number("111").await.unwrap(), Some(a.id.clone()));
            assert_eq!(vault.app_of_phone_number("222").await.unwrap(), Some(a.id.clone()));
            assert_eq!(vault.app_of_phone_number("333").await.unwrap(), None);
            // Text that cannot be an id is not looked up (Postgres refuses a NUL).
            assert_eq!(vault.app_of_phone_number("1\u{0}1").await.unwrap(), None);

            // Another app cannot take a mapped id, at creation or later.
            let taken = app_with_numbers(&vault, "b", &["333", "222"]).await;
            assert!(
                matches!(&taken, Err(AdminError::Conflict(why)) if why == "phone number id 222 is mapped to another app"),
                "{taken:?}"
            );
            assert_eq!(vault.list_apps().await.unwrap().len(), 1, "no app was made");
            assert_eq!(vault.app_of_phone_number("333").await.unwrap(), None, "nothing was mapped");
            let b = app_with_numbers(&vault, "b", &["333"]).await.unwrap();
            let refused = vault
                .update_app(
                    &b.id,
                    AppUpdate {
                        name: Some("renamed".into()),
                        ..numbers(&["444", "111"])
                    },
                )
                .await;
            assert!(matches!(refused, Err(AdminError::Conflict(_))), "{refused:?}");
            assert_eq!(vault.get_app(&b.id).await.unwrap().name, "b", "nothing changed");
            assert_eq!(vault.phone_number_ids(&b.id).await.unwrap(), ["333"]);
            assert_eq!(vault.app_of_phone_number("444").await.unwrap(), None);

            // Replacing a set frees the ids it leaves out.
            vault.update_app(&a.id, numbers(&["222", "555"])).await.unwrap();
            assert_eq!(vault.phone_number_ids(&a.id).await.unwrap(), ["222", "555"]);
            assert_eq!(vault.app_of_phone_number("111").await.unwrap(), None);
            vault.update_app(&b.id, numbers(&["111", "333"])).await.unwrap();
            assert_eq!(vault.app_of_phone_number("111").await.unwrap(), Some(b.id.clone()));
            // An update that names no set leaves it; an empty set clears it.
            vault
                .update_app(
                    &a.id,
                    AppUpdate {
                        capi: Some(false),
                        ..AppUpdate::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!(vault.phone_number_ids(&a.id).await.unwrap(), ["222", "555"]);
            let all = vault.all_phone_number_ids().await.unwrap();
            assert_eq!(all.len(), 2);
            assert_eq!(all[&a.id], ["222", "555"]);
            assert_eq!(all[&b.id], ["111", "333"]);
            vault.update_app(&a.id, numbers(&[])).await.unwrap();
            assert!(vault.phone_number_ids(&a.id).await.unwrap().is_empty());
            assert_eq!(vault.app_of_phone_number("222").await.unwrap(), None);

            // A deleted app's ids map to nothing, and are free at once.
            vault.delete_app(&b.id).await.unwrap();
            assert_eq!(vault.app_of_phone_number("111").await.unwrap(), None);
            assert!(!vault.all_phone_number_ids().await.unwrap().contains_key(&b.id));
            assert!(matches!(vault.phone_number_ids(&b.id).await, Err(AdminError::AppNotFound(_))));
            vault.update_app(&a.id, numbers(&["111"])).await.unwrap();
            assert_eq!(vault.app_of_phone_number("111").await.unwrap(), Some(a.id.clone()));

            assert!(matches!(
                vault.update_app(&a.id, numbers(&["12a"])).await,
                Err(AdminError::Invalid(_))
            ));
            assert!(matches!(
                vault.update_app(&AppId::new("no-such-app"), numbers(&["999"])).await,
                Err(AdminError::AppNotFound(_))
            ));
            assert_eq!(vault.app_of_phone_number("999").await.unwrap(), None);
        })
        .await;
    }

    /// The app of a live token, from the token alone; a revoked token, one
    /// of a deleted app and one never issued are refused alike.
    #[tokio::test]
    async fn a_token_alone_names_its_live_app() {
        on_each_dialect(|vault| async move {
            let a = app_with_numbers(&vault, "a", &[]).await.unwrap();
            let b = app_with_numbers(&vault, "b", &[]).await.unwrap();
            let token_a = vault.issue_token(&a.id, None).await.unwrap();
            let token_b = vault.issue_token(&b.id, None).await.unwrap();
            assert_eq!(vault.authenticate_token(&token_a.token).await.unwrap(), a);
            assert_eq!(vault.authenticate_token(&token_b.token).await.unwrap(), b);
            for refused in ["", "mv_unknown", &"x".repeat(TOKEN_MAX_LEN + 1)] {
                assert!(
                    matches!(vault.authenticate_token(refused).await, Err(AuthError::Failed)),
                    "{refused:?}"
                );
            }
            vault.revoke_token(&a.id, &token_a.id).await.unwrap();
            assert!(matches!(
                vault.authenticate_token(&token_a.token).await,
                Err(AuthError::Failed)
            ));
            vault.delete_app(&b.id).await.unwrap();
            assert!(matches!(
                vault.authenticate_token(&token_b.token).await,
                Err(AuthError::Failed)
            ));
        })
        .await;
    }

    /// Two changes of one app at once, each of other settings, both hold:
    /// each is applied to the app as its transaction reads it, not to a copy
    /// read before (which would write the other's setting back). On
    /// PostgreSQL both wait on a transaction holding the app's row, so that
    /// both have read before either writes, were they to read first.
    #[tokio::test]
    async fn changes_made_at_once_both_hold() {
        on_each_dialect(|vault| async move {
            let a = app_with_numbers(&vault, "a", &[]).await.unwrap();
            let held = match &vault.inner.meta {
                crate::meta::Metadata::Postgres { pool, .. } => {
                    let mut tx = pool.begin().await.unwrap();
                    sqlx::query("SELECT 1 FROM apps WHERE id = $1 FOR NO KEY UPDATE")
                        .bind(&a.id)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    Some(tx)
                }
                crate::meta::Metadata::Sqlite { .. } => None,
            };
            let renamed = tokio::spawn({
                let (vault, id) = (vault.clone(), a.id.clone());
                async move {
                    let update = AppUpdate {
                        name: Some("renamed".into()),
                        ..AppUpdate::default()
                    };
                    vault.update_app(&id, update).await
                }
            });
            let limited = tokio::spawn({
                let (vault, id) = (vault.clone(), a.id.clone());
                async move {
                    let update = AppUpdate {
                        max_media: Some(Some(5)),
                        ..AppUpdate::default()
                    };
                    vault.update_app(&id, update).await
                }
            });
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(tx) = held {
                tx.commit().await.unwrap();
            }
            renamed.await.unwrap().unwrap();
            limited.await.unwrap().unwrap();
            let app = vault.get_app(&a.id).await.unwrap();
            assert_eq!((app.name.as_str(), app.max_media), ("renamed", Some(5)));
        })
        .await;
    }

    /// A live token presented for another app, or for an app id no app
    /// has, is refused by a lookup in the database, as one never issued
    /// is, though its own app's answer is in memory: answered from memory,
    /// it would be refused faster than a token never issued, and so be
    /// told live. (The database is closed here: a lookup shows as its
    /// failure.)
    #[tokio::test]
    async fn a_token_of_another_app_is_refused_by_the_database_not_from_memory() {
        on_each_dialect(|vault| async move {
            let a = app_with_numbers(&vault, "a", &[]).await.unwrap();
            let b = app_with_numbers(&vault, "b", &[]).await.unwrap();
            let token = vault.issue_token(&a.id, None).await.unwrap().token;
            assert_eq!(vault.authenticate(&a.id, &token).await.unwrap(), a);
            assert!(matches!(
                vault.authenticate(&b.id, &token).await,
                Err(AuthError::Failed)
            ));
            vault.inner.meta.close().await;
            assert_eq!(
                vault.authenticate(&a.id, &token).await.unwrap(),
                a,
                "its own app's answer is reused"
            );
            for other in [b.id.clone(), AppId::new("made-up")] {
                let refused = vault.authenticate(&other, &token).await;
                assert!(
                    matches!(refused, Err(AuthError::Unavailable(_))),
                    "{other}: {refused:?}"
                );
            }
        })
        .await;
    }

    /// A token revoked, or an app changed, by another process (another
    /// replica, or the CLI beside an embedded server: here the rows are
    /// written without passing through this vault) stops being honoured
    /// within one second, though answers are reused in between.
    #[tokio::test]
    async fn changes_made_elsewhere_apply_within_one_second() {
        async fn within_one_second(
            vault: &Vault,
            token: &str,
            applied: impl Fn(&Result<App, AuthError>) -> bool,
        ) {
            let changed = std::time::Instant::now();
            loop {
                let answer = vault.authenticate_token(token).await;
                if applied(&answer) {
                    return;
                }
                assert!(
                    changed.elapsed() < Duration::from_secs(1),
                    "still {answer:?} after a second"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        on_each_dialect(|vault| async move {
            let a = app_with_numbers(&vault, "a", &[]).await.unwrap();
            let token = vault.issue_token(&a.id, None).await.unwrap();
            assert!(vault.authenticate_token(&token.token).await.unwrap().capi);

            vault
                .inner
                .meta
                .update_app(&a.id, |app| app.capi = false, None, now_millis())
                .await
                .unwrap();
            within_one_second(
                &vault,
                &token.token,
                |answer| matches!(answer, Ok(app) if !app.capi),
            )
            .await;

            vault
                .inner
                .meta
                .revoke_token(&a.id, &token.id, now_millis())
                .await
                .unwrap();
            within_one_second(&vault, &token.token, |answer| {
                matches!(answer, Err(AuthError::Failed))
            })
            .await;
        })
        .await;
    }

    /// An app's WhatsApp type limits are stored in their order, read back
    /// the same by every path that loads an app, and `None` restores Meta's.
    #[tokio::test]
    async fn whatsapp_type_limits_are_kept_in_order_and_restored() {
        on_each_dialect(|vault| async move {
            let limit = |mime_type: &str, max_bytes| TypeLimit {
                mime_type: mime_type.into(),
                max_bytes,
            };
            let plain = app_with_numbers(&vault, "plain", &[]).await.unwrap();
            assert_eq!(plain.wa_type_limits, None);
            assert_eq!(plain.whatsapp_limit("image/jpeg"), Some(5_242_880));

            let own = vec![
                limit("video/mp4", 1_000),
                limit("image/gif", i64::MAX as u64),
                limit("audio/aac", 2),
            ];
            let app = vault
                .create_app(NewApp {
                    name: "own".into(),
                    capi: true,
                    wa_type_limits: Some(vec![
                        limit("Video/MP4", 1_000),
                        limit("image/gif", i64::MAX as u64),
                        limit("audio/aac", 2),
                    ]),
                    ..NewApp::default()
                })
                .await
                .unwrap();
            assert_eq!(app.wa_type_limits.as_deref(), Some(own.as_slice()));
            let token = vault.issue_token(&app.id, None).await.unwrap().token;
            assert_eq!(vault.get_app(&app.id).await.unwrap(), app);
            assert_eq!(vault.authenticate_token(&token).await.unwrap(), app);
            let listed = vault.list_apps().await.unwrap();
            assert_eq!(listed.iter().find(|listed| listed.id == app.id), Some(&app));
            assert_eq!(app.whatsapp_limits(), own);
            assert_eq!(app.whatsapp_limit("image/jpeg"), None);

            // Left alone by an update that does not name them.
            let renamed = vault
                .update_app(
                    &app.id,
                    AppUpdate {
                        name: Some("renamed".into()),
                        ..AppUpdate::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!(renamed.wa_type_limits.as_deref(), Some(own.as_slice()));
            let replaced = vault
                .update_app(
                    &app.id,
                    AppUpdate {
                        wa_type_limits: Some(Some(vec![limit("image/png", 7)])),
                        ..AppUpdate::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!(vault.get_app(&app.id).await.unwrap(), replaced);
            assert_eq!(replaced.whatsapp_limit("image/png"), Some(7));
            let refused = vault
                .update_app(
                    &app.id,
                    AppUpdate {
                        wa_type_limits: Some(Some(vec![limit("image/png", 0)])),
                        ..AppUpdate::default()
                    },
                )
                .await;
            assert!(matches!(refused, Err(AdminError::Invalid(_))), "{refused:?}");
            let restored = vault
                .update_app(
                    &app.id,
                    AppUpdate {
                        wa_type_limits: Some(None),
                        ..AppUpdate::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!(restored.wa_type_limits, None);
            assert_eq!(vault.get_app(&app.id).await.unwrap().wa_type_limits, None);
            assert_eq!(restored.whatsapp_limit("image/png"), Some(5_242_880));
        })
        .await;
    }

    #[test]
    fn settings_are_checked_and_normalised() {
        assert_eq!(name("  shop  ").unwrap(), "shop");
        assert!(name(" ").is_err());
        assert!(retention(Duration::from_millis(500)).is_err());
        assert_eq!(
            retention(Duration::from_millis(60_500)).unwrap(),
            Duration::from_secs(60)
        );
        assert!(max_file_bytes(0).is_err());
        assert!(max_file_bytes(u64::MAX).is_err());
        assert_eq!(max_file_bytes(i64::MAX as u64).unwrap(), i64::MAX as u64);
        assert_eq!(
            allowed_types(&["Image/PNG".into(), " text/plain".into(), "image/png".into()]).unwrap(),
            ["image/png", "text/plain"]
        );
        for bad in ["png", "image/", "/png", "image/png,text/plain", "image/p ng", ""] {
            assert!(allowed_types(&[bad.into()]).is_err(), "{bad:?}");
        }
        assert!(allowed_types(&[]).is_err());
        assert!(uploads_per_second(0).is_err());
        assert_eq!(uploads_per_second(5).unwrap(), 5);
        assert!(uploads_per_second(u32::MAX).is_err());
        assert!(max_bytes_stored(0).is_err());
        assert!(max_media(i64::MAX as u64 + 1).is_err());
        assert_eq!(max_media(1).unwrap(), 1);
        assert_eq!(max_bytes_stored(i64::MAX as u64).unwrap(), i64::MAX as u64);
    }

    #[test]
    fn phone_number_ids_are_digits_and_count_once() {
        let ids = |list: &[&str]| phone_number_ids(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            ids(&["106540352242922", "1", "106540352242922"]).unwrap(),
            ["106540352242922", "1"]
        );
        assert_eq!(ids(&[]).unwrap(), Vec::<String>::new());
        assert!(ids(&[&"9".repeat(64)]).is_ok());
        for bad in ["", " 1", "1 ", "+4912", "12a", "١٢", &"9".repeat(65)] {
            assert!(
                matches!(ids(&[bad]), Err(AdminError::Invalid(why)) if why.contains("waPhoneNumberIds")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn type_limits_are_checked_and_normalised() {
        let limit = |mime_type: &str, max_bytes| TypeLimit {
            mime_type: mime_type.into(),
            max_bytes,
        };
        assert_eq!(
            wa_type_limits(&[limit(" Image/GIF", 10), limit("image/png", i64::MAX as u64)]).unwrap(),
            [limit("image/gif", 10), limit("image/png", i64::MAX as u64)]
        );
        let refused = |limits: &[TypeLimit], why: &str| match wa_type_limits(limits) {
            Err(AdminError::Invalid(message)) => assert!(message.contains(why), "{message}"),
            other => panic!("{limits:?} gave {other:?}"),
        };
        refused(&[], "at least one type");
        refused(&[limit("png", 1)], "type/subtype");
        refused(&[limit("image/png", 0)], "between 1 and");
        refused(&[limit("image/png", i64::MAX as u64 + 1)], "between 1 and");
        refused(&[limit("image/png", 1), limit("IMAGE/PNG", 2)], "listed twice");
    }
}
