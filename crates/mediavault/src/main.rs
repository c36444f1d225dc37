//! The `mediavault` binary: reads configuration, sets up telemetry, and wires
//! the storage core to the HTTP API. It is the only crate that reads files or
//! the environment.

mod cli;
mod embedded;
mod http;
mod manage;
mod send_timeout;
mod serve;
mod telemetry;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mediavault::config::{Config, Overrides};
use mediavault_storage::{BlobConfig, Defaults, Keyring, Vault, VaultConfig};
use serde_json::json;

use crate::cli::{Cli, Command, KeysCommand};

fn main() -> ExitCode {
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
    let overrides = match &cli.command {
        Command::Serve { listen } => Overrides { listen: *listen },
        _ => Overrides::default(),
    };
    if let Command::Keys(KeysCommand::Generate { id }) = &cli.command {
        let id = id
            .clone()
            .unwrap_or_else(|| chrono::Utc::now().format("k%Y%m%d").to_string());
        println!("{}", json!({ "key": Keyring::generate_line(&id) }));
        return Ok(());
    }
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    telemetry::init(config.log.format);
    let vault = open_vault(&config).await?;
    vault.migrate().await.context("migrating the database")?;
    match cli.command {
        Command::Serve { .. } => serve::serve(&config, vault).await,
        Command::Migrate => {
            println!("{}", json!({ "migrated": true }));
            Ok(())
        }
        Command::Apps(command) => manage::apps(&vault, command).await,
        Command::Tokens(command) => manage::tokens(&vault, command).await,
        Command::Keys(command) => manage::keys(&vault, command).await,
        Command::Reap(reap) if reap.once => {
            let report = mediavault_reaper::reap_once(
                &vault,
                mediavault_storage::now_millis(),
                config.reaper.pass_budget,
            )
            .await
            .context("reaper pass")?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Reap(_) => {
            let removed = vault
                .sweep_orphans(config.reaper.stale_upload_after)
                .await
                .context("orphan sweep")?;
            println!("{}", json!({ "removed": removed }));
            Ok(())
        }
    }
}

/// Opens the vault the configuration describes. In embedded mode (SQLite and
/// no configured keys) a development key is made or reused beside the database.
async fn open_vault(config: &Config) -> anyhow::Result<Vault> {
    let database_url = config.database_url()?;
    let keys = match config.crypto_keys()? {
        Some(spec) => Keyring::parse(&spec)?,
        None if embedded::is_sqlite(&database_url) => embedded::dev_keyring(&database_url)?,
        None => anyhow::bail!(
            "crypto.keys (or crypto.keys_file) is required with a {} database; \
             generate one with `mediavault keys generate`",
            database_url.split("://").next().unwrap_or("non-SQLite")
        ),
    };
    let blobs = BlobConfig {
        url: config.blobs.url.clone(),
        endpoint: config.blobs.endpoint.clone(),
        region: config.blobs.region.clone(),
        access_key_id: config.blobs.access_key_id.clone(),
        secret_access_key: config.blobs_secret_access_key()?,
        allow_http: config.blobs.allow_http,
        unsigned_payload: config.blobs.unsigned_payload,
        timeout: config.blobs.timeout,
    };
    let vault = Vault::open(VaultConfig {
        database_url,
        blobs,
        keys,
        defaults: Defaults {
            retention: config.media.retention,
            max_file_bytes: config.media.max_file_bytes,
        },
        stale_upload_after: config.reaper.stale_upload_after,
    })
    .await
    .context("opening storage")?;
    Ok(vault)
}
