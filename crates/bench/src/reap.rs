//! `mediavault-bench reap [N]`: stores N small media (default 100,000) on a
//! fresh Postgres database and a fresh Garage prefix, lets them expire, and
//! times one reaper pass over all of them.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use mediavault_storage::{BlobConfig, Defaults, Keyring, NewApp, Vault, VaultConfig, now_millis};

use crate::stores::{env, psql};

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
    let vault = Vault::open(VaultConfig {
        database_url: format!("{server}/{database}").parse()?,
        blobs: BlobConfig {
            url: format!(
                "s3://{}/bench-{}",
                env("MEDIAVAULT_TEST_S3_BUCKET")?,
                uuid::Uuid::new_v4().simple()
            ),
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
        .buffer_unordered(64)
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
    println!(
        "reaper pass: {} expired, {} blob-delete failures in {:.1} s: {:.0} media/s",
        report.expired,
        report.blob_failures,
        pass.as_secs_f64(),
        report.expired as f64 / pass.as_secs_f64()
    );
    let (rows, blobs) = (
        vault.referenced_blob_keys().await?.len(),
        vault.stored_blob_keys().await?.len(),
    );
    println!("left after the pass: {rows} rows, {blobs} blobs");
    vault.close().await;
    Ok(())
}
