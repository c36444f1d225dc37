//! The metadata database's URL, parsed once: its scheme picks the dialect,
//! so nothing else looks at the text. A PostgreSQL URL may carry a
//! password, so it stays a secret up to the connection.

use std::str::FromStr;

use secrecy::SecretString;

/// Where the metadata lives.
#[derive(Debug, Clone)]
pub enum DatabaseUrl {
    /// `sqlite:…`: a file, or `:memory:`; it carries no credentials.
    Sqlite(String),
    /// `postgres://…` or `postgresql://…`.
    Postgres(SecretString),
}

/// A `database.url` whose scheme names no supported database.
#[derive(Debug, thiserror::Error)]
#[error(
    "database.url must start with sqlite:// or postgres:// (the value is not shown: it may hold a password)"
)]
pub struct UnsupportedDatabaseUrl;

impl FromStr for DatabaseUrl {
    type Err = UnsupportedDatabaseUrl;

    fn from_str(url: &str) -> Result<DatabaseUrl, UnsupportedDatabaseUrl> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(url.into()))
        } else if url.starts_with("sqlite:") {
            Ok(DatabaseUrl::Sqlite(url.to_owned()))
        } else {
            Err(UnsupportedDatabaseUrl)
        }
    }
}

impl DatabaseUrl {
    /// The database's name, for messages.
    pub fn dialect(&self) -> &'static str {
        match self {
            DatabaseUrl::Sqlite(_) => "SQLite",
            DatabaseUrl::Postgres(_) => "PostgreSQL",
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn the_scheme_picks_the_dialect() {
        assert!(matches!("sqlite://data/m.db".parse(), Ok(DatabaseUrl::Sqlite(_))));
        assert!(matches!("sqlite::memory:".parse(), Ok(DatabaseUrl::Sqlite(_))));
        assert!(matches!(
            "postgres://u:p@h/db".parse(),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!(matches!(
            "postgresql://u@h/db".parse(),
            Ok(DatabaseUrl::Postgres(_))
        ));
        let refused = "mysql://u:hunter2@h/db".parse::<DatabaseUrl>().unwrap_err();
        assert!(refused.to_string().contains("database.url"));
        assert!(!refused.to_string().contains("hunter2"));
    }

    #[test]
    fn debug_hides_the_password() {
        let url: DatabaseUrl = "postgres://u:hunter2@h/db".parse().unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
        let DatabaseUrl::Postgres(secret) = &url else {
            panic!("{url:?}");
        };
        assert_eq!(secret.expose_secret(), "postgres://u:hunter2@h/db", "kept whole");
    }
}
