//! The records the vault hands out: apps, tokens and media metadata.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::ids::{AppId, MediaId, TokenId};

/// Milliseconds since the Unix epoch: how every time is stored, so that both
/// metadata dialects compare times the same way.
pub type Millis = i64;

pub fn now_millis() -> Millis {
    Utc::now().timestamp_millis()
}

pub fn to_datetime(ms: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

pub(crate) fn duration_millis(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A messaging backend that stores media here, with its settings checked
/// (the vault refuses settings outside these types' documented ranges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub id: AppId,
    pub name: String,
    /// Only CAPI apps may upload (the Gupshup rule).
    pub capi: bool,
    /// How long new media live: whole seconds, at least one.
    pub retention: Duration,
    /// Largest accepted file: 1 to `i64::MAX`.
    pub max_file_bytes: u64,
    /// Accepted MIME types, lowercase, in the order error messages list
    /// them; `None`: the default list (see `App::allowed_types`).
    pub allowed_types: Option<Vec<String>>,
    /// The app's own upload rate; `None`: the configured default.
    pub uploads_per_second: Option<u32>,
    /// Most bytes the app may hold at once (1 to `i64::MAX`); `None`: the
    /// configured default, if any.
    pub max_bytes_stored: Option<u64>,
    /// Most media the app may hold at once (1 to `i64::MAX`); `None`: the
    /// configured default, if any.
    pub max_media: Option<u64>,
    /// The types the WhatsApp Cloud surface accepts from this app and the
    /// largest file of each, in the order error messages list them; `None`:
    /// Meta's (see `App::whatsapp_limits`). The app's phone-number ids are
    /// not here: they are asked for only where needed
    /// (`Vault::phone_number_ids`), and an app is loaded on every request.
    pub wa_type_limits: Option<Vec<TypeLimit>>,
    pub created_at: Millis,
}

/// The largest file of one MIME type that an app may upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeLimit {
    /// Lowercase `type/subtype`.
    pub mime_type: String,
    /// 1 to `i64::MAX`.
    pub max_bytes: u64,
}

/// Serde for a list of type limits as one object, `{"type/subtype": bytes,
/// …}`, keeping the list's order both ways: how the database column and the
/// admin API write it (use it with `#[serde(with = …)]`, or through a
/// newtype). Reading keeps duplicate keys; the vault refuses them.
pub mod type_limits_object {
    use std::fmt;

    use serde::de::{MapAccess, Visitor};
    use serde::{Deserializer, Serializer};

    use super::TypeLimit;

