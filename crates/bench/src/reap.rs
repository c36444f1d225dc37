//! `mediavault-bench reap [N] [--backend B]`: stores N small media
//! (default 100,000) on fresh stores, lets them expire, and times one
//! reaper pass over all of them. The baseline, in the same run on the same
//! store: N objects of the same size put directly, then deleted with the
//! store's bulk delete (S3 DeleteObjects), 1,000 keys a request and 4
//! requests in flight.
//!
//! On postgres-s3 the media go to a fresh Postgres database and a fresh
//! Garage prefix; on sqlite-files, to a SQLite file and a directory in a
//! fresh temporary directory, blobs written with fsync as the server
//! writes them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use mediavault_storage::{BlobConfig, Defaults, Keyring, NewApp, Vault, VaultConfig, now_millis};

use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::stores::{Backend, env, garage_client, psql};

/// Objects put at once, for the media and for the baseline.
const PUTS_IN_FLIGHT: usize = 64;
/// The baseline's DeleteObjects requests in flight.
const DELETES_IN_FLIGHT: usize = 4;
/// Keys in one DeleteObjects request, S3's maximum.
const KEYS_PER_DELETE: usize = 1000;

pub async fn reap(count: usize, backend: Backend) -> anyhow::Result<()> {
    match backend {
        Backend::PostgresS3 => {
            let admin = env("MEDIAVAULT_TEST_DATABASE_URL")?;
            let database = format!("mv_bench_{}", uuid::Uuid::new_v4().simple());
            psql(&admin, &format!("CREATE DATABASE {database}"))?;
            let result = on_postgres_s3(count, &admin, &database).await;
            psql(
                &admin,
                &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
            )?;
            result
        }
        Backend::SqliteFiles => on_sqlite_files(count).await,
    }
}

async fn on_postgres_s3(count: usize, admin: &str, database: &str) -> anyhow::Result<()> {
    let server = admin.rsplit_once('/').map(|(server, _)| server).unwrap_or(admin);
    let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let s3: Arc<dyn ObjectStore> = garage_client()?;
    let raw_rate = raw_delete_rate(s3, count, &format!("{prefix}-raw")).await?;
    let blobs = BlobConfig {
        url: format!("s3://{}/{prefix}", env("MEDIAVAULT_TEST_S3_BUCKET")?),
        endpoint: Some(env("MEDIAVAULT_TEST_S3_ENDPOINT")?),
        region: Some("garage".into()),
        access_key_id: Some(env("MEDIAVAULT_TEST_S3_ACCESS_KEY_ID")?),
        secret_access_key: Some(env("MEDIAVAULT_TEST_S3_SECRET_ACCESS_KEY")?.into()),
        allow_http: true,
        unsigned_payload: None,
        timeout: Duration::from_secs(30),
        min_free_bytes: 0,
    };
    reap_pass(count, raw_rate, &format!("{server}/{database}"), blobs).await
}

async fn on_sqlite_files(count: usize) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("mediavault-bench-reap-")
        .tempdir()?;
    let raw_dir = dir.path().join("raw");
    std::fs::create_dir_all(&raw_dir)?;
    // Durable writes, as the server makes them.
    let files: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&raw_dir)?.with_fsync(true));
    let raw_rate = raw_delete_rate(files, count, "raw").await?;
    let blobs = BlobConfig::local(dir.path().join("blobs").display().to_string());
    let database = format!("sqlite://{}", dir.path().join("mediavault.db").display());
    reap_pass(count, raw_rate, &database, blobs).await
}

