//! Fresh stores for this crate's own tests, in both metadata dialects: a
//! SQLite file in a temporary directory, and a new PostgreSQL database on
//! the server `MEDIAVAULT_TEST_DATABASE_URL` names (dropped after). Blobs
//! stay in memory: these tests are about rows. Keys are configured, or,
//! for epoch keys, in the SoftHSM2 token `scripts/test-services.sh` sets up
//! (`MEDIAVAULT_TEST_PKCS11_*`), under a label prefix of the test's own.

use std::time::Duration;

use futures::TryStreamExt;
use mediavault_test_support::services::test_env;
use sqlx::Connection;

use crate::ids::MediaId;
use crate::keys::{EpochSettings, Pkcs11Keys, Pkcs11Settings, TokenSelector};
use crate::model::{App, NewApp};
use crate::{BlobConfig, DatabaseUrl, Defaults, Keyring, Vault, VaultConfig};

/// The metadata dialects a test runs against.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

pub(crate) const DIALECTS: [Dialect; 2] = [Dialect::Sqlite, Dialect::Postgres];

pub(crate) fn server_url() -> String {
    test_env("MEDIAVAULT_TEST_DATABASE_URL")
}

/// A new, empty PostgreSQL database: its URL and its name.
pub(crate) async fn fresh_postgres_database() -> (String, String) {
    let url = server_url();
    let name = format!("mv_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let server = url.rsplit_once('/').map_or(url.as_str(), |(server, _)| server);
    (format!("{server}/{name}"), name)
}

pub(crate) async fn drop_postgres_database(name: &str) {
    let mut admin = sqlx::PgConnection::connect(&server_url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}

/// Runs `test` on a migrated vault of each dialect in turn, then closes
/// the vault and removes its stores.
pub(crate) async fn on_each_dialect<F, Fut>(test: F)
where
    F: Fn(Vault) -> Fut,
    Fut: Future<Output = ()>,
{
    on_each_dialect_with(Duration::from_secs(3600), test).await;
}

/// `on_each_dialect`, with `reaper.stale_upload_after` set to `stale_upload_after`.
pub(crate) async fn on_each_dialect_with<F, Fut>(stale_upload_after: Duration, test: F)
where
    F: Fn(Vault) -> Fut,
    Fut: Future<Output = ()>,
{
    let configured = || async { Keyring::parse(&Keyring::generate_line("k1")).unwrap() };
    on_each_dialect_keyed(stale_upload_after, configured, test).await;
}

/// `on_each_dialect_with`, the vault's keys made anew for each dialect by `keys`.
pub(crate) async fn on_each_dialect_keyed<K, KFut, F, Fut>(stale_upload_after: Duration, keys: K, test: F)
where
    K: Fn() -> KFut,
    KFut: Future<Output = Keyring>,
    F: Fn(Vault) -> Fut,
    Fut: Future<Output = ()>,
{
    for dialect in DIALECTS {
        eprintln!("dialect: {dialect:?}");
        let dir = tempfile::tempdir().unwrap();
        let (database_url, postgres) = match dialect {
            Dialect::Sqlite => (
                DatabaseUrl::Sqlite(format!("sqlite://{}/media.db", dir.path().display())),
                None,
            ),
            Dialect::Postgres => {
                let (url, name) = fresh_postgres_database().await;
                (url.parse().unwrap(), Some(name))
            }
        };
        let vault = Vault::open(VaultConfig {
            database_url,
            blobs: BlobConfig::local("memory://"),
            keys: keys().await,
            defaults: Defaults::default(),
            stale_upload_after,
        })
        .await
        .unwrap();
        vault.migrate().await.unwrap();
        test(vault.clone()).await;
        vault.close().await;
        if let Some(name) = postgres {
            drop_postgres_database(&name).await;
        }
    }
}

/// A migrated vault on a new PostgreSQL database, its blobs where `blobs`
/// says: the vault, the database's URL, and its name (for
/// `drop_postgres_database`).
pub(crate) async fn postgres_vault(blobs: BlobConfig) -> (Vault, String, String) {
    let (url, name) = fresh_postgres_database().await;
    let vault = Vault::open(VaultConfig {
        database_url: url.parse().unwrap(),
        blobs,
        keys: Keyring::parse(&Keyring::generate_line("k1")).unwrap(),
        defaults: Defaults::default(),
        stale_upload_after: Duration::from_secs(3600),
    })
    .await
    .unwrap();
    vault.migrate().await.unwrap();
    (vault, url, name)
}

/// A migrated vault on a SQLite file in `dir` (`media.db`, its WAL
/// `media.db-wal` beside it), with `reaper.stale_upload_after` set to
/// `stale_upload_after`.
pub(crate) async fn sqlite_file_vault(dir: &std::path::Path, stale_upload_after: Duration) -> Vault {
    sqlite_file_vault_with(dir, BlobConfig::local("memory://"), stale_upload_after).await
}

/// `sqlite_file_vault` with its blobs in the store `blobs` describes.
pub(crate) async fn sqlite_file_vault_with(
    dir: &std::path::Path,
    blobs: BlobConfig,
    stale_upload_after: Duration,
) -> Vault {
    let vault = Vault::open(VaultConfig {
        database_url: DatabaseUrl::Sqlite(format!("sqlite://{}/media.db", dir.display())),
        blobs,
        keys: Keyring::parse(&Keyring::generate_line("k1")).unwrap(),
        defaults: Defaults::default(),
        stale_upload_after,
    })
    .await
    .unwrap();
    vault.migrate().await.unwrap();
    vault
}

/// The length of the WAL of `sqlite_file_vault(dir, ..)`'s database (0
/// when it has none).
pub(crate) fn wal_len(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("media.db-wal")).map_or(0, |m| m.len())
}

/// Waits up to 5 s for the WAL of `sqlite_file_vault(dir, ..)` to be
/// truncated, running `finish` before each look: it completes what a
/// dropped call may not have begun. Panics, naming `what`, if the WAL still
/// holds bytes then.
pub(crate) async fn wal_truncated(dir: &std::path::Path, what: &str, mut finish: impl AsyncFnMut()) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        finish().await;
        if wal_len(dir) == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}, and the WAL still holds {} bytes",
            wal_len(dir)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `work` until it has waited `waits` times, then drops it, as a
