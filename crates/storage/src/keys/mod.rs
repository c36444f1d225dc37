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
mod epochs;
mod list;
mod pkcs11;

use std::fmt;

use rand::RngCore;
use zeroize::Zeroizing;

use crate::format::DEK_LEN;
use crate::model::Millis;

pub use configured::ConfiguredKeys;
pub use epochs::{EPOCH_LABEL_PREFIX, Epoch, EpochSettings};
pub use list::{KEY_LEN, KeyListError, ListedKey, generate_key_line, parse_key_list};
pub use pkcs11::{Pkcs11Keys, Pkcs11Settings, TokenSelector};

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
    /// An entry of the list whose id is not one; named by its place alone
    /// (see `KeyListError::BadId`).
    #[error("crypto.keys entry {0}: a key id may only use letters, digits, '-', '_' and '.' (at most 64)")]
    BadListedId(usize),
    #[error("crypto.keys: key {0:?} must be 32 bytes of standard base64")]
    BadKey(String),
    #[error("crypto.keys: key id {0:?} appears twice")]
    Duplicate(String),
    #[error("key {0:?} is not configured")]
    Unknown(String),
    #[error("wrapped data key failed authentication")]
    Integrity,
    #[error("crypto.pkcs11.keys: label {0:?} may only use letters, digits, '-', '_' and '.' (at most 64)")]
    BadLabel(String),
    #[error("the token already holds a key labelled {0:?}")]
    Exists(String),
    #[error("key id {0:?} is in crypto.pkcs11.keys and in crypto.keys: an id stands for one key")]
    TwoSources(String),
    /// The provider's settings, or what it holds, are wrong; the message
    /// names the setting.
    #[error("{0}")]
    Provider(String),
    /// The provider cannot be reached now (a token away, a device failing):
    /// the same call may succeed later.
    #[error("key provider unavailable: {0}")]
    Unavailable(String),
    /// The provider does not do this; the message says what does.
    #[error("{0}")]
    Unsupported(&'static str),
}

/// A `crypto.keys` list refused, in the words of its setting.
impl From<KeyListError> for KeyError {
    fn from(error: KeyListError) -> KeyError {
        match error {
            KeyListError::Empty => KeyError::Empty,
            KeyListError::Malformed(entry) => KeyError::Malformed(entry),
            KeyListError::BadId(entry) => KeyError::BadListedId(entry),
            KeyListError::BadKey(id) => KeyError::BadKey(id),
            KeyListError::Duplicate(id) => KeyError::Duplicate(id),
        }
    }
}

impl KeyError {
    /// Whether the provider failed, rather than the key or the wrapped key:
    /// nothing is wrong with what is stored, and a later try may succeed.
    pub fn is_provider_failure(&self) -> bool {
        matches!(self, KeyError::Unavailable(_) | KeyError::Provider(_))
    }
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

    /// Makes KEK `kek_id` in the provider; returns its fingerprint. A
    /// provider whose keys an operator makes elsewhere refuses.
    async fn create(&self, _kek_id: &str) -> Result<String, KeyError> {
        Err(KeyError::Unsupported(
            "this key provider makes no keys: make one with `mediavault keys generate` and configure it",
        ))
    }

    /// Destroys KEK `kek_id` in the provider: what it wrapped can no longer
    /// be unwrapped. A provider whose keys an operator removes elsewhere
    /// refuses.
    async fn destroy(&self, _kek_id: &str) -> Result<(), KeyError> {
        Err(KeyError::Unsupported(
            "this key provider destroys no keys: remove the key from the configuration and its secret store",
        ))
    }

    /// Every KEK the provider holds, in use or not, sorted.
    async fn labels(&self) -> Result<Vec<String>, KeyError> {
        let mut ids: Vec<String> = self.ids().into_iter().map(str::to_owned).collect();
        ids.sort_unstable();
        Ok(ids)
    }
}

/// Which live data keys `keys rewrap` leaves as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WrappedUnder {
    /// Those under this key, the active one.
    Key(String),
    /// Those under an epoch key: labels starting so.
    EpochPrefix(String),
}

/// The providers a keyring can hold.
enum Provider {
    /// `crypto.keys`: key material in the configuration.
    Configured(ConfiguredKeys),
    /// `crypto.pkcs11`: keys in a PKCS#11 token.
    Pkcs11(Pkcs11Keys),
}

/// Runs `$call` with `$keys` bound to the keyring's provider, whichever it
/// is: the one place a new provider is added.
macro_rules! on_provider {
    ($keyring:expr, $keys:ident => $call:expr) => {
        match &$keyring.provider {
            Provider::Configured($keys) => $call,
            Provider::Pkcs11($keys) => $call,
        }
    };
}

