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
    /// A medium's id: what an upload answers and every read names.
    MediaId
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
}
