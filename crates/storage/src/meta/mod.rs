//! The metadata store: apps, tokens and media rows, in SQLite (embedded) or
//! Postgres (production). Both dialects run the same SQL wherever they can
//! (sqlx binds `$1` placeholders on both); where they differ, the dialect's
//! own file says how.
//!
//! Wrapped data keys live in `media_keys`, one narrow row per live medium,
//! apart from the wide `media` rows: crypto-shredding deletes that row, in
//! the same transaction that marks the medium `deleting`, and a table this
//! narrow is cheap to rewrite, which is what finally removes a shredded key
//! from Postgres's pages (see `rewrite_key_table`).
//!
//! Queries live by subject: `apps`, `tokens`, `media`, `reaping`, `keys`
//! and `phone_numbers` (apps' WhatsApp phone-number ids); `state` holds the
//! media states and the shred statement they all share, `usage` the quota
//! counters every change of a media row keeps.
//! This module owns every row type it returns and imports nothing of the
//! vault above it.

#[macro_use]
mod state;
#[macro_use]
mod usage;
mod group_commit;
mod postgres;
mod sqlite;

use sqlx::{PgPool, SqlitePool};

use secrecy::ExposeSecret;

use crate::database_url::DatabaseUrl;
use crate::error::StoreError;

pub(crate) enum Metadata {
    /// `relaxed` commits without waiting for the WAL flush: only for writes a
    /// crash may lose without losing anything (see `insert_uploading` and
    /// `postgres::mark_ready`).
    Postgres { pool: PgPool, relaxed: PgPool },
    /// `writes` takes the upload path's writes (see `group_commit`);
    /// `wal_truncations` makes shreds final in the files.
    Sqlite {
        pool: SqlitePool,
        writes: group_commit::GroupCommit,
        wal_truncations: sqlite::WalTruncations,
    },
}

/// Runs `$body` with `$pool` bound to whichever pool this store uses. The
/// body is compiled once per dialect, so shared SQL is written once; it must
/// yield the same type in both (for `execute`, the count of rows affected).
macro_rules! on_pool {
    ($meta:expr, $pool:ident => $body:expr) => {
        match $meta {
            Metadata::Postgres { pool: $pool, .. } => $body,
            Metadata::Sqlite { pool: $pool, .. } => $body,
        }
    };
}

/// As `on_pool!`, for a write: on SQLite the body runs in a turn of its
/// own between the upload path's batches (see `group_commit`), so that
/// every writer of the process queues in one fair line.
macro_rules! on_write_pool {
    ($meta:expr, $pool:ident => $body:expr) => {
        on_write_pool!(@postgres pool, $meta, $pool => $body)
    };
    (@postgres $postgres:ident, $meta:expr, $pool:ident => $body:expr) => {
        match $meta {
            Metadata::Postgres { $postgres: $pool, .. } => $body,
            Metadata::Sqlite { pool: $pool, writes, .. } => {
                let _turn = writes.turn().await;
                $body
            }
        }
    };
}

/// As `on_write_pool!`, on the pool for writes that a crash may lose
/// without losing anything: Postgres's `relaxed` one, SQLite's only one.
macro_rules! on_relaxed_pool {
    ($meta:expr, $pool:ident => $body:expr) => {
        on_write_pool!(@postgres relaxed, $meta, $pool => $body)
    };
}

#[macro_use]
mod phone_numbers;
mod apps;
mod keys;
mod media;
mod reaping;
mod tokens;

pub(crate) use apps::{AppWrite, saturating_i64};
pub(crate) use keys::Rewrapped;
pub(crate) use media::{Intent, MediaRow, NewMedia, ReadyMedia};
pub(crate) use reaping::Claimed;
pub use reaping::ReaperLock;
pub(crate) use state::MediaState;
pub(crate) use usage::{Growth, QuotaDefaults};

impl Metadata {
    /// Opens the store `url` names.
    pub(crate) async fn connect(url: &DatabaseUrl) -> Result<Metadata, StoreError> {
        match url {
            DatabaseUrl::Postgres(url) => {
                let url = url.expose_secret();
                Ok(Metadata::Postgres {
                    pool: postgres::connect(url).await?,
                    relaxed: postgres::connect_relaxed(url).await?,
                })
            }
            DatabaseUrl::Sqlite(url) => {
                let pool = sqlite::connect(url).await?;
                Ok(Metadata::Sqlite {
                    writes: group_commit::GroupCommit::start(&pool).await?,
                    wal_truncations: sqlite::WalTruncations::default(),
                    pool,
                })
            }
        }
    }

    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Metadata::Postgres { pool, .. } => postgres::migrate(pool).await,
            Metadata::Sqlite { pool, .. } => sqlite::migrate(pool).await,
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|r| r.rows_affected()))?;
        if let Metadata::Sqlite { writes, .. } = self {
            writes.check()?;
        }
        Ok(())
    }

    /// The database server's clock, where the database is a server all
    /// replicas share (Postgres); `None` for SQLite, on the service's host.
    pub(crate) async fn database_now(&self) -> Result<Option<crate::model::Millis>, StoreError> {
        match self {
            Metadata::Postgres { pool, .. } => {
                const SQL: &str = "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";
                Ok(Some(sqlx::query_scalar(SQL).fetch_one(pool).await?))
            }
            Metadata::Sqlite { .. } => Ok(None),
        }
    }

    /// This installation's id, made by the migration that added it.
    pub(crate) async fn installation_id(&self) -> Result<String, StoreError> {
        Ok(on_pool!(self, pool => sqlx::query_scalar("SELECT id FROM installation").fetch_one(pool).await)?)
    }

    pub(crate) async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
        match self {
            Metadata::Postgres { relaxed, .. } => relaxed.close().await,
            Metadata::Sqlite { writes, .. } => writes.close().await,
        }
    }

    /// The schema versions this build knows (in order) and those the
    /// database has applied (in order; none on a database never migrated).
    pub(crate) async fn schema_versions(&self) -> Result<(Vec<i64>, Vec<i64>), StoreError> {
        const APPLIED: &str = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
        let (migrator, tracked) = match self {
            Metadata::Postgres { pool, .. } => {
                (postgres::migrator(), postgres::migrations_tracked(pool).await?)
            }
            Metadata::Sqlite { pool, .. } => (sqlite::migrator(), sqlite::migrations_tracked(pool).await?),
        };
        let known = migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| m.version)
            .collect();
        let applied = if tracked {
            on_pool!(self, pool => sqlx::query_scalar(APPLIED).fetch_all(pool).await)?
        } else {
            Vec::new()
        };
        Ok((known, applied))
    }
}