/// The KEKs of this installation, from one provider; the provider's first
/// key is active, and wraps new data keys. Beside a provider other than
/// configuration, configured keys may be kept to unwrap what they wrapped
/// until `keys rewrap` has moved it to the provider's active key. With
/// epoch keys, each new data key is wrapped under the KEK of its expiry
/// day instead (`keys/epochs.rs`), made in the provider when first needed.
pub struct Keyring {
    provider: Provider,
    legacy: Option<ConfiguredKeys>,
    epochs: Option<EpochSettings>,
    /// Held while an epoch key is made, so that the uploads that first need
    /// it make one, not one each.
    making: tokio::sync::Mutex<()>,
}

impl Keyring {
    /// Configured keys: parses `id:base64,id:base64`; the first key is active.
    pub fn parse(spec: &str) -> Result<Keyring, KeyError> {
        Ok(Keyring::configured(ConfiguredKeys::parse(spec)?))
    }

    /// A keyring of configured keys.
    pub fn configured(keys: ConfiguredKeys) -> Keyring {
        Keyring::of(Provider::Configured(keys), None, None)
    }

    fn of(provider: Provider, legacy: Option<ConfiguredKeys>, epochs: Option<EpochSettings>) -> Keyring {
        Keyring {
            provider,
            legacy,
            epochs,
            making: tokio::sync::Mutex::new(()),
        }
    }

    /// Keys in a PKCS#11 token, the first of `crypto.pkcs11.keys` active;
    /// `legacy` configured keys only unwrap. An id in both is refused.
    /// With `epochs`, new data keys go under epoch keys the token makes and
    /// destroys, and `crypto.pkcs11.keys` may be empty.
    pub fn pkcs11(
        keys: Pkcs11Keys,
        legacy: Option<ConfiguredKeys>,
        epochs: Option<EpochSettings>,
    ) -> Result<Keyring, KeyError> {
        if KeyProvider::ids(&keys).is_empty() && epochs.is_none() {
            return Err(KeyError::Provider(
                "crypto.pkcs11.keys is empty: name the KEK labels in use, the active one first".into(),
            ));
        }
        if let Some(legacy) = &legacy
            && let Some(both) = legacy.ids().find(|id| KeyProvider::ids(&keys).contains(id))
        {
            return Err(KeyError::TwoSources(both.to_owned()));
        }
        if let Some(epochs) = &epochs {
            epochs.check()?;
            let all = KeyProvider::ids(&keys)
                .into_iter()
                .chain(legacy.iter().flat_map(ConfiguredKeys::ids));
            // Not only a day's label: `keys rewrap` takes every data key
            // under a label of the prefix as moved already (`settled`), so
            // such a key would keep its data keys, and destroying it once
            // retired would lose them.
            if let Some(id) = all.into_iter().find(|id| id.starts_with(&epochs.label_prefix)) {
                return Err(KeyError::Provider(format!(
                    "key {id:?} starts with crypto.epochs.label_prefix {:?}, which marks epoch keys: the reaper \
                     could destroy it, and `keys rewrap` would leave its data keys under it; give it another \
                     label or the epoch keys another prefix",
                    epochs.label_prefix
                )));
            }
        }
        Ok(Keyring::of(Provider::Pkcs11(keys), legacy, epochs))
    }

    /// A new `id:base64` line with 32 random bytes, for `keys generate`.
    pub fn generate_line(id: &str) -> String {
        ConfiguredKeys::generate_line(id)
    }

