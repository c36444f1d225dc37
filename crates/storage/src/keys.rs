//! Key-encryption keys (KEKs) from configuration, and the per-file data keys
//! (DEKs) they wrap; and the `id:base64` key-list form that configuration
//! gives keys in, for KEKs and for the keys that sign links alike. Key
//! material never reaches a log: `Debug` shows ids only.
//! Each KEK has a fingerprint, recorded in the database when the key is first
//! used, by which a key id given other material is caught at start.

use std::fmt;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::format::{DEK_LEN, TAG_LEN, WRAPPED_DEK_LEN, dek_aad};

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

/// Why a key list (`id:base64,id:base64`) was refused. The messages leave
/// out which setting held the list: the caller's error names it.
#[derive(Debug, thiserror::Error)]
pub enum KeyListError {
    #[error("no key given: give at least one `id:base64` key")]
    Empty,
    #[error("entry {0} is not of the form `id:base64`")]
    Malformed(usize),
    #[error("key id {0:?} may only use letters, digits, '-', '_' and '.'")]
    BadId(String),
    #[error("key {0:?} must be {KEY_LEN} bytes of standard base64")]
    BadKey(String),
    #[error("key id {0:?} appears twice")]
    Duplicate(String),
}

/// Why a key configuration or a wrapped key was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("crypto.keys: {0}")]
    List(#[from] KeyListError),
    #[error("key {0:?} is not configured")]
    Unknown(String),
    #[error("wrapped data key failed authentication")]
    Integrity,
}

/// Bytes of every key in a key list: KEKs (AES-256) and link keys (HMAC-SHA256).
pub const KEY_LEN: usize = 32;

/// One entry of a key list: its id and its material (zeroed when dropped).
pub struct ListedKey {
    pub id: String,
    pub material: Zeroizing<[u8; KEY_LEN]>,
}

/// Parses a key list as configuration writes one (`crypto.keys`,
/// `links.keys`): `id:base64` entries separated by commas or newlines, each
/// key 32 bytes of standard base64, each id of at most 64 letters, digits,
/// '-', '_' or '.' and given once. The order is kept: the first is active.
pub fn parse_key_list(spec: &str) -> Result<Vec<ListedKey>, KeyListError> {
    let mut keys: Vec<ListedKey> = Vec::new();
    for (index, entry) in spec.split([',', '\n']).map(str::trim).enumerate() {
        if entry.is_empty() {
            continue;
        }
        let (id, material) = entry.split_once(':').ok_or(KeyListError::Malformed(index + 1))?;
        let (id, material) = (id.trim(), material.trim());
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !id_ok {
            return Err(KeyListError::BadId(id.to_owned()));
        }
        let bytes = Zeroizing::new(
            STANDARD
                .decode(material)
                .map_err(|_| KeyListError::BadKey(id.to_owned()))?,
        );
        let mut material = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return Err(KeyListError::BadKey(id.to_owned()));
        }
        material.copy_from_slice(&bytes);
        if keys.iter().any(|k| k.id == id) {
            return Err(KeyListError::Duplicate(id.to_owned()));
        }
        keys.push(ListedKey {
            id: id.to_owned(),
            material,
        });
    }
    if keys.is_empty() {
        return Err(KeyListError::Empty);
    }
    Ok(keys)
}

/// A new key-list entry, `id:base64`, with 32 random bytes.
pub fn generate_key_line(id: &str) -> String {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    rand::rng().fill_bytes(key.as_mut());
    format!("{id}:{}", STANDARD.encode(key.as_slice()))
}

struct Kek {
    id: String,
    cipher: Aes256Gcm,
    fingerprint: String,
}

/// What a KEK's fingerprint is a MAC of.
const FINGERPRINT_LABEL: &[u8] = b"mediavault:kek-fingerprint:v1";