/// Stores `count` media through a vault on `database` and `blobs`, lets
/// them expire, and times one reaper pass over them against `raw_rate`.
async fn reap_pass(count: usize, raw_rate: f64, database: &str, blobs: BlobConfig) -> anyhow::Result<()> {
    let vault = Vault::open(VaultConfig {
        database_url: database.parse()?,
        blobs,
        keys: Keyring::parse(&Keyring::generate_line("bench"))?,
        defaults: Defaults::default(),
        stale_upload_after: Duration::from_secs(3600),
    })
    .await?;
    vault.migrate().await?;
    let retention = Duration::from_secs(2);
    let app = vault
        .create_app(NewApp {
            name: "bench".into(),
            capi: true,
            retention: Some(retention),
            ..NewApp::default()
        })
        .await?;

    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let (vault, app) = (vault.clone(), app.clone());
            async move {
                let mut upload = vault.begin_upload(&app, None).await?;
                upload.write(format!("bench file {i}\n").as_bytes()).await?;
                upload.finish("text/plain").await.map(drop)
            }
        })
        .buffer_unordered(PUTS_IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    let stored = started.elapsed();
    println!(
        "stored {count} media in {:.1} s ({:.0} media/s, 64 at a time, through Vault::begin_upload)",
        stored.as_secs_f64(),
        count as f64 / stored.as_secs_f64()
    );
    tokio::time::sleep(retention + Duration::from_millis(500)).await;

    let started = Instant::now();
    let report = mediavault_reaper::reap_once(&vault, now_millis(), Duration::from_secs(3600)).await?;
    let pass = started.elapsed();
    let rate = report.expired as f64 / pass.as_secs_f64();
    println!(
        "reaper pass: {} expired, {} blob-delete failures in {:.1} s: {rate:.0} media/s, {:.2} × the raw bulk delete",
        report.expired,
        report.blob_failures,
        pass.as_secs_f64(),
        rate / raw_rate
    );
    let (rows, blobs) = (
        vault.referenced_blob_keys().await?.len(),
        vault.stored_blob_keys().await?.len(),
    );
    println!("left after the pass: {rows} rows, {blobs} blobs");
    vault.close().await;
    Ok(())
}

/// Puts `count` small objects under `prefix` of `store` directly, then
/// times deleting them with its bulk delete ([`KEYS_PER_DELETE`] keys a
/// request, [`DELETES_IN_FLIGHT`] requests at once); returns objects per
/// second.
async fn raw_delete_rate(store: Arc<dyn ObjectStore>, count: usize, prefix: &str) -> anyhow::Result<f64> {
    let keys: Vec<Path> = (0..count).map(|i| Path::from(format!("{prefix}/{i}"))).collect();
    let started = Instant::now();
    futures::stream::iter(&keys)
        .map(|key| {
            // The size of a sealed "bench file N" medium, near enough.
            store.put(key, PutPayload::from(vec![0u8; 64]))
        })
        .buffer_unordered(PUTS_IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await?;
    let put = started.elapsed();
    let started = Instant::now();
    let deleted: usize = futures::stream::iter(keys.chunks(KEYS_PER_DELETE))
        .map(|chunk| {
            let store = store.clone();
            let chunk = chunk.to_vec();
            async move {
                let paths = futures::stream::iter(chunk.into_iter().map(Ok)).boxed();
                store
                    .delete_stream(paths)
                    .try_collect::<Vec<_>>()
                    .await
                    .map(|d| d.len())
            }
        })
        .buffer_unordered(DELETES_IN_FLIGHT)
        .try_fold(0, |total, n| async move { Ok(total + n) })
        .await?;
    let delete = started.elapsed();
    anyhow::ensure!(
        deleted == count,
        "the raw bulk delete deleted {deleted} of {count}"
    );
    let rate = count as f64 / delete.as_secs_f64();
    println!(
        "raw: put {count} objects in {:.1} s ({:.0}/s, {PUTS_IN_FLIGHT} at a time); \
         bulk delete in {:.1} s: {rate:.0} objects/s ({KEYS_PER_DELETE} keys a request, {DELETES_IN_FLIGHT} in flight)",
        put.as_secs_f64(),
        count as f64 / put.as_secs_f64(),
        delete.as_secs_f64(),
    );
    Ok(rate)
}
