//! The stores a run talks to, all its own and all on loopback: a PostgreSQL
//! cluster made and run by `scripts/private-postgres.sh` (as for the tests
//! on a machine without PostgreSQL) in a temporary directory, a Garage of
//! one node or a cluster of three (`garage.rs`), and the release
//! `mediavault serve` against both. The machine's shared PostgreSQL is never
//! touched. Dropping [`Services`] stops every process and removes the
//! directory, on failure as on success.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::TryStreamExt;
use mediavault_test_support::ServeProcess;
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::garage::Garage;

/// Makes, starts and stops the cluster (handing it to the `postgres` system
/// user when the run is root's, as `initdb` refuses root); carried in the
/// binary, so a run does not depend on where it is started from.
const PRIVATE_POSTGRES: &str = include_str!("../../../scripts/private-postgres.sh");
pub(crate) const BUCKET: &str = "mediavault";
/// Blobs live under this prefix, so the audit lists exactly what the service wrote.
pub const BLOB_PREFIX: &str = "chaos";
pub(crate) const ACCESS_KEY: &str = "GK0123456789abcdef01234567";
pub(crate) const SECRET_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// How long a store gets to answer after (re)starting.
pub(crate) const START_WITHIN: Duration = Duration::from_secs(60);

/// Where the services listen.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub postgres: u16,
    /// Garage's S3 API; its RPC port is the next one (for a cluster, node
    /// `n` has S3, RPC and admin from `s3 + 3n`).
    pub s3: u16,
}

/// The private PostgreSQL, Garage and a key for `mediavault`.
pub struct Services {
    pub postgres: Postgres,
    pub garage: Garage,
    mediavault: PathBuf,
    crypto_keys: String,
    servers_started: usize,
    /// Last, so that the processes above stop before their files go.
    dir: Option<tempfile::TempDir>,
}

