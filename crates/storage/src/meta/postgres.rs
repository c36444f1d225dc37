//! Postgres: production metadata, shared by every replica.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::error::StoreError;

pub(super) async fn connect(url: &str) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url)?;
    Ok(PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?)
}

pub(super) async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut migrator = sqlx::migrate!("../../migrations/postgres");
    // Old and new replicas run side by side during a rolling deploy: an old
    // one must not refuse a database that a newer one already migrated.
    migrator.set_ignore_missing(true);
    migrator.run(pool).await?;
    Ok(())
}
