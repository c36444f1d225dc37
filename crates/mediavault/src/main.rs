//! The `mediavault` binary: reads configuration, sets up telemetry, and wires
//! the storage core to the HTTP API. It is the only crate that reads files or
//! the environment.

mod blob_dir;
mod cli;
mod connections;
mod embedded;
mod http;
mod manage;
mod schema;
mod send_timeout;
mod serve;
mod telemetry;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mediavault::config::KeyProviderKind;
use mediavault::config::{Config, Overrides};
use mediavault_storage::keys::Pkcs11Keys;
use mediavault_storage::{
    BlobConfig, ConfiguredKeys, DatabaseUrl, Defaults, Keyring, StoreError, Vault, VaultConfig,
};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::cli::{Cli, Command, GenerateIn, KeysCommand};
use crate::schema::Accept;

fn main() -> ExitCode {
    // What the service creates is its user's alone: the SQLite database and
    // its WAL and SHM (SQLite gives them the database's mode), blobs and
    // their directories, development secrets. The mask is process-wide, so
    // it is set before any thread starts.
    rustix::process::umask(rustix::fs::Mode::RWXG | rustix::fs::Mode::RWXO);
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mediavault: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let file = cli.config.as_deref();
    match cli.command {
        // Needs no configuration: a key is made before there is one.
        Command::Keys(KeysCommand::Generate {
            id,
            provider: GenerateIn::Config,
            label,
        }) => {
            // A label names a key in a token: given alone, it would make a
            // configured key under another id and print its secret.
            if let Some(label) = label {
                anyhow::bail!(
                    "--label {label:?} names a key in the token: add --provider pkcs11 (a key for \
                     crypto.keys takes --id)"
                );
            }
            let id = id.unwrap_or_else(|| chrono::Utc::now().format("k%Y%m%d").to_string());
            println!("{}", json!({ "key": Keyring::generate_line(&id) }));
            Ok(())
        }
        // Needs the token's settings, not the database.
        Command::Keys(KeysCommand::Generate {
            provider: GenerateIn::Pkcs11,
            label,
            ..
        }) => {
            let config = Config::load(file, &Overrides::default())?;
            telemetry::init(config.log.format);
            let label = label.context("--label is required with --provider pkcs11")?;
            let mut settings = config.pkcs11_settings(1)?;
            settings.keys.clear();
            let token = Pkcs11Keys::open(settings).await.context("crypto.pkcs11")?;
            let fingerprint = token.create(&label).await?;
            println!(
                "{}",
                json!({ "provider": "pkcs11", "label": label, "fingerprint": fingerprint })
            );
            Ok(())
        }
        Command::Keys(KeysCommand::Stored(command)) => {
            let (_, vault) = open(file, Purpose::Manage).await?;
            manage::keys(&vault, command).await
        }
        Command::Apps(command) => {
            let (_, vault) = open(file, Purpose::Manage).await?;
            manage::apps(&vault, command).await
        }
        Command::Tokens(command) => {
            let (_, vault) = open(file, Purpose::Manage).await?;
            manage::tokens(&vault, command).await
        }
        Command::Serve { listen } => {
            let (config, vault) = open(file, Purpose::Serve { listen }).await?;
            serve::serve(&config, vault).await
        }
        Command::Migrate => {
            open(file, Purpose::Migrate).await?;
            println!("{}", json!({ "migrated": true }));
            Ok(())
        }
        Command::Reap(reap) => {
            let (config, vault) = open(file, Purpose::Reap).await?;
            if reap.once {
                let now = vault
                    .reaping_now(mediavault_storage::now_millis())
                    .await
                    .context("reading the database's clock")?;
                let report = mediavault_reaper::reap_once(&vault, now, config.reaper.pass_budget)
                    .await
                    .context("reaper pass")?;
                let mut printed = serde_json::to_value(report)?;
                if report.skipped {
                    // Zeros alone would read as a pass that found nothing due.
                    printed["skipped"] = json!("another pass holds the lock");
                }
                println!("{printed}");
            } else {
                let removed = vault
                    .sweep_orphans(config.reaper.stale_upload_after)
                    .await
                    .context("orphan sweep")?;
                let aborted = vault
                    .abort_stale_multipart_uploads(config.reaper.stale_upload_after)
                    .await
                    .context("aborting stale multipart uploads")?;
                println!("{}", json!({ "removed": removed, "abortedUploads": aborted }));
            }
            Ok(())
        }
    }
}

/// What a command does with the stores, which decides how they are opened.
enum Purpose {
    Serve {
        listen: Option<SocketAddr>,
    },
    Migrate,
    /// Writes and deletes blobs, like `Serve`.
    Reap,
    /// Apps, tokens and keys: rows only.
    Manage,
}

