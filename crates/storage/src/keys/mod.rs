//! Key-encryption keys (KEKs) and the per-file data keys (DEKs) they wrap.
//!
//! A KEK lives with a provider, behind one narrow interface
//! ([`KeyProvider`]): wrap and unwrap a data key under a named KEK, tell a
//! KEK's fingerprint, list the KEKs in use, and create or destroy one where
//! the provider can. [`Keyring`] is the one type the rest of the crate
//! sees: it holds the configured provider and sends each call to it, so a
//! new provider (a Vault transit engine, a cloud KMS) is a new variant of
//! [`Provider`] and no caller changes.
//!
//! Whatever the provider, a wrapped data key has the one layout of
//! `docs/format.md` (nonce ‖ AES-256-GCM(KEK, DEK) ‖ tag, bound to the media
//! id and the KEK id by `format::dek_aad`), so media wrapped by one provider
//! are unwrapped by another holding the same key, and a move between
//! providers re-wraps data keys without touching a blob.
//!
//! Key material never reaches a log: `Debug` shows ids only. Each KEK has a
//! fingerprint, recorded in the database when the key is first used, by
//! which a key id given other material is caught at start.

mod configured;

use std::fmt;

use rand::RngCore;
use zeroize::Zeroizing;

use crate::format::DEK_LEN;

pub use configured::ConfiguredKeys;

/// A per-file data key. Zeroed when dropped.
pub struct Dek(Zeroizing<[u8; DEK_LEN]>);

impl Dek {
    /// A fresh random key.
    pub fn generate() -> Dek {
        let mut key = Zeroizing::new([0u8; DEK_LEN]);
        rand::rng().fill_bytes(key.as_mut());
        Dek(key)
    }

    pub fn from_bytes(bytes: [u8; DEK_LEN]) -> Dek {
        Dek(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; DEK_LEN] {
        &self.0
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dek(..)")
    }
}

/// A data key wrapped by a KEK, as stored in the metadata row.
#[derive(Debug, Clone)]
pub struct WrappedDek {
    pub kek_id: String,
    pub bytes: Vec<u8>,
}

/// Why a key configuration, a key operation or a wrapped key was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("crypto.keys is empty: give at least one `id:base64` key")]
    Empty,
    #[error("crypto.keys entry {0} is not of the form `id:base64`")]
    Malformed(usize),
    #[error("crypto.keys: key id {0:?} may only use letters, digits, '-', '_' and '.'")]
    BadId(String),
    #[error("crypto.keys: key {0:?} must be 32 bytes of standard base64")]
    BadKey(String),
    #[error("crypto.keys: key id {0:?} appears twice")]
    Duplicate(String),
    #[error("key {0:?} is not configured")]
    Unknown(String),
    #[error("wrapped data key failed authentication")]
    Integrity,
}

/// What a KEK's fingerprint is a MAC of.
const FINGERPRINT_LABEL: &[u8] = b"mediavault:kek-fingerprint:v1";

/// Refuses a key id that could not stand in associated data, a database
/// row and a log line as it is: at most 64 letters, digits, '-', '_', '.'.
fn check_id(id: &str) -> Result<(), KeyError> {
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if id_ok {
        Ok(())
    } else {
        Err(KeyError::BadId(id.to_owned()))
    }
}

/// What every key provider does. Calls may block on a device or a network
/// (a token's C_Encrypt, an HTTP round trip): an implementation that
/// blocks runs the call off the async executor itself.
pub(crate) trait KeyProvider {
    /// The KEKs in use, as the configuration names them: the active one
    /// first.
    fn ids(&self) -> Vec<&str>;

    /// `dek` wrapped for `media_id` under KEK `kek_id`: the wrapped-key
    /// layout of `docs/format.md`, associated data `format::dek_aad`.
    async fn wrap(&self, media_id: &str, kek_id: &str, dek: &Dek) -> Result<Vec<u8>, KeyError>;

    /// The data key of `media_id` that `wrap` wrapped under `kek_id`.
    async fn unwrap(&self, media_id: &str, kek_id: &str, wrapped: &[u8]) -> Result<Dek, KeyError>;

    /// The fingerprint of KEK `kek_id`: the same key gives the same
    /// fingerprint, other material another, and it tells nothing of the key.
    async fn fingerprint(&self, kek_id: &str) -> Result<String, KeyError>;
}

/// The providers a keyring can hold.
enum Provider {
    /// `crypto.keys`: key material in the configuration.
    Configured(ConfiguredKeys),
}

/// The KEKs of this installation, from one provider; the provider's first
/// key is active, and wraps new data keys.
pub struct Keyring {
    provider: Provider,
}

impl Keyring {
    /// Configured keys: parses `id:base64,id:base64`; the first key is active.
    pub fn parse(spec: &str) -> Result<Keyring, KeyError> {
        Ok(Keyring::configured(ConfiguredKeys::parse(spec)?))
    }

    /// A keyring of configured keys.
    pub fn configured(keys: ConfiguredKeys) -> Keyring {
        Keyring {
            provider: Provider::Configured(keys),
        }
    }

    /// A new `id:base64` line with 32 random bytes, for `keys generate`.
    pub fn generate_line(id: &str) -> String {
        ConfiguredKeys::generate_line(id)
    }

    /// Where the keys in use are configured, for messages that ask an
    /// operator to change them.
    pub fn source(&self) -> &'static str {
        match &self.provider {
            Provider::Configured(_) => "crypto.keys",
        }
    }

    /// The id of the key that wraps new data keys.
    pub fn active_id(&self) -> &str {
        self.ids()[0]
    }

    /// Every key id that unwraps data keys, active first.
    pub fn ids(&self) -> Vec<&str> {
        match &self.provider {
            Provider::Configured(keys) => KeyProvider::ids(keys),
        }
    }

    /// Wraps `dek` for `media_id` under the active key.
    pub async fn wrap(&self, media_id: &str, dek: &Dek) -> Result<WrappedDek, KeyError> {
        let kek_id = self.active_id();
        let bytes = match &self.provider {
            Provider::Configured(keys) => KeyProvider::wrap(keys, media_id, kek_id, dek).await?,
        };
        Ok(WrappedDek {
            kek_id: kek_id.to_owned(),
            bytes,
        })
    }

    /// Unwraps the data key of `media_id`, wrapped under `kek_id`.
    pub async fn unwrap(&self, media_id: &str, kek_id: &str, wrapped: &[u8]) -> Result<Dek, KeyError> {
        match &self.provider {
            Provider::Configured(keys) => KeyProvider::unwrap(keys, media_id, kek_id, wrapped).await,
        }
    }

    /// Every key in use as (id, fingerprint), active first.
    pub async fn fingerprints(&self) -> Result<Vec<(String, String)>, KeyError> {
        let mut fingerprints = Vec::new();
        for id in self.ids() {
            let fingerprint = match &self.provider {
                Provider::Configured(keys) => KeyProvider::fingerprint(keys, id).await?,
            };
            fingerprints.push((id.to_owned(), fingerprint));
        }
        Ok(fingerprints)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("source", &self.source())
            .field("ids", &self.ids())
            .finish()
    }
}