/// The first 16 bytes, in lowercase hex, of HMAC-SHA256 under the key of a
/// fixed label: the same key always gives the same fingerprint, another key
/// a different one, and the fingerprint says nothing about the key.
fn fingerprint(key: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(FINGERPRINT_LABEL);
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// The configured KEKs; the first is the active one, used for new files.
pub struct Keyring {
    keys: Vec<Kek>,
}

/// A data key wrapped by a KEK, as stored in the metadata row.
#[derive(Debug, Clone)]
pub struct WrappedDek {
    pub kek_id: String,
    pub bytes: Vec<u8>,
}

impl Keyring {
    /// Parses `id:base64,id:base64` (see `parse_key_list`); the first key is active.
    pub fn parse(spec: &str) -> Result<Keyring, KeyError> {
        let keys = parse_key_list(spec)?
            .into_iter()
            .map(|key| Kek {
                cipher: Aes256Gcm::new_from_slice(key.material.as_slice()).expect("AES-256 takes 32 bytes"),
                fingerprint: fingerprint(key.material.as_slice()),
                id: key.id,
            })
            .collect();
        Ok(Keyring { keys })
    }

    /// A new `id:base64` line with 32 random bytes, for `keys generate`.
    pub fn generate_line(id: &str) -> String {
        generate_key_line(id)
    }

    /// The id of the key that wraps new data keys.
    pub fn active_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Every configured key id, active first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Every configured key as (id, fingerprint), active first.
    pub fn fingerprints(&self) -> impl Iterator<Item = (&str, &str)> {
        self.keys.iter().map(|k| (k.id.as_str(), k.fingerprint.as_str()))
    }

    /// Wraps `dek` for `media_id` under the active key.
    pub fn wrap(&self, media_id: &str, dek: &Dek) -> WrappedDek {
        let kek = &self.keys[0];
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let mut bytes = Vec::with_capacity(WRAPPED_DEK_LEN);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(dek.as_bytes());
        let tag = kek
            .cipher
            .encrypt_inout_detached(
                &Nonce::from(nonce),
                &dek_aad(media_id, &kek.id),
                (&mut bytes[12..]).into(),
            )
            .expect("AES-GCM encrypts 32 bytes");
        bytes.extend_from_slice(&tag);
        WrappedDek {
            kek_id: kek.id.clone(),
            bytes,
        }
    }

    /// Unwraps the data key of `media_id`.
    pub fn unwrap(&self, media_id: &str, kek_id: &str, wrapped: &[u8]) -> Result<Dek, KeyError> {
        let kek = self
            .keys
            .iter()
            .find(|k| k.id == kek_id)
            .ok_or_else(|| KeyError::Unknown(kek_id.to_owned()))?;
        if wrapped.len() != WRAPPED_DEK_LEN {
            return Err(KeyError::Integrity);
        }
        let nonce: [u8; 12] = wrapped[..12].try_into().expect("length checked");
        let tag: [u8; TAG_LEN] = wrapped[12 + DEK_LEN..].try_into().expect("length checked");
        let mut key = Zeroizing::new([0u8; DEK_LEN]);
        key.copy_from_slice(&wrapped[12..12 + DEK_LEN]);
        kek.cipher
            .decrypt_inout_detached(
                &Nonce::from(nonce),
                &dek_aad(media_id, kek_id),
                key.as_mut_slice().into(),
                &tag.into(),
            )
            .map_err(|_| KeyError::Integrity)?;
        Ok(Dek(key))
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str) -> Keyring {
        Keyring::parse(spec).unwrap()
    }

    fn line(id: &str) -> String {
        Keyring::generate_line(id)
    }

    #[test]
    fn wrap_round_trips_under_the_active_key() {
        let keys = ring(&format!("new:{},old:{}", &line("x")[2..], &line("y")[2..]));
        assert_eq!(keys.active_id(), "new");
        let dek = Dek::generate();
        let wrapped = keys.wrap("m1", &dek);
        assert_eq!(wrapped.kek_id, "new");
        assert_eq!(wrapped.bytes.len(), WRAPPED_DEK_LEN);
        let back = keys.unwrap("m1", "new", &wrapped.bytes).unwrap();
        assert_eq!(back.as_bytes(), dek.as_bytes());
    }

    #[test]
    fn wrapped_key_is_bound_to_media_id_and_key_id() {
        let (a, b) = (line("a"), line("b"));
        let keys = ring(&format!("{a},{b}"));
        let wrapped = keys.wrap("m1", &Dek::generate());
        assert!(matches!(
            keys.unwrap("m2", "a", &wrapped.bytes),
            Err(KeyError::Integrity)
        ));
        assert!(matches!(
            keys.unwrap("m1", "b", &wrapped.bytes),
            Err(KeyError::Integrity)
        ));
        assert!(matches!(
            keys.unwrap("m1", "zz", &wrapped.bytes),
            Err(KeyError::Unknown(_))
        ));
        let mut flipped = wrapped.bytes.clone();
        flipped[20] ^= 1;
        assert!(matches!(
            keys.unwrap("m1", "a", &flipped),
            Err(KeyError::Integrity)
        ));
        assert!(matches!(
            keys.unwrap("m1", "a", &wrapped.bytes[..59]),
            Err(KeyError::Integrity)
        ));
    }

    #[test]
    fn parse_refuses_bad_specs_by_name() {
        use KeyListError::*;
        assert!(matches!(Keyring::parse(""), Err(KeyError::List(Empty))));
        assert!(matches!(
            Keyring::parse("nocolon"),
            Err(KeyError::List(Malformed(1)))
        ));
        assert!(matches!(Keyring::parse("a:AAAA"), Err(KeyError::List(BadKey(id))) if id == "a"));
        assert!(matches!(
            Keyring::parse("a b:AAAA"),
            Err(KeyError::List(BadId(_)))
        ));
        let a = line("a");
        assert!(matches!(
            Keyring::parse(&format!("{a},{a}")),
            Err(KeyError::List(Duplicate(_)))
        ));
        let error = Keyring::parse("nocolon").err().unwrap().to_string();
        assert_eq!(error, "crypto.keys: entry 1 is not of the form `id:base64`");
    }

    #[test]
    fn fingerprints_identify_the_material_not_the_id() {
        // Pinned: HMAC-SHA256(key, "mediavault:kek-fingerprint:v1")[..16].
        let zeros = ring("a:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        let counting = ring("b:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
        assert_eq!(
            zeros.fingerprints().collect::<Vec<_>>(),
            [("a", "36b5c65fe0eb87bdf6f2a5830fb1e4fc")]
        );
        assert_eq!(
            counting.fingerprints().collect::<Vec<_>>(),
            [("b", "f6bbc25dfa19a6fdef24acf561fa407f")]
        );
        let spec = line("k1");
        let (same, other) = (ring(&spec), ring(&line("k1")));
        let of = |keys: &Keyring| keys.fingerprints().next().unwrap().1.to_owned();
        assert_eq!(of(&same), of(&ring(&spec)), "the same key, the same fingerprint");
        assert_ne!(of(&same), of(&other), "the same id with other material differs");
        assert!(!of(&same).contains(&spec[3..]));
    }

    #[test]
    fn debug_never_shows_key_material() {
        let spec = line("k1");
        let shown = format!("{:?}", ring(&spec));
        assert!(shown.contains("k1"));
        assert!(!shown.contains(&spec[3..]));
    }
}
