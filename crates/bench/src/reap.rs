//! `mediavault-bench reap [N]`: stores N small media (default 100,000) on a
//! fresh Postgres database and a fresh Garage prefix, lets them expire, and
//! times one reaper pass over all of them. The baseline, in the same run on
//! the same bucket: N objects of the same size put directly, then deleted
//! with S3 DeleteObjects, 1,000 keys a request and 4 requests in flight.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use mediavault_storage::{BlobConfig, Defaults, Keyring, NewApp, Vault, VaultConfig, now_millis};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::stores::{env, garage_client, psql};

/// Objects put at once, for the media and for the baseline.
const PUTS_IN_FLIGHT: usize = 64;
/// The baseline's DeleteObjects requests in flight.
const DELETES_IN_FLIGHT: usize = 4;
/// Keys in one DeleteObjects request, S3's maximum.
const KEYS_PER_DELETE: usize = 1000;

pub async fn reap(count: usize) -> anyhow::Result<()> {
    let admin = env("MEDIAVAULT_TEST_DATABASE_URL")?;
    let database = format!("mv_bench_{}", uuid::Uuid::new_v4().simple());
    psql(&admin, &format!("CREATE DATABASE {database}"))?;
    let result = reap_on(count, &admin, &database).await;
    psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
    )?;
    result
}

async fn reap_on(count: usize, admin: &str, database: &str) -> anyhow::Result<()> {
    let server = admin.rsplit_once('/').map(|(server, _)| server).unwrap_or(admin);
    let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let raw_rate = raw_delete_rate(count, &format!("{prefix}-raw")).await?;
    let vault = Vault::open(VaultConfig {
        database_url: format!("{server}/{database}").parse()?,
        blobs: BlobConfig {
            url: format!("s3://{}/{prefix}", env("MEDIAVAULT_TEST_S3_BUCKET")?),
            endpoint: Some(env("MEDIAVAULT_TEST_S3_ENDPOINT")?),
            region: Some("garage".into()),
            access_key_id: Some(env("MEDIAVAULT_TEST_S3_ACCESS_KEY_ID")?),
            secret_access_key: Some(env("MEDIAVAULT_TEST_S3_SECRET_ACCESS_KEY")?.into()),
            allow_http: true,
            unsigned_payload: None,
            timeout: Duration::from_secs(30),
        },
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
        "reaper pass: {} expired, {} blob-delete failures in {:.1} s: {rate:.0} media/s, {:.2} × raw DeleteObjects",
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

/// Puts `count` small objects under `prefix` directly, then times deleting
/// them with DeleteObjects ([`KEYS_PER_DELETE`] keys a request,
/// [`DELETES_IN_FLIGHT`] requests at once); returns objects per second.
async fn raw_delete_rate(count: usize, prefix: &str) -> anyhow::Result<f64> {
    let s3 = garage_client()?;
    let keys: Vec<Path> = (0..count).map(|i| Path::from(format!("{prefix}/{i}"))).collect();
    let started = Instant::now();
    futures::stream::iter(&keys)
        .map(|key| {
            // The size of a sealed "bench file N" medium, near enough.
            s3.put(key, PutPayload::from(vec![0u8; 64]))
        })
        .buffer_unordered(PUTS_IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await?;
    let put = started.elapsed();
    let started = Instant::now();
    let deleted: usize = futures::stream::iter(keys.chunks(KEYS_PER_DELETE))
        .map(|chunk| {
            let s3 = s3.clone();
            let chunk = chunk.to_vec();
            async move {
                let paths = futures::stream::iter(chunk.into_iter().map(Ok)).boxed();
                s3.delete_stream(paths)
                    .try_collect::<Vec<_>>()
                    .await
                    .map(|d| d.len())
            }
        })
        .buffer_unordered(DELETES_IN_FLIGHT)
        .try_fold(0, |total, n| async move { Ok(total + n) })
        .await?;
    let delete = started.elapsed();
    anyhow::ensure!(deleted == count, "raw DeleteObjects deleted {deleted} of {count}");
    let rate = count as f64 / delete.as_secs_f64();
    println!(
        "raw: put {count} objects in {:.1} s ({:.0}/s, {PUTS_IN_FLIGHT} at a time); \
         DeleteObjects in {:.1} s: {rate:.0} objects/s ({KEYS_PER_DELETE} keys a request, {DELETES_IN_FLIGHT} in flight)",
        put.as_secs_f64(),
        count as f64 / put.as_secs_f64(),
        delete.as_secs_f64(),
    );
    Ok(rate)
}
