//! Set-up shared by the fuzz targets that drive a whole vault.

use std::path::Path;
use std::time::Duration;

use mediavault_storage::{BlobConfig, DatabaseUrl, Defaults, Keyring, Vault, VaultConfig};

/// A current-thread runtime and a migrated vault on it, with its SQLite
/// database in `dir` and its blobs at `blobs_url`.
pub fn vault(dir: &Path, blobs_url: &str) -> (tokio::runtime::Runtime, Vault) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let vault = runtime.block_on(async {
        let vault = Vault::open(VaultConfig {
            database_url: DatabaseUrl::Sqlite(format!("sqlite://{}/db", dir.display())),
            blobs: BlobConfig::local(blobs_url),
            keys: Keyring::parse(&Keyring::generate_line("k")).expect("key"),
            defaults: Defaults::default(),
            stale_upload_after: Duration::from_secs(3600),
        })
        .await
        .expect("vault");
        vault.migrate().await.expect("migrate");
        vault
    });
    (runtime, vault)
}