impl Services {
    /// Creates the temporary directory, the cluster and the bucket, and
    /// starts both stores, Garage with `garage_nodes` nodes (1, or a cluster
    /// of 3 or more). `keep` leaves the directory (logs, data) behind.
    pub async fn start(
        mediavault: &Path,
        ports: Ports,
        garage_nodes: usize,
        keep: bool,
    ) -> anyhow::Result<Services> {
        for port in std::iter::once(ports.postgres).chain(Garage::ports(ports.s3, garage_nodes)) {
            std::net::TcpListener::bind(("127.0.0.1", port))
                .with_context(|| format!("127.0.0.1:{port} is taken; choose other ports"))?;
        }
        let mut dir = tempfile::Builder::new().prefix("mediavault-chaos-").tempdir()?;
        if keep {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        // Readable by the PostgreSQL system user when the run is root's.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
        let crypto_keys = generate_key(mediavault)?;
        let mut postgres = Postgres::new(dir.path(), ports.postgres);
        postgres.start().await?;
        let mut garage = Garage::new(dir.path(), ports.s3, garage_nodes).await?;
        garage.start().await?;
        let services = Services {
            postgres,
            garage,
            mediavault: mediavault.to_owned(),
            crypto_keys,
            servers_started: 0,
            dir: Some(dir),
        };
        // A single node makes its default bucket as it starts, and a new
        // cluster takes a moment to spread its bucket: wait for it.
        let deadline = Instant::now() + START_WITHIN;
        let store = services.inventory().await?;
        while let Err(error) = store.blob_keys().await {
            if Instant::now() > deadline {
                bail!("the bucket never answered: {error}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(services)
    }

    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("directory lives as long as the services")
            .path()
    }

    /// The environment that points `mediavault` at these stores. Rate limits
    /// are set out of reach: a run measures robustness, not the limiter.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("MEDIAVAULT__DATABASE__URL", self.postgres.url()),
            ("MEDIAVAULT__BLOBS__URL", format!("s3://{BUCKET}/{BLOB_PREFIX}")),
            ("MEDIAVAULT__BLOBS__ENDPOINT", self.garage.endpoint()),
            ("MEDIAVAULT__BLOBS__REGION", "garage".into()),
            ("MEDIAVAULT__BLOBS__ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("MEDIAVAULT__BLOBS__SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("MEDIAVAULT__BLOBS__ALLOW_HTTP", "true".into()),
            ("MEDIAVAULT__CRYPTO__KEYS", self.crypto_keys.clone()),
            ("MEDIAVAULT__LIMITS__UPLOADS_PER_SECOND", "100000".into()),
            ("MEDIAVAULT__LIMITS__UPLOAD_BURST", "100000".into()),
            ("MEDIAVAULT__LIMITS__AUTH_FAILURES_PER_HOUR", "100000".into()),
            ("RUST_LOG", "info".into()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }

    /// Starts `mediavault serve` on a free loopback port.
    pub async fn serve(&mut self, extra_env: &[(&str, &str)]) -> anyhow::Result<ServeProcess> {
        self.servers_started += 1;
        let log = self.dir().join(format!("server-{}.log", self.servers_started));
        let mut command = Command::new(&self.mediavault);
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(self.dir())
            .envs(self.env())
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        // Waiting for the address blocks: off the runtime, so the clients
        // and the fault schedule keep running meanwhile.
        let server =
            tokio::task::spawn_blocking(move || ServeProcess::start(&mut command, Some(&log), START_WITHIN))
                .await??;
        Ok(server)
    }

    /// Runs `mediavault ARGS` against these stores; returns its stdout as JSON.
    pub async fn cli(&self, args: &[&str], extra_env: &[(&str, &str)]) -> anyhow::Result<serde_json::Value> {
        let output = tokio::process::Command::new(&self.mediavault)
            .args(args)
            .current_dir(self.dir())
            .envs(self.env())
            .envs(extra_env.iter().copied())
            .output()
            .await
            .context("running mediavault")?;
        if !output.status.success() {
            bail!(
                "mediavault {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        serde_json::from_slice(&output.stdout)
            .with_context(|| format!("mediavault {} printed no JSON", args.join(" ")))
    }

    /// A CAPI app with a token, made through the CLI as an operator would.
    pub async fn app(&self, extra_args: &[&str]) -> anyhow::Result<crate::client::App> {
        let mut args = vec!["apps", "create", "--name", "chaos"];
        args.extend_from_slice(extra_args);
        let app = self.cli(&args, &[]).await?;
        let id = app["appId"].as_str().context("apps create: no appId")?.to_owned();
        let token = self.cli(&["tokens", "issue", "--app", &id], &[]).await?;
        let token = token["token"]
            .as_str()
            .context("tokens issue: no token")?
            .to_owned();
        Ok(crate::client::App { id, token })
    }

    /// Handles on both stores, for audits while the service runs.
    pub async fn inventory(&self) -> anyhow::Result<Inventory> {
        let database = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.postgres.url())
            .await?;
        let store = AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_endpoint(self.garage.endpoint())
            .with_region("garage")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_allow_http(true)
            .build()?;
        Ok(Inventory {
            database,
            store: Arc::new(store),
        })
    }

    /// Lines of every server log that report a panic.
    pub fn panics(&self) -> Vec<String> {
        self.log_lines("panicked")
            .into_iter()
            .map(|(n, line)| format!("server-{n}: {line}"))
            .collect()
    }

    /// Lines of every server log that contain `needle`, with the number of
    /// the server (in the order they were started, from 1).
    pub fn log_lines(&self, needle: &str) -> Vec<(usize, String)> {
        (1..=self.servers_started)
            .flat_map(|n| {
                let log = self.dir().join(format!("server-{n}.log"));
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|line| line.contains(needle))
                    .map(|line| (n, line.to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// What the service has stored, read straight from the stores: the media
/// table over SQL, the bucket through an S3 listing of the prefix.
#[derive(Clone)]
pub struct Inventory {
    database: sqlx::PgPool,
    store: Arc<dyn ObjectStore>,
}

/// One media row as the audit needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MediaRow {
    pub id: String,
    pub state: String,
    pub blob_key: String,
    /// The uploaded file's name, which tells which attempt made the row.
    pub filename: Option<String>,
}

impl Inventory {
    pub async fn rows(&self) -> anyhow::Result<Vec<MediaRow>> {
        Ok(sqlx::query_as("SELECT id, state, blob_key, filename FROM media")
            .fetch_all(&self.database)
            .await?)
    }

    pub async fn count_rows(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM media")
            .fetch_one(&self.database)
            .await?)
    }

    /// Rows an upload in progress or the reaper still has to settle: media
    /// not ready, and media the reaper has claimed and not finished.
    pub async fn count_unsettled(&self) -> anyhow::Result<i64> {
        const SQL: &str = "SELECT (SELECT COUNT(*) FROM media WHERE state <> 'ready') \
                           + (SELECT COUNT(*) FROM reaping)";
        Ok(sqlx::query_scalar(SQL).fetch_one(&self.database).await?)
    }

    /// Every blob key under the service's prefix, as the `blob_key` column names it.
    pub async fn blob_keys(&self) -> anyhow::Result<Vec<String>> {
        let prefix = object_store::path::Path::from(BLOB_PREFIX);
        let listed: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let strip = format!("{BLOB_PREFIX}/");
        Ok(listed
            .into_iter()
            .map(|meta| {
                let key = meta.location.to_string();
                key.strip_prefix(&strip).map(str::to_owned).unwrap_or(key)
            })
            .collect())
    }

    /// Whether the blob `key` (as `blob_key` names it) is there: a HEAD,
    /// which a replicated store answers from a quorum, where a listing may
    /// still show a blob deleted while one of its nodes was down.
    pub async fn blob_exists(&self, key: &str) -> anyhow::Result<bool> {
        let path = object_store::path::Path::from(format!("{BLOB_PREFIX}/{key}"));
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    pub async fn close(&self) {
        self.database.close().await;
    }
}

/// `mediavault keys generate`: a fresh key for this run only.
fn generate_key(mediavault: &Path) -> anyhow::Result<String> {
    let output = Command::new(mediavault)
        .args(["keys", "generate", "--id", "chaos"])
        .output()
        .with_context(|| format!("running {}", mediavault.display()))?;
    if !output.status.success() {
        bail!(
            "keys generate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    Ok(reply["key"].as_str().context("keys generate: no key")?.to_owned())
}

pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The run's own PostgreSQL cluster.
pub struct Postgres {
    home: PathBuf,
    port: u16,
    running: bool,
}

impl Postgres {
    /// The cluster in `dir/postgres`, made on the first start.
    fn new(dir: &Path, port: u16) -> Postgres {
        Postgres {
            home: dir.join("postgres"),
            port,
            running: false,
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the cluster (making it the first time); returns once it accepts
    /// connections.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let (home, port) = (self.home.display().to_string(), self.port.to_string());
        Self::run(&["start", &home, &port]).await?;
        self.running = true;
        Ok(())
    }

    /// `pg_ctl stop -m immediate`: every backend quits at once, no checkpoint,
    /// as on a crash; the next start replays the WAL.
    pub async fn stop_immediate(&mut self) -> anyhow::Result<()> {
        let home = self.home.display().to_string();
        Self::run(&["stop", &home, "immediate"]).await?;
        self.running = false;
        Ok(())
    }

    fn command(args: &[&str]) -> Command {
        let mut command = Command::new("bash");
        command
            .args(["-c", PRIVATE_POSTGRES, "private-postgres.sh"])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    async fn run(args: &[&str]) -> anyhow::Result<()> {
        let output = tokio::process::Command::from(Self::command(args))
            .output()
            .await
            .context("running scripts/private-postgres.sh")?;
        if !output.status.success() {
            bail!(
                "private-postgres.sh {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr),
            );
        }
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let home = self.home.display().to_string();
            let _ = Self::command(&["stop", &home, "immediate"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A process's resident memory (KiB) and open file descriptors.
pub fn rss_and_fds(pid: u32) -> anyhow::Result<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok((rss, fds))
}
