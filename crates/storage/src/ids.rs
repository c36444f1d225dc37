//! Ids, each kind its own type. An app id cannot be passed where a media or
//! token id is meant, so calls whose ids are in the wrong order do not
//! compile. In the database and in JSON each is plain text.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        // `Default` is the empty id, which names nothing: what is left
        // where an id has been taken out of its owner.
        #[derive(
            Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord,
            sqlx::Type, serde::Serialize, serde::Deserialize,
        )]
        #[sqlx(transparent)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> $name {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// Any text parses: whether it names something is the store's answer.
        impl FromStr for $name {
            type Err = Infallible;

            fn from_str(id: &str) -> Result<$name, Infallible> {
                Ok($name::new(id))
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type! {
    /// An app's id (a UUID when the vault creates it).
    AppId
}

id_type! {
    /// A medium's id: what an upload answers and every read names. New ids
    /// are decimal numbers of 16 to 19 digits (`MediaId::random`); ids
    /// issued before them are UUIDs, and any text still names what it named.
    MediaId
}

/// The smallest media id the vault issues: 10^15, the first of 16 digits.
pub(crate) const MEDIA_ID_MIN: u64 = 1_000_000_000_000_000;
/// The largest media id the vault issues: 10^19 - 1, the last of 19 digits.
pub(crate) const MEDIA_ID_MAX: u64 = 9_999_999_999_999_999_999;

impl MediaId {
    /// A new media id: a number drawn uniformly from `MEDIA_ID_MIN..=MEDIA_ID_MAX`
    /// (about 63 random bits), written in decimal, as Meta and Gupshup write
    /// theirs. Unique only by chance: the intent row's primary key decides,
    /// and an upload whose id is taken draws again.
    pub(crate) fn random<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> MediaId {
        use rand::Rng as _;
        MediaId(rng.random_range(MEDIA_ID_MIN..=MEDIA_ID_MAX).to_string())
    }
}

id_type! {
    /// A token's public id (the first 16 hex digits of its SHA-256), by
    /// which it is listed and revoked; never the secret.
    TokenId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_shows_as_its_text() {
        let id = MediaId::new("abc");
        assert_eq!(id.to_string(), "abc");
        assert_eq!(id.as_str(), "abc");
        assert_eq!(id.into_string(), "abc");
    }

    #[test]
    fn media_ids_are_16_to_19_decimal_digits() {
        let mut rng = rand::rng();
        let mut lengths = std::collections::BTreeSet::new();
        for _ in 0..10_000 {
            let id = MediaId::random(&mut rng).into_string();
            assert!(id.bytes().all(|b| b.is_ascii_digit()), "{id}");
            assert!((16..=19).contains(&id.len()), "{id}");
            assert!(!id.starts_with('0'), "{id}");
            lengths.insert(id.len());
        }
        // Uniform over the range: nine in ten have 19 digits, one in ten 18.
        assert!(lengths.contains(&19) && lengths.contains(&18), "{lengths:?}");
        assert_eq!(MEDIA_ID_MIN.to_string().len(), 16);
        assert_eq!(MEDIA_ID_MAX.to_string().len(), 19);
        assert_eq!((MEDIA_ID_MAX + 1).to_string().len(), 20);
    }
}
