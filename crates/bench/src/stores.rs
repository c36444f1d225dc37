//! The stores one benchmark run measures against, made fresh for the run and
//! removed after it: a Postgres database and a Garage prefix, or a SQLite file
//! and a directory. Each comes with a direct object_store client on the same
//! bucket or directory, the baseline the server is compared with.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use mediavault_storage::Keyring;
use object_store::ObjectStore;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;

pub fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: run through `make bench` or `make bench-reap`, which start the services")
    })
}

pub fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let status = Command::new("psql")
        .args(["-q", url, "-c", sql])
        .status()
        .context("running psql")?;
    if !status.success() {
        bail!("psql failed: {sql}");
    }
    Ok(())
}

/// A direct client of the test Garage bucket, signing as the server does
/// (UNSIGNED-PAYLOAD).
pub fn garage_client() -> anyhow::Result<Arc<AmazonS3>> {
    Ok(Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(env("MEDIAVAULT_TEST_S3_BUCKET")?)
            .with_endpoint(env("MEDIAVAULT_TEST_S3_ENDPOINT")?)
            .with_region("garage")
            .with_access_key_id(env("MEDIAVAULT_TEST_S3_ACCESS_KEY_ID")?)
            .with_secret_access_key(env("MEDIAVAULT_TEST_S3_SECRET_ACCESS_KEY")?)
            .with_allow_http(true)
            .with_unsigned_payload(true)
            .build()?,
    ))
}

/// Which stores the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Production: Postgres metadata, blobs in Garage (S3).
    PostgresS3,
    /// The embedded default: SQLite metadata, blobs in a local directory.
    SqliteFiles,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::PostgresS3 => "postgres-s3",
            Backend::SqliteFiles => "sqlite-files",
        }
    }

    /// What the raw baseline is.
    pub fn baseline(self) -> &'static str {
        match self {
            Backend::PostgresS3 => {
                "object_store AmazonS3 on the same Garage bucket, UNSIGNED-PAYLOAD like the server"
            }
            Backend::SqliteFiles => {
                "object_store LocalFileSystem in the same directory, fsync on like the server"
            }
        }
    }
}

/// One run's stores; `cleanup` removes them.
pub struct Stores {
    pub backend: Backend,
    dir: tempfile::TempDir,
    /// `MEDIAVAULT__*` settings that point a server or CLI at these stores.
    pub server_env: Vec<(String, String)>,
    /// Direct access to where the server keeps its blobs, under a `raw/`
    /// prefix of its own.
    pub raw: Arc<dyn ObjectStore>,
    postgres: Option<(String, String)>,
    s3: Option<(Arc<AmazonS3>, Path)>,
}

impl Stores {
    pub async fn create(backend: Backend) -> anyhow::Result<Stores> {
        let dir = tempfile::Builder::new().prefix("mediavault-bench-").tempdir()?;
        let keys = Keyring::generate_line("bench");
        let mut server_env = vec![("MEDIAVAULT__CRYPTO__KEYS".to_owned(), keys)];
        let mut stores = match backend {
            Backend::PostgresS3 => {
                let admin = env("MEDIAVAULT_TEST_DATABASE_URL")?;
                let database = format!("mv_bench_{}", uuid::Uuid::new_v4().simple());
                psql(&admin, &format!("CREATE DATABASE {database}"))?;
                let server = admin.rsplit_once('/').map(|(server, _)| server).unwrap_or(&admin);
                server_env.push(("MEDIAVAULT__DATABASE__URL".into(), format!("{server}/{database}")));

                let bucket = env("MEDIAVAULT_TEST_S3_BUCKET")?;
                let endpoint = env("MEDIAVAULT_TEST_S3_ENDPOINT")?;
                let key_id = env("MEDIAVAULT_TEST_S3_ACCESS_KEY_ID")?;
                let secret = env("MEDIAVAULT_TEST_S3_SECRET_ACCESS_KEY")?;
                let s3 = garage_client()?;
                let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
                for (key, value) in [
                    ("URL", format!("s3://{bucket}/{prefix}")),
                    ("ENDPOINT", endpoint),
                    ("REGION", "garage".into()),
                    ("ACCESS_KEY_ID", key_id),
                    ("SECRET_ACCESS_KEY", secret),
                    ("ALLOW_HTTP", "true".into()),
                    // As it runs over https (the default there); the raw
                    // client (garage_client) signs the same way.
                    ("UNSIGNED_PAYLOAD", "true".into()),
                ] {
                    server_env.push((format!("MEDIAVAULT__BLOBS__{key}"), value));
                }
                Stores {
                    backend,
                    dir,
                    server_env,
                    raw: Arc::new(PrefixStore::new(s3.clone(), format!("{prefix}/raw"))),
                    postgres: Some((admin, database)),
                    s3: Some((s3, Path::from(prefix))),
                }
            }
            Backend::SqliteFiles => {
                let blobs = dir.path().join("blobs");
                std::fs::create_dir_all(&blobs)?;
                let database = format!("sqlite://{}", dir.path().join("mediavault.db").display());
                server_env.push(("MEDIAVAULT__DATABASE__URL".into(), database));
                server_env.push(("MEDIAVAULT__BLOBS__URL".into(), blobs.display().to_string()));
                // Durable writes, as the server makes them.
                let files = Arc::new(LocalFileSystem::new_with_prefix(&blobs)?.with_fsync(true));
                Stores {
                    backend,
                    dir,
                    server_env,
                    raw: Arc::new(PrefixStore::new(files, "raw")),
                    postgres: None,
                    s3: None,
                }
            }
        };
        stores.server_env.sort();
        Ok(stores)
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Drops the database and every object under the run's prefix; the
    /// directory goes with `self`.
    pub async fn cleanup(self) -> anyhow::Result<()> {
        if let Some((s3, prefix)) = &self.s3 {
            let keys: Vec<Path> = s3
                .list(Some(prefix))
                .map_ok(|meta| meta.location)
                .try_collect()
                .await?;
            let deleted = s3
                .delete_stream(futures::stream::iter(keys.into_iter().map(Ok)).boxed())
                .try_collect::<Vec<_>>()
                .await?;
            eprintln!("removed {} objects under {prefix}", deleted.len());
        }
        if let Some((admin, database)) = &self.postgres {
            psql(admin, &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))?;
        }
        Ok(())
    }
}
