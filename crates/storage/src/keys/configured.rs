//! KEKs from configuration (`crypto.keys`): key material held in memory,
//! wrapping and unwrapping with AES-256-GCM here, without waiting on
//! anything. Each key's fingerprint is a MAC under the key itself.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{Dek, FINGERPRINT_LABEL, KeyError, KeyProvider, WrappedDek, generate_key_line, parse_key_list};
use crate::format::{DEK_LEN, TAG_LEN, WRAPPED_DEK_LEN, dek_aad};

struct Kek {
    id: String,
    /// AES-256-GCM under the key; each wrap draws a random nonce.
    cipher: LessSafeKey,
    fingerprint: String,
}

/// The first 16 bytes, in lowercase hex, of HMAC-SHA256 under the key of a
/// fixed label: the same key always gives the same fingerprint, another key
/// a different one, and the fingerprint says nothing about the key.
fn fingerprint(key: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(FINGERPRINT_LABEL);
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// The configured KEKs; the first is the active one, used for new files.
pub struct ConfiguredKeys {
    keys: Vec<Kek>,
}

impl ConfiguredKeys {
    /// Parses `id:base64,id:base64` (see `parse_key_list`); the first key is active.
    pub fn parse(spec: &str) -> Result<ConfiguredKeys, KeyError> {
        let keys = parse_key_list(spec)?
            .into_iter()
            .map(|key| Kek {
                cipher: LessSafeKey::new(
                    UnboundKey::new(&AES_256_GCM, key.material.as_slice()).expect("AES-256 takes 32 bytes"),
                ),
                fingerprint: fingerprint(key.material.as_slice()),
                id: key.id,
            })
            .collect();
        Ok(ConfiguredKeys { keys })
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

    fn find(&self, kek_id: &str) -> Result<&Kek, KeyError> {
        self.keys
            .iter()
            .find(|k| k.id == kek_id)
            .ok_or_else(|| KeyError::Unknown(kek_id.to_owned()))
    }

    /// Wraps `dek` for `media_id` under the active key.
    pub fn wrap(&self, media_id: &str, dek: &Dek) -> WrappedDek {
        let kek = &self.keys[0];
        WrappedDek {
            kek_id: kek.id.clone(),
            bytes: wrap_under(kek, media_id, dek),
        }
    }

    /// Unwraps the data key of `media_id`.
    pub fn unwrap(&self, media_id: &str, kek_id: &str, wrapped: &[u8]) -> Result<Dek, KeyError> {
        let kek = self.find(kek_id)?;
        if wrapped.len() != WRAPPED_DEK_LEN {
            return Err(KeyError::Integrity);
        }
        let nonce: [u8; 12] = wrapped[..12].try_into().expect("length checked");
        // Key and tag, opened in place; only the key is kept, zeroized.
        let mut sealed = Zeroizing::new([0u8; DEK_LEN + TAG_LEN]);
        sealed.copy_from_slice(&wrapped[12..]);
        kek.cipher
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(dek_aad(media_id, kek_id)),
                sealed.as_mut_slice(),
            )
            .map_err(|_| KeyError::Integrity)?;
        let mut key = Zeroizing::new([0u8; DEK_LEN]);
        key.copy_from_slice(&sealed[..DEK_LEN]);
        Ok(Dek(key))
    }
}

/// `dek` wrapped for `media_id` under `kek`: nonce ‖ ciphertext ‖ tag.
fn wrap_under(kek: &Kek, media_id: &str, dek: &Dek) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let mut bytes = Vec::with_capacity(WRAPPED_DEK_LEN);
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(dek.as_bytes());
    let tag = kek
        .cipher
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(dek_aad(media_id, &kek.id)),
            &mut bytes[12..],
        )
        .expect("AES-GCM encrypts 32 bytes");
    bytes.extend_from_slice(tag.as_ref());
    bytes
}

impl KeyProvider for ConfiguredKeys {
    fn ids(&self) -> Vec<&str> {
        ConfiguredKeys::ids(self).collect()
    }

    async fn wrap(&self, media_id: &str, kek_id: &str, dek: &Dek) -> Result<Vec<u8>, KeyError> {
        Ok(wrap_under(self.find(kek_id)?, media_id, dek))
    }

    async fn unwrap(&self, media_id: &str, kek_id: &str, wrapped: &[u8]) -> Result<Dek, KeyError> {
        ConfiguredKeys::unwrap(self, media_id, kek_id, wrapped)
    }

    async fn fingerprint(&self, kek_id: &str) -> Result<String, KeyError> {
        Ok(self.find(kek_id)?.fingerprint.clone())
    }
}

impl fmt::Debug for ConfiguredKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfiguredKeys")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str) -> ConfiguredKeys {
        ConfiguredKeys::parse(spec).unwrap()
    }

    fn line(id: &str) -> String {
        ConfiguredKeys::generate_line(id)
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
        assert!(matches!(ConfiguredKeys::parse(""), Err(KeyError::Empty)));
        assert!(matches!(
            ConfiguredKeys::parse("nocolon"),
            Err(KeyError::Malformed(1))
        ));
        assert!(matches!(ConfiguredKeys::parse("a:AAAA"), Err(KeyError::BadKey(id)) if id == "a"));
        assert!(matches!(
            ConfiguredKeys::parse("a b:AAAA"),
            Err(KeyError::BadListedId(1))
        ));
        // An entry written the wrong way round puts the key where the id
        // goes: the refusal names the entry, never the key.
        let key = line("k1").split_once(':').unwrap().1.to_owned();
        let reversed = ConfiguredKeys::parse(&format!("{},{key}:k1", line("k0"))).unwrap_err();
        assert!(matches!(reversed, KeyError::BadListedId(2)), "{reversed:?}");
        assert!(!reversed.to_string().contains(&key), "{reversed}");
        assert!(!format!("{reversed:?}").contains(&key), "{reversed:?}");
        let a = line("a");
        assert!(matches!(
            ConfiguredKeys::parse(&format!("{a},{a}")),
            Err(KeyError::Duplicate(_))
        ));
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
        let of = |keys: &ConfiguredKeys| keys.fingerprints().next().unwrap().1.to_owned();
        assert_eq!(of(&same), of(&ring(&spec)), "the same key, the same fingerprint");
        assert_ne!(of(&same), of(&other), "the same id with other material differs");
        assert!(!of(&same).contains(&spec[3..]));
    }

    #[tokio::test]
    async fn configured_keys_are_neither_made_nor_destroyed_by_the_keyring() {
        let keyring = crate::keys::Keyring::parse(&line("k1")).unwrap();
        assert!(matches!(
            keyring.create("k2").await,
            Err(KeyError::Unsupported(_))
        ));
        assert!(matches!(
            keyring.destroy("k1").await,
            Err(KeyError::Unsupported(_))
        ));
        assert_eq!(keyring.ids(), ["k1"], "nothing changed");
    }

    #[test]
    fn debug_never_shows_key_material() {
        let spec = line("k1");
        let shown = format!("{:?}", ring(&spec));
        assert!(shown.contains("k1"));
        assert!(!shown.contains(&spec[3..]));
    }
}