    /// Where the keys in use are configured, for messages that ask an
    /// operator to change them.
    pub fn source(&self) -> &'static str {
        match (&self.provider, &self.legacy) {
            (Provider::Configured(_), _) => "crypto.keys",
            (Provider::Pkcs11(_), None) => "crypto.pkcs11.keys",
            (Provider::Pkcs11(_), Some(_)) => "crypto.pkcs11.keys (with crypto.keys)",
        }
    }

    /// The id of the key that wraps new data keys; with epoch keys, the one
    /// `rewrap` moves their data keys to when epoch keys are turned off.
    pub fn active_id(&self) -> Option<&str> {
        self.provider_ids().first().copied()
    }

    /// The epoch keys' settings, when they are on.
    pub fn epochs(&self) -> Option<&EpochSettings> {
        self.epochs.as_ref()
    }

    /// The data keys `keys rewrap` leaves where they are: those under an
    /// epoch key when epoch keys are on, else those under the active key.
    pub fn settled(&self) -> WrappedUnder {
        match (&self.epochs, self.active_id()) {
            (Some(epochs), _) => WrappedUnder::EpochPrefix(epochs.label_prefix.clone()),
            (None, Some(active)) => WrappedUnder::Key(active.to_owned()),
            (None, None) => unreachable!("a keyring has an active key or epoch keys"),
        }
    }

    /// The provider's key ids, active first.
    fn provider_ids(&self) -> Vec<&str> {
        on_provider!(self, keys => KeyProvider::ids(keys))
    }

    /// Every key id that unwraps data keys: the provider's, active first,
    /// then any legacy configured keys.
    pub fn ids(&self) -> Vec<&str> {
        let mut ids = self.provider_ids();
        ids.extend(self.legacy.iter().flat_map(ConfiguredKeys::ids));
        ids
    }

    /// The legacy configured keys, when they hold `kek_id` and the
    /// provider does not.
    fn legacy_for(&self, kek_id: &str) -> Option<&ConfiguredKeys> {
        let legacy = self.legacy.as_ref()?;
        (!self.provider_ids().contains(&kek_id) && legacy.ids().any(|id| id == kek_id)).then_some(legacy)
    }

    /// Wraps `dek` for `media_id`, which expires at `expires_at`: under the
    /// KEK of its expiry epoch when epoch keys are on (made now if no
    /// upload has needed it yet), else under the active key.
    pub async fn wrap(&self, media_id: &str, expires_at: Millis, dek: &Dek) -> Result<WrappedDek, KeyError> {
        let kek_id = match &self.epochs {
            Some(epochs) => epochs.label(Epoch::of(expires_at)),
            None => self
                .active_id()
                .expect("a keyring without epoch keys has an active key")
                .to_owned(),
        };
        let wrapped = on_provider!(self, keys => KeyProvider::wrap(keys, media_id, &kek_id, dek).await);
        let bytes = match wrapped {
            Err(KeyError::Unknown(_)) if self.epochs.is_some() => {
                self.make_epoch_key(&kek_id).await?;
                on_provider!(self, keys => KeyProvider::wrap(keys, media_id, &kek_id, dek).await?)
            }
            other => other?,
        };
        Ok(WrappedDek { kek_id, bytes })
    }

    /// Makes epoch key `label` unless it is there already.
    async fn make_epoch_key(&self, label: &str) -> Result<bool, KeyError> {
        let _making = self.making.lock().await;
        match on_provider!(self, keys => KeyProvider::create(keys, label).await) {
            Ok(_) => {
                tracing::info!(label, "epoch key made");
                Ok(true)
            }
            Err(KeyError::Exists(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Makes the epoch keys of today and the days ahead that are not among
    /// `held` (the provider's `labels`, sorted); returns their labels.
    pub async fn make_epoch_keys_ahead(&self, now: Millis, held: &[String]) -> Result<Vec<String>, KeyError> {
        let Some(epochs) = &self.epochs else {
            return Ok(Vec::new());
        };
        let mut made = Vec::new();
        for epoch in epochs.ahead(now) {
            let label = epochs.label(epoch);
            if held.binary_search(&label).is_err() && self.make_epoch_key(&label).await? {
                made.push(label);
            }
        }
        Ok(made)
    }

    /// Every KEK the provider holds, in use or not, sorted.
    pub async fn labels(&self) -> Result<Vec<String>, KeyError> {
        on_provider!(self, keys => KeyProvider::labels(keys).await)
    }

    /// Unwraps the data key of `media_id`, wrapped under `kek_id`.
    pub async fn unwrap(&self, media_id: &str, kek_id: &str, wrapped: &[u8]) -> Result<Dek, KeyError> {
        if let Some(legacy) = self.legacy_for(kek_id) {
            return legacy.unwrap(media_id, kek_id, wrapped);
        }
        on_provider!(self, keys => KeyProvider::unwrap(keys, media_id, kek_id, wrapped).await)
    }

    /// Makes KEK `id` in the provider, where it can; returns its
    /// fingerprint. The key is not in use until the configuration names it.
    pub async fn create(&self, id: &str) -> Result<String, KeyError> {
        on_provider!(self, keys => KeyProvider::create(keys, id).await)
    }

    /// Destroys KEK `id` in the provider, where it can. The caller makes
    /// sure nothing needs it (`Vault::key_needed`): what it wrapped is lost.
    pub async fn destroy(&self, id: &str) -> Result<(), KeyError> {
        on_provider!(self, keys => KeyProvider::destroy(keys, id).await)
    }

    /// Every key in use as (id, fingerprint), active first.
    pub async fn fingerprints(&self) -> Result<Vec<(String, String)>, KeyError> {
        let mut fingerprints = Vec::new();
        for id in self.ids() {
            let fingerprint = match self.legacy_for(id) {
                Some(legacy) => KeyProvider::fingerprint(legacy, id).await?,
                None => on_provider!(self, keys => KeyProvider::fingerprint(keys, id).await?),
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