/// server drops a request's handler when the client hangs up.
pub(crate) async fn dropped_after<F: Future>(work: F, waits: usize) {
    let mut work = std::pin::pin!(work);
    let mut waited = 0;
    std::future::poll_fn(|cx| match work.as_mut().poll(cx) {
        std::task::Poll::Ready(_) => std::task::Poll::Ready(()),
        std::task::Poll::Pending => {
            waited += 1;
            if waited >= waits {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        }
    })
    .await;
}

/// A new CAPI app, with the defaults' limits.
pub(crate) async fn capi_app(vault: &Vault) -> App {
    vault
        .create_app(NewApp {
            name: "shop".into(),
            capi: true,
            ..NewApp::default()
        })
        .await
        .unwrap()
}

/// The whole of stored medium `id` of `app`, read back through the vault.
pub(crate) async fn read_all(vault: &Vault, app: &App, id: &MediaId) -> Vec<u8> {
    let media = vault.find(&app.id, id).await.unwrap();
    let pieces: Vec<bytes::Bytes> = vault
        .read(&media, 0..media.info.size_bytes)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    pieces.concat()
}

/// The test token, `sessions` calls at once, no configured KEK.
pub(crate) fn pkcs11_settings(sessions: usize) -> Pkcs11Settings {
    Pkcs11Settings {
        module: test_env("MEDIAVAULT_TEST_PKCS11_MODULE").into(),
        token: TokenSelector::Label(test_env("MEDIAVAULT_TEST_PKCS11_TOKEN")),
        pin: test_env("MEDIAVAULT_TEST_PKCS11_PIN").into(),
        keys: Vec::new(),
        sessions,
    }
}

/// A label prefix for one test's epoch keys: the token is shared.
fn epoch_prefix() -> String {
    format!("t{}-", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Epoch keys labelled `prefix` in the test token, destroyed as soon as
/// their day is over (no grace), none made ahead but today's.
async fn epoch_keyring(prefix: &str) -> Keyring {
    let epochs = EpochSettings {
        grace: Duration::ZERO,
        ahead_days: 0,
        ..EpochSettings::new(prefix)
    };
    let keys = Pkcs11Keys::open(pkcs11_settings(4)).await.unwrap();
    Keyring::pkcs11(keys, None, Some(epochs)).unwrap()
}

/// `on_each_dialect`, the vault's keys epoch keys in the test token under a
/// label prefix of this test's own; the keys it made are destroyed after.
pub(crate) async fn on_each_dialect_with_epoch_keys<F, Fut>(test: F)
where
    F: Fn(Vault) -> Fut,
    Fut: Future<Output = ()>,
{
    let prefix = epoch_prefix();
    let (prefix, test) = (&prefix, &test);
    on_each_dialect_keyed(
        Duration::from_secs(3600),
        || epoch_keyring(prefix),
        |vault| async move {
            test(vault.clone()).await;
            destroy_epoch_keys(&vault, prefix).await;
        },
    )
    .await;
}

/// Destroys the keys labelled `prefix…` that a test made in the token.
async fn destroy_epoch_keys(vault: &Vault, prefix: &str) {
    let keys = &vault.inner.keys;
    for label in keys.labels().await.unwrap() {
        if label.starts_with(prefix) {
            keys.destroy(&label).await.unwrap();
        }
    }
}
