//! The stores a run talks to, all its own and all on loopback: a PostgreSQL
//! cluster made and run by `scripts/private-postgres.sh` (as for the tests
//! on a machine without PostgreSQL) in a temporary directory, a single-node Garage
//! with a default bucket (as `scripts/test-services.sh` starts it), and the
//! release `mediavault serve` against both. The machine's shared PostgreSQL
//! is never touched. Dropping [`Services`] stops every process and removes
//! the directory, on failure as on success.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::TryStreamExt;
use mediavault_test_support::ServeProcess;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;

/// Makes, starts and stops the cluster (handing it to the `postgres` system
/// user when the run is root's, as `initdb` refuses root); carried in the
/// binary, so a run does not depend on where it is started from.
const PRIVATE_POSTGRES: &str = include_str!("../../../scripts/private-postgres.sh");
const BUCKET: &str = "mediavault";
/// Blobs live under this prefix, so the audit lists exactly what the service wrote.
pub const BLOB_PREFIX: &str = "chaos";
const ACCESS_KEY: &str = "GK0123456789abcdef01234567";
const SECRET_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// How long a store gets to answer after (re)starting.
const START_WITHIN: Duration = Duration::from_secs(60);

/// Where the services listen.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub postgres: u16,
    /// Garage's S3 API; its RPC port is the next one.
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
    /// starts both stores. `keep` leaves the directory (logs, data) behind.
    pub async fn start(mediavault: &Path, ports: Ports, keep: bool) -> anyhow::Result<Services> {
        for port in [ports.postgres, ports.s3, ports.s3 + 1] {
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
        let mut garage = Garage::new(dir.path(), ports.s3)?;
        garage.start().await?;
        let services = Services {
            postgres,
            garage,
            mediavault: mediavault.to_owned(),
            crypto_keys,
            servers_started: 0,
            dir: Some(dir),
        };
        // The default bucket is made during Garage's start: wait for it.
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
        (1..=self.servers_started)
            .flat_map(|n| {
                let log = self.dir().join(format!("server-{n}.log"));
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|line| line.contains("panicked"))
                    .map(|line| format!("server-{n}: {line}"))
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

    /// Rows an upload in progress or the reaper still has to settle.
    pub async fn count_unsettled(&self) -> anyhow::Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM media WHERE state <> 'ready'")
                .fetch_one(&self.database)
                .await?,
        )
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

fn tail(path: &Path, lines: usize) -> String {
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

/// The run's own single-node Garage.
pub struct Garage {
    config: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Garage {
    fn new(dir: &Path, port: u16) -> anyhow::Result<Garage> {
        let home = dir.join("garage");
        std::fs::create_dir_all(home.join("meta"))?;
        std::fs::create_dir_all(home.join("data"))?;
        let rpc = port + 1;
        let config = home.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{home}/meta"
data_dir = "{home}/data"
db_engine = "sqlite"
replication_factor = 1
# Blobs arrive encrypted: compressing them only burns CPU.
compression_level = "none"
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret:064}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{port}"
root_domain = ".s3.garage.localhost"
"#,
                home = home.display(),
                secret = 0
            ),
        )?;
        Ok(Garage {
            config,
            log: home.join("garage.log"),
            port,
            child: None,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts Garage (again) on the same data; returns once its S3 API answers.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let binary = std::env::var_os("GARAGE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin/garage")))
            .filter(|path| path.is_file())
            .unwrap_or_else(|| PathBuf::from("garage"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&self.config)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", ACCESS_KEY)
            .env("GARAGE_DEFAULT_SECRET_KEY", SECRET_KEY)
            .env("GARAGE_DEFAULT_BUCKET", BUCKET)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (scripts/test-services.sh installs it)",
                    binary.display()
                )
            })?;
        self.child = Some(child);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + START_WITHIN;
        loop {
            // Any HTTP answer (403 to an anonymous request) means the API is up.
            if client.get(self.endpoint()).send().await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("garage exited at start ({status}):\n{}", tail(&self.log, 20));
            }
            if Instant::now() > deadline {
                bail!(
                    "garage did not answer on {}:\n{}",
                    self.endpoint(),
                    tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.kill();
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