    pub fn serialize<S: Serializer>(limits: &[TypeLimit], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(limits.iter().map(|limit| (&limit.mime_type, limit.max_bytes)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<TypeLimit>, D::Error> {
        struct InOrder;

        impl<'de> Visitor<'de> for InOrder {
            type Value = Vec<TypeLimit>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of MIME types and their largest sizes in bytes")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<TypeLimit>, A::Error> {
                let mut limits = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((mime_type, max_bytes)) = map.next_entry::<String, u64>()? {
                    limits.push(TypeLimit { mime_type, max_bytes });
                }
                Ok(limits)
            }
        }

        deserializer.deserialize_map(InOrder)
    }
}

/// What an operator gives to create an app; `None` takes the configured default.
#[derive(Debug, Clone, Default)]
pub struct NewApp {
    pub name: String,
    pub capi: bool,
    pub retention: Option<Duration>,
    pub max_file_bytes: Option<u64>,
    /// `None`: the default list (DESIGN §4).
    pub allowed_types: Option<Vec<String>>,
    /// `None`: the configured `limits.uploads_per_second`.
    pub uploads_per_second: Option<u32>,
    /// `None`: the configured `media.max_bytes_stored` (none: no limit).
    pub max_bytes_stored: Option<u64>,
    /// `None`: the configured `media.max_media` (none: no limit).
    pub max_media: Option<u64>,
    /// The WhatsApp phone-number ids whose requests are this app's; each
    /// maps to one app at most.
    pub wa_phone_number_ids: Vec<String>,
    /// `None`: Meta's types and limits (`policy::WHATSAPP_TYPE_LIMITS`).
    pub wa_type_limits: Option<Vec<TypeLimit>>,
}

/// A change to an app: `None` leaves a setting as it is. For the settings
/// that may fall back to a default, `Some(None)` restores it.
#[derive(Debug, Clone, Default)]
pub struct AppUpdate {
    pub name: Option<String>,
    pub capi: Option<bool>,
    pub retention: Option<Duration>,
    pub max_file_bytes: Option<u64>,
    pub allowed_types: Option<Option<Vec<String>>>,
    pub uploads_per_second: Option<Option<u32>>,
    pub max_bytes_stored: Option<Option<u64>>,
    pub max_media: Option<Option<u64>>,
    /// Replaces the app's set of phone-number ids (empty: none).
    pub wa_phone_number_ids: Option<Vec<String>>,
    /// `Some(None)`: Meta's types and limits again.
    pub wa_type_limits: Option<Option<Vec<TypeLimit>>>,
}

/// What an app stores now, and its usage against its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppStats {
    /// Readable media: ready and not expired.
    pub media_count: u64,
    /// Their plaintext bytes.
    pub bytes_stored: u64,
    /// Media counted against the quota: uploads in progress, and stored
    /// media until the reaper removes them (expired ones until its next pass).
    pub media_used: u64,
    /// Their bytes: a stored file's size, an upload's reservation.
    pub bytes_used: u64,
    /// The limits that apply: the app's own, else the configured default;
    /// `None`: no limit.
    pub max_media: Option<u64>,
    pub max_bytes_stored: Option<u64>,
}

/// A freshly issued token: the secret is shown once and never stored. It
/// stays a plain string for the one caller that shows it; `Debug` leaves
/// it out, so a logged or printed `IssuedToken` does not show it.
#[derive(Clone)]
pub struct IssuedToken {
    /// The token's public id, by which it is listed and revoked.
    pub id: TokenId,
    pub app_id: AppId,
    pub token: String,
    pub label: Option<String>,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("id", &self.id)
            .field("app_id", &self.app_id)
            .field("token", &"[REDACTED]")
            .field("label", &self.label)
            .finish()
    }
}

/// A token as it is listed: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenInfo {
    pub id: TokenId,
    pub app_id: AppId,
    pub label: Option<String>,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
    pub last_used_at: Option<Millis>,
}

/// How many live media (not yet shredded) a key-encryption key wraps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    pub kek_id: String,
    pub media: u64,
}

/// What `Vault::rewrap` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewrapCounts {
    /// Data keys now wrapped by the active key that were not before.
    pub rewrapped: u64,
    /// Data keys that could not be unwrapped (their key is not configured,
    /// or the wrapped key fails authentication); left as they were.
    pub failed: u64,
}

/// The database schema as migrations describe it: the versions this binary
/// knows and those the database has applied, each in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaVersions {
    pub known: Vec<i64>,
    pub applied: Vec<i64>,
}

impl SchemaVersions {
    /// The newest version this binary knows.
    pub fn latest_known(&self) -> Option<i64> {
        self.known.last().copied()
    }

    /// The newest version the database has applied; `None` if never migrated.
    pub fn latest_applied(&self) -> Option<i64> {
        self.applied.last().copied()
    }

    /// Known versions the database lacks: its schema is older than this binary's.
    pub fn missing(&self) -> Vec<i64> {
        self.known
            .iter()
            .copied()
            .filter(|v| !self.applied.contains(v))
            .collect()
    }

    /// Applied versions this binary does not know: its schema is newer.
    pub fn unknown(&self) -> Vec<i64> {
        self.applied
            .iter()
            .copied()
            .filter(|v| !self.known.contains(v))
            .collect()
    }
}

/// Metadata of one readable file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaInfo {
    pub id: MediaId,
    pub app_id: AppId,
    pub mime_type: String,
    pub filename: Option<String>,
    pub size_bytes: u64,
    /// Lowercase hex SHA-256 of the plaintext.
    pub sha256: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_leaves_out_an_issued_tokens_secret() {
        let issued = IssuedToken {
            id: TokenId::new("tok_1"),
            app_id: AppId::new("app"),
            token: "mv_s3cret-token-value".into(),
            label: None,
        };
        let shown = format!("{issued:?}");
        assert!(shown.contains("tok_1"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