/// Reads the configuration, sets up telemetry and opens the vault, with the
/// checks `purpose` needs before it may run.
async fn open(file: Option<&Path>, purpose: Purpose) -> anyhow::Result<(Config, Vault)> {
    let overrides = match purpose {
        Purpose::Serve { listen } => Overrides { listen },
        _ => Overrides::default(),
    };
    let config = Config::load(file, &overrides)?;
    telemetry::init(config.log.format);
    let blobs = blob_config(&config)?;
    if matches!(purpose, Purpose::Serve { .. }) {
        config.check_serving()?;
    }
    // The commands that write and delete blobs.
    if matches!(purpose, Purpose::Serve { .. } | Purpose::Reap) {
        blob_dir::check_apart(&config, &blobs)?;
    }
    let (vault, new_dev_key) = open_vault(&config, blobs).await?;
    match purpose {
        Purpose::Migrate => vault.migrate().await.context("migrating the database")?,
        Purpose::Serve { .. } if config.database.migrate_on_start => {
            vault.migrate().await.context("migrating the database")?
        }
        // Next to newer replicas during a rolling deploy: a newer schema is fine.
        Purpose::Serve { .. } => schema::check(&vault, Accept::AtLeast).await?,
        Purpose::Reap | Purpose::Manage => schema::check(&vault, Accept::Exact).await?,
    }
    if let Some(key) = new_dev_key {
        key.save(&vault).await?;
    }
    // A store that holds another installation's files is refused at start,
    // as each sweep refuses it before deleting anything. `serve` starts
    // while the store is down, as it always has: the sweeps check then.
    if matches!(purpose, Purpose::Serve { .. }) {
        match vault.claim_blob_store().await {
            Ok(()) => {}
            Err(error @ StoreError::Config(_)) => return Err(error).context("checking the blob store"),
            Err(error) => {
                tracing::warn!(%error, "could not check whose files the blob store holds; each sweep checks first");
            }
        }
    }
    if matches!(purpose, Purpose::Serve { .. }) {
        // Serving without a key that stored media need would answer 500 for
        // each of them: refuse to start instead, and say which key. Before
        // fingerprints are recorded: a start refused for a missing key
        // records none of the keys it was given.
        vault.check_keys().await?;
    }
    // A key id given other material would fail every read of its media.
    vault.check_key_fingerprints().await?;
    Ok((config, vault))
}

/// Opens the vault the configuration describes. In embedded mode (SQLite and
/// no configured keys) a development key is reused from beside the database,
/// or made: then it comes back too, to be saved once the database allows.
async fn open_vault(
    config: &Config,
    blobs: BlobConfig,
) -> anyhow::Result<(Vault, Option<embedded::NewDevKey>)> {
    let database_url = config.database_url()?;
    let mut new_dev_key = None;
    let configured = config.crypto_keys()?;
    let keys = match (config.crypto.provider, configured, &database_url) {
        (KeyProviderKind::Pkcs11, legacy, _) => {
            let settings = config.pkcs11_settings(config.server.max_concurrent_uploads)?;
            let legacy = legacy
                .map(|spec| ConfiguredKeys::parse(spec.expose_secret()))
                .transpose()?;
            let token = Pkcs11Keys::open(settings).await.context("crypto.pkcs11")?;
            Keyring::pkcs11(token, legacy, config.epoch_settings()?)?
        }
        (KeyProviderKind::Config, Some(spec), _) => Keyring::parse(spec.expose_secret())?,
        (KeyProviderKind::Config, None, DatabaseUrl::Sqlite(url)) => {
            let (keys, new) = embedded::dev_keyring(url)?;
            new_dev_key = new;
            keys
        }
        (KeyProviderKind::Config, None, DatabaseUrl::Postgres(_)) => anyhow::bail!(
            "crypto.keys (or crypto.keys_file) is required with a {} database; \
             generate one with `mediavault keys generate`",
            database_url.dialect()
        ),
    };
    let vault = Vault::open(VaultConfig {
        database_url,
        blobs,
        keys,
        defaults: Defaults {
            retention: config.media.retention,
            max_file_bytes: config.media.max_file_bytes,
            max_bytes_stored: config.media.max_bytes_stored,
            max_media: config.media.max_media,
        },
        stale_upload_after: config.reaper.stale_upload_after,
    })
    .await
    .context("opening storage")?;
    Ok((vault, new_dev_key))
}

/// The blob store the configuration describes.
fn blob_config(config: &Config) -> anyhow::Result<BlobConfig> {
    Ok(BlobConfig {
        url: config.blobs.url.clone(),
        endpoint: config.blobs.endpoint.clone(),
        region: config.blobs.region.clone(),
        access_key_id: config.blobs.access_key_id.clone(),
        secret_access_key: config.blobs_secret_access_key()?,
        allow_http: config.blobs.allow_http,
        unsigned_payload: config.blobs.unsigned_payload,
        timeout: config.blobs.timeout,
        min_free_bytes: config.blobs.min_free_bytes,
    })
}
