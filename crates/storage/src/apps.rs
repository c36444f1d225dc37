//! Apps and their tokens: what an operator manages (through the CLI or the
//! admin API), and how a request's token is checked.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{AdminError, AuthError, StoreError};
use crate::ids::{AppId, TokenId};
use crate::model::{App, AppStats, AppUpdate, IssuedToken, NewApp, TokenInfo, now_millis};
use crate::vault::Vault;

/// Tokens are `mv_` and 43 URL-safe characters (32 random bytes).
const TOKEN_PREFIX: &str = "mv_";
/// Longest token worth hashing; anything longer is refused unread.
const TOKEN_MAX_LEN: usize = 256;
const NAME_MAX_LEN: usize = 200;

fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Retention in whole seconds, from one second to 100 years.
fn retention(retention: Duration) -> Result<Duration, AdminError> {
    let seconds = retention.as_secs();
    if seconds < 1 {
        return Err(AdminError::Invalid(
            "retention must be at least one second".into(),
        ));
    }
    // Expiry times are milliseconds in an i64: keep far from overflow.
    if seconds > 100 * 365 * 86_400 {
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
    Ok(trimmed.to_owned())
}

/// A MIME type as `file_type` must name it: `type/subtype`, RFC 6838
/// characters, compared lowercase. Commas would break the stored list.
fn allowed_types(types: &[String]) -> Result<Vec<String>, AdminError> {
    let is_token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    let mut list: Vec<String> = Vec::with_capacity(types.len());
    for raw in types {
        let normalised = raw.trim().to_ascii_lowercase();
        let valid = normalised
            .split_once('/')
            .is_some_and(|(kind, sub)| is_token(kind) && is_token(sub));
        if !valid {
            return Err(AdminError::Invalid(format!(
                "allowedTypes: {raw:?} is not a MIME type of the form type/subtype"
            )));
        }
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

impl Vault {
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
            created_at: now_millis(),
        };
        self.inner.meta.insert_app(&app).await?;
        Ok(app)
    }

    /// Live apps, oldest first.
    pub async fn list_apps(&self) -> Result<Vec<App>, StoreError> {
        self.inner.meta.list_apps().await
    }

    pub async fn get_app(&self, id: &AppId) -> Result<App, AdminError> {
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
    /// deleted or expires.
    pub async fn update_app(&self, id: &AppId, update: AppUpdate) -> Result<App, AdminError> {
        let mut app = self.get_app(id).await?;
        if let Some(new) = &update.name {
            app.name = name(new)?;
        }
        if let Some(capi) = update.capi {
            app.capi = capi;
        }
        if let Some(new) = update.retention {
            app.retention = retention(new)?;
        }
        if let Some(bytes) = update.max_file_bytes {
            app.max_file_bytes = max_file_bytes(bytes)?;
        }
        if let Some(types) = &update.allowed_types {
            app.allowed_types = types.as_deref().map(allowed_types).transpose()?;
        }
        if let Some(rate) = update.uploads_per_second {
            app.uploads_per_second = rate.map(uploads_per_second).transpose()?;
        }
        if let Some(bytes) = update.max_bytes_stored {
            app.max_bytes_stored = bytes.map(max_bytes_stored).transpose()?;
        }
        if let Some(media) = update.max_media {
            app.max_media = media.map(max_media).transpose()?;
        }
        if !self.inner.meta.update_app(&app).await? {
            return Err(AdminError::AppNotFound(id.to_string()));
        }
        Ok(app)
    }

    /// Deletes an app: its tokens stop working and every one of its media is
    /// crypto-shredded at once, its usage released, in one transaction; the
    /// reaper then removes the blobs. Returns how many media were shredded.
    pub async fn delete_app(&self, id: &AppId) -> Result<u64, AdminError> {
        let shredded = self
            .inner
            .meta
            .delete_app(id, now_millis())
            .await?
            .ok_or_else(|| AdminError::AppNotFound(id.to_string()))?;
        self.inner.reads.cancel_app(id);
        self.inner.meta.settle_shredded().await;
        Ok(shredded)
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
        self.get_app(app_id).await?;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
        let digest = token_digest(&token);
        self.inner
            .meta
            .insert_token(&digest, app_id, label, now_millis())
            .await?;
        Ok(IssuedToken {
            id: TokenId::new(&digest[..16]),
            app_id: app_id.clone(),
            token,
            label: label.map(str::to_owned),
        })
    }

    pub async fn list_tokens(&self, app_id: &AppId) -> Result<Vec<TokenInfo>, AdminError> {
        self.get_app(app_id).await?;
        Ok(self.inner.meta.list_tokens(app_id).await?)
    }

    /// Revokes a token: requests carrying it fail from now on.
    pub async fn revoke_token(&self, app_id: &AppId, token_id: &TokenId) -> Result<(), AdminError> {
        self.get_app(app_id).await?;
        if self
            .inner
            .meta
            .revoke_token(app_id, token_id, now_millis())
            .await?
        {
            Ok(())
        } else {
            Err(AdminError::TokenNotFound(token_id.to_string()))
        }
    }

    /// The app behind `token`, if the token is live and belongs to `app_id`.
    /// The secret is never compared: it is hashed, and the row is found by
    /// its SHA-256 through an index, so the time taken says nothing about
    /// how much of a guess was right.
    pub async fn authenticate(&self, app_id: &AppId, token: &str) -> Result<App, AuthError> {
        if token.is_empty() || token.len() > TOKEN_MAX_LEN {
            return Err(AuthError::Failed);
        }
        match self
            .inner
            .meta
            .app_for_token(&token_digest(token), now_millis())
            .await?
        {
            Some(app) if app.id == *app_id => Ok(app),
            _ => Err(AuthError::Failed),
        }
    }

    /// The app a live token belongs to, whichever it is.
    pub async fn app_for_token(&self, token: &str) -> Result<Option<App>, StoreError> {
        self.inner
            .meta
            .app_for_token(&token_digest(token), now_millis())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
