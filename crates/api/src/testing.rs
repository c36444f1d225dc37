//! What the router's unit tests share.

use std::path::Path;
use std::time::Duration;

use mediavault_storage::{BlobConfig, DatabaseUrl, Defaults, Keyring, Vault, VaultConfig};

/// A vault over a fresh SQLite database in `dir` and in-memory blobs. It is
/// not migrated: a test that needs the schema migrates it.
pub async fn vault(dir: &Path) -> Vault {
    Vault::open(VaultConfig {
        database_url: DatabaseUrl::Sqlite(format!("sqlite://{}/db", dir.display())),
        blobs: BlobConfig::local("memory://"),
        keys: Keyring::parse(&Keyring::generate_line("k")).unwrap(),
        defaults: Defaults::default(),
        stale_upload_after: Duration::from_secs(3600),
    })
    .await
    .unwrap()
}
