//! The `id:base64` key-list form in which configuration gives keys, for
//! KEKs (`crypto.keys`) and for the keys that sign links (`links.keys`)
//! alike.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use zeroize::Zeroizing;

/// Why a key list (`id:base64,id:base64`) was refused. The messages leave
/// out which setting held the list: the caller's error names it.
#[derive(Debug, thiserror::Error)]
pub enum KeyListError {
    #[error("no key given: give at least one `id:base64` key")]
    Empty,
    #[error("entry {0} is not of the form `id:base64`")]
    Malformed(usize),
    /// Named by its entry, never quoted: an entry written the wrong way
    /// round (`base64:id`) has the key where the id should be.
    #[error("entry {0}: a key id may only use letters, digits, '-', '_' and '.' (at most 64)")]
    BadId(usize),
    #[error("key {0:?} must be {KEY_LEN} bytes of standard base64")]
    BadKey(String),
    #[error("key id {0:?} appears twice")]
    Duplicate(String),
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
            return Err(KeyListError::BadId(index + 1));
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
