//! Shared fixtures for the suites in `tests/`: fresh real backends per test
//! (a new Postgres database, a new S3 prefix in Garage, or a temporary
//! directory for SQLite and files) and the real `mediavault` binary.
//!
//! The coordinates of PostgreSQL and Garage come from the environment that
//! `scripts/test-services.sh` writes (`make test` sources it). A missing or
//! unreachable service fails the test with a message; nothing is skipped.

use std::process::{Command, Stdio};
use std::time::Duration;

use mediavault_storage::{BlobConfig, ConfiguredKeys, Defaults, Keyring, Vault, VaultConfig};
use mediavault_test_support::services::test_env;
use mediavault_test_support::{START_WITHIN, ServeProcess};
use secrecy::ExposeSecret;
use sqlx::Connection;

pub const MEDIAVAULT: &str = env!("CARGO_BIN_EXE_mediavault");

/// Which real backends a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backends {
    /// The embedded default: SQLite and a local directory.
    SqliteFiles,
    /// SQLite metadata, blobs in Garage.
    SqliteS3,
    /// Postgres metadata, blobs in a local directory.
    PostgresFiles,
    /// Production: Postgres and Garage.
    PostgresS3,
}

pub const ALL_BACKENDS: [Backends; 4] = [
    Backends::SqliteFiles,
    Backends::SqliteS3,
    Backends::PostgresFiles,
    Backends::PostgresS3,
];

/// One test's private stores; dropped at the end of the test.
pub struct Stores {
    pub backends: Backends,
    pub database_url: String,
    pub blobs: BlobConfig,
    /// `crypto.keys`; empty: none (a token holds the keys).
    pub keys: String,
    /// More settings every process on these stores gets, as environment
    /// variables (say, a PKCS#11 token's).
    pub settings: Vec<(String, String)>,
    dir: tempfile::TempDir,
    postgres_db: Option<String>,
}

impl Stores {
    /// Fresh stores with the schema migrated, as an installation has it
    /// after `mediavault migrate` (commands other than `migrate` and `serve`
    /// never migrate).
    pub async fn new(backends: Backends) -> Stores {
        let stores = Stores::unmigrated(backends).await;
        stores.vault().await.close().await;
        stores
    }

    /// Fresh stores whose database has never been migrated.
    pub async fn unmigrated(backends: Backends) -> Stores {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (database_url, postgres_db) = match backends {
            Backends::SqliteFiles | Backends::SqliteS3 => {
                (format!("sqlite://{}/mediavault.db", dir.path().display()), None)
            }
            Backends::PostgresFiles | Backends::PostgresS3 => {
                let (url, name) = fresh_postgres_database().await;
                (url, Some(name))
            }
        };
        let blobs = match backends {
            Backends::SqliteFiles | Backends::PostgresFiles => {
                BlobConfig::local(dir.path().join("blobs").display().to_string())
            }
            Backends::SqliteS3 | Backends::PostgresS3 => s3_blob_config(),
        };
        Stores {
            backends,
            database_url,
            blobs,
            keys: Keyring::generate_line("test1"),
            settings: Vec::new(),
            dir,
            postgres_db,
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn vault_config(&self) -> VaultConfig {
        // Without configured keys (a token holds them), a key of its own:
        // this vault lists rows and blobs, and wraps and unwraps nothing.
        let keys = match self.keys.as_str() {
            "" => Keyring::generate_line("inventory"),
            keys => keys.to_owned(),
        };
        VaultConfig {
            database_url: self.database_url.parse().unwrap(),
            blobs: self.blobs.clone(),
            keys: Keyring::parse(&keys).unwrap(),
            defaults: Defaults::default(),
            stale_upload_after: Duration::from_secs(3600),
        }
    }

    /// A vault on these stores, migrated.
    pub async fn vault(&self) -> Vault {
        let vault = Vault::open(self.vault_config()).await.expect("open vault");
        vault.migrate().await.expect("migrate");
        vault
    }

    /// The environment that points a `mediavault` process at these stores.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("MEDIAVAULT__DATABASE__URL".into(), self.database_url.clone()),
            ("MEDIAVAULT__BLOBS__URL".into(), self.blobs.url.clone()),
            ("MEDIAVAULT__BLOBS__TIMEOUT".into(), "10s".into()),
        ];
        if !self.keys.is_empty() {
            env.push(("MEDIAVAULT__CRYPTO__KEYS".into(), self.keys.clone()));
        }
        env.extend(self.settings.iter().cloned());
        let secret_access_key = self
            .blobs
            .secret_access_key
            .as_ref()
            .map(|s| s.expose_secret().to_owned());
        let optional = [
            ("ENDPOINT", &self.blobs.endpoint),
            ("REGION", &self.blobs.region),
            ("ACCESS_KEY_ID", &self.blobs.access_key_id),
            ("SECRET_ACCESS_KEY", &secret_access_key),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                env.push((format!("MEDIAVAULT__BLOBS__{key}"), value.clone()));
            }
        }
        if self.blobs.allow_http {
            env.push(("MEDIAVAULT__BLOBS__ALLOW_HTTP".into(), "true".into()));
        }
        env
    }

    /// Media rows and stored blobs, as (row blob keys, stored blob keys).
    pub async fn inventory(&self) -> (Vec<String>, Vec<String>) {
        let vault = self.vault().await;
        let rows = vault.referenced_blob_keys().await.expect("row keys");
        let mut blobs = vault.stored_blob_keys().await.expect("blob keys");
        blobs.sort();
        vault.close().await;
        (rows, blobs)
    }
}

impl Drop for Stores {
    fn drop(&mut self) {
        let s3 = matches!(self.backends, Backends::SqliteS3 | Backends::PostgresS3);
        let postgres_db = self.postgres_db.take();
        let blobs = self.blobs.clone();
        // Drop runs outside any runtime guarantee: clean up on a thread of its own.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if s3 {
                    clear_s3_prefix(&blobs).await;
                }
                if let Some(name) = postgres_db {
                    drop_postgres_database(&name).await;
                }
            });
        })
        .join()
        .ok();
    }
}

async fn admin_connection() -> sqlx::PgConnection {
    let url = test_env("MEDIAVAULT_TEST_DATABASE_URL");
    sqlx::PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is unreachable: {e}"))
}

/// A new, empty database; returns its URL and name.
pub async fn fresh_postgres_database() -> (String, String) {
    let name = format!("mv_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = admin_connection().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = test_env("MEDIAVAULT_TEST_DATABASE_URL");
    let server = base.rsplit_once('/').map(|(server, _)| server).unwrap_or(&base);
    (format!("{server}/{name}"), name)
}

pub async fn drop_postgres_database(name: &str) {
    let mut admin = admin_connection().await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
}

/// A fresh prefix in the Garage test bucket.
pub fn s3_blob_config() -> BlobConfig {
    BlobConfig {
        url: format!(
            "s3://{}/test-{}",
            test_env("MEDIAVAULT_TEST_S3_BUCKET"),
            uuid::Uuid::new_v4().simple()
        ),
        endpoint: Some(test_env("MEDIAVAULT_TEST_S3_ENDPOINT")),
        region: Some("garage".into()),
        access_key_id: Some(test_env("MEDIAVAULT_TEST_S3_ACCESS_KEY_ID")),
        secret_access_key: Some(test_env("MEDIAVAULT_TEST_S3_SECRET_ACCESS_KEY").into()),
        allow_http: true,
        unsigned_payload: None,
        timeout: Duration::from_secs(10),
        min_free_bytes: 0,
    }
}

/// The blob store's secret key, for the test's own S3 client.
fn secret_access_key(blobs: &BlobConfig) -> &str {
    blobs.secret_access_key.as_ref().map_or("", |s| s.expose_secret())
}

async fn clear_s3_prefix(blobs: &BlobConfig) {
    use futures::{StreamExt, TryStreamExt};
    use object_store::ObjectStore;
    let rest = blobs.url.trim_start_matches("s3://");
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(blobs.endpoint.clone().unwrap_or_default())
        .with_region("garage")
        .with_access_key_id(blobs.access_key_id.clone().unwrap_or_default())
        .with_secret_access_key(secret_access_key(blobs))
        .with_allow_http(true)
        .build()
        .expect("s3 client");
    let prefix = object_store::path::Path::from(prefix);
    let Ok(keys) = store
        .list(Some(&prefix))
        .map_ok(|meta| meta.location)
        .try_collect::<Vec<_>>()
        .await
    else {
        return;
    };
    let stream = futures::stream::iter(keys.into_iter().map(Ok)).boxed();
    let _ = store.delete_stream(stream).try_collect::<Vec<_>>().await;
}

/// A running `mediavault serve` on a free loopback port; killed on drop.
pub struct Server {
    pub base_url: String,
    process: ServeProcess,
}

impl Server {
    pub fn start(stores: &Stores) -> Server {
        Server::start_with(stores, &[])
    }

    pub fn start_with(stores: &Stores, extra_env: &[(&str, &str)]) -> Server {
        let stderr_path = stores
            .dir()
            .join(format!("server-{}.log", uuid::Uuid::new_v4().simple()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut command = Command::new(MEDIAVAULT);
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(stores.dir())
            .env("RUST_LOG", "info")
            .envs(stores.env())
            .stderr(stderr);
        // Rate limits have suites of their own (which set them low); here they
        // would only slow suites that upload in bursts.
        command
            .env("MEDIAVAULT__LIMITS__UPLOADS_PER_SECOND", "100000")
            .env("MEDIAVAULT__LIMITS__UPLOAD_BURST", "100000")
            .env("MEDIAVAULT__LIMITS__AUTH_FAILURES_PER_HOUR", "100000");
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let process = ServeProcess::start(&mut command, Some(&stderr_path), START_WITHIN)
            .unwrap_or_else(|failure| panic!("{failure}"));
        Server {
            base_url: process.base_url().to_owned(),
            process,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.process.url(path)
    }

    /// All the server has logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Waits for the process to exit; returns its status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.process.wait().expect("wait for mediavault")
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

/// Runs `mediavault ARGS` against `stores`; returns (exit ok, stdout, stderr).
pub fn cli(stores: &Stores, args: &[&str]) -> (bool, String, String) {
    cli_with(stores, args, &[])
}

/// `cli` with extra environment variables.
pub fn cli_with(stores: &Stores, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(MEDIAVAULT);
    command.args(args).current_dir(stores.dir()).envs(stores.env());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run mediavault");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `mediavault keys usage`, as it printed it.
pub fn keys_usage(stores: &Stores) -> serde_json::Value {
    let (ok, out, err) = cli(stores, &["keys", "usage"]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// Starts `serve`, expecting it to refuse (a key missing, or not the one
/// recorded); returns its stderr.
pub fn refused_start(stores: &Stores) -> String {
    let output = exit_within(
        Command::new(MEDIAVAULT)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(stores.dir())
            .envs(stores.env()),
        Duration::from_secs(30),
    );
    assert!(!output.status.success(), "serve started without a needed key");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Creates an app (CAPI unless told) and a token for it through the CLI.
pub fn app_and_token(stores: &Stores, capi: bool) -> (String, String) {
    let capi = capi.to_string();
    let (ok, out, err) = cli(stores, &["apps", "create", "--name", "test", "--capi", &capi]);
    assert!(ok, "apps create failed: {err}");
    let app: serde_json::Value = serde_json::from_str(&out).unwrap();
    let app_id = app["appId"].as_str().unwrap().to_owned();
    (app_id.clone(), issue_token(stores, &app_id))
}

/// Creates a CAPI app whose media live for `retention`, and a token for it.
pub fn app_with_retention(stores: &Stores, retention: &str) -> (String, String) {
    let (ok, out, err) = cli(
        stores,
        &["apps", "create", "--name", "test", "--retention", retention],
    );
    assert!(ok, "apps create failed: {err}");
    let app_id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["appId"]
        .as_str()
        .unwrap()
        .to_owned();
    (app_id.clone(), issue_token(stores, &app_id))
}

fn issue_token(stores: &Stores, app_id: &str) -> String {
    let (ok, out, err) = cli(stores, &["tokens", "issue", "--app", app_id]);
    assert!(ok, "tokens issue failed: {err}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Deterministic bytes of a given length that start like a PNG file.
pub fn png_bytes(len: usize) -> Vec<u8> {
    const HEADER: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
    let mut bytes: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let n = HEADER.len().min(len);
    bytes[..n].copy_from_slice(&HEADER[..n]);
    bytes
}

/// One app with a token, and a server on fresh stores: what most
/// end-to-end tests start from.
pub struct Fixture {
    pub stores: Stores,
    pub server: Server,
    pub app_id: String,
    pub token: String,
    pub client: reqwest::Client,
}

impl Fixture {
    pub async fn new(backends: Backends) -> Fixture {
        Fixture::with_env(backends, &[]).await
    }

    /// A fresh CAPI app on fresh stores, served with extra environment.
    pub async fn with_env(backends: Backends, env: &[(&str, &str)]) -> Fixture {
        let stores = Stores::new(backends).await;
        let (app_id, token) = app_and_token(&stores, true);
        Fixture::serve(stores, app_id, token, env)
    }

    /// Starts a server on `stores` (with extra environment) for an existing app.
    pub fn serve(stores: Stores, app_id: String, token: String, env: &[(&str, &str)]) -> Fixture {
        let server = Server::start_with(&stores, env);
        Fixture {
            stores,
            server,
            app_id,
            token,
            client: reqwest::Client::new(),
        }
    }

    /// Stops the server, lets `change` alter the stores' configuration (say,
    /// the keys), and serves the same stores and app again.
    pub fn restart(self, change: impl FnOnce(&mut Stores)) -> Fixture {
        self.restart_with(change, &[])
    }

    /// `restart`, serving with extra environment (none of the last start's).
    pub fn restart_with(self, change: impl FnOnce(&mut Stores), env: &[(&str, &str)]) -> Fixture {
        let Fixture {
            mut stores,
            server,
            app_id,
            token,
            ..
        } = self;
        drop(server);
        change(&mut stores);
        Fixture::serve(stores, app_id, token, env)
    }

    /// Stops the server; returns the stores, with everything they hold.
    pub fn stop(self) -> Stores {
        self.stores
    }

    /// `/partner/app/{app}/media`.
    pub fn media_url(&self) -> String {
        self.media_url_with("")
    }

    /// `/partner/app/{app}/media{tail}`.
    pub fn media_url_with(&self, tail: &str) -> String {
        self.server
            .url(&format!("/partner/app/{}/media{tail}", self.app_id))
    }

    /// Posts an upload form with the app's token; returns status and JSON body.
    pub async fn post(&self, form: reqwest::multipart::Form) -> (reqwest::StatusCode, serde_json::Value) {
        let response = self.post_response(form).await;
        let status = response.status();
        (status, response.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Posts an upload form with the app's token; returns the response.
    pub async fn post_response(&self, form: reqwest::multipart::Form) -> reqwest::Response {
        self.client
            .post(self.media_url())
            .header("token", &self.token)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Maps WhatsApp phone-number id `phone` to the app, through the CLI.
    pub fn map_phone_number_id(&self, phone: &str) {
        let (ok, out, err) = cli(
            &self.stores,
            &[
                "apps",
                "update",
                "--app",
                &self.app_id,
                "--wa-phone-number-id",
                phone,
            ],
        );
        assert!(ok, "{out} {err}");
    }

    /// Uploads `bytes` as a PNG named like a holiday photo; returns the media id.
    pub async fn upload(&self, bytes: &[u8]) -> String {
        let part = reqwest::multipart::Part::bytes(bytes.to_vec())
            .file_name("holiday photo \"1\".png")
            .mime_str("image/png")
            .unwrap();
        let form = reqwest::multipart::Form::new()
            .text("file_type", "image/png")
            .part("file", part);
        let (status, body) = self.post(form).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        body["mediaId"].as_str().unwrap().to_owned()
    }

    /// A request with the app's token to `/partner/app/{app}/media{tail}`.
    pub async fn request(
        &self,
        method: reqwest::Method,
        tail: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, self.media_url_with(tail))
            .header("token", &self.token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// Uploads `bytes`; returns the media id and its blob key.
    pub async fn upload_keyed(&self, bytes: &[u8]) -> (String, String) {
        let (before, _) = self.inventory().await;
        let id = self.upload(bytes).await;
        let (after, _) = self.inventory().await;
        let key = after
            .into_iter()
            .find(|key| !before.contains(key))
            .expect("a new blob key");
        (id, key)
    }

    pub async fn download(&self, media_id: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, &format!("/{media_id}"), &[])
            .await
    }

    /// Fails unless there are exactly `rows` media rows and as many blobs,
    /// each row with its blob.
    pub async fn assert_stored(&self, rows: usize) {
        let (row_keys, blob_keys) = self.inventory().await;
        assert_eq!(row_keys.len(), rows, "media rows: {row_keys:?}");
        assert_eq!(
            row_keys, blob_keys,
            "every row has its blob and no blob lacks a row"
        );
    }

    pub async fn inventory(&self) -> (Vec<String>, Vec<String>) {
        self.stores.inventory().await
    }
}

/// A loopback TCP forwarder that can be shut, to take a real service away
/// from the server under test and give it back.
pub struct Gate {
    pub addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    /// Every byte the client sent through the gate, when recording.
    sent: Option<std::sync::Arc<std::sync::Mutex<Vec<u8>>>>,
}

impl Gate {
    /// Forwards to `target` (`host:port`) while open. Runs on the caller's runtime.
    pub async fn new(target: &str, open: bool) -> Gate {
        Gate::start(target, open, None, false).await
    }

    /// A shut gate that accepts connections and holds them without a byte
    /// of answer, as a hung store does, until `open` (then it forwards).
    pub async fn silent(target: &str) -> Gate {
        Gate::start(target, false, None, true).await
    }

    /// An open gate that keeps what the client sends, for `sent`.
    pub async fn recording(target: &str) -> Gate {
        Gate::start(target, true, Some(Default::default()), false).await
    }

    async fn start(
        target: &str,
        open: bool,
        sent: Option<std::sync::Arc<std::sync::Mutex<Vec<u8>>>>,
        hold: bool,
    ) -> Gate {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gate = Gate {
            addr: listener.local_addr().unwrap(),
            open: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(open)),
            connections: Default::default(),
            sent,
        };
        let (is_open, connections, target) = (gate.open.clone(), gate.connections.clone(), target.to_owned());
        let record = gate.sent.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((inbound, _)) = listener.accept().await {
                if !is_open.load(std::sync::atomic::Ordering::SeqCst) {
                    if hold {
                        held.push(inbound);
                    }
                    continue;
                }
                let (target, record) = (target.clone(), record.clone());
                let task = tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_store, mut to_store) = outbound.into_split();
                    let upstream = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                            if let Some(record) = &record {
                                record.lock().unwrap().extend_from_slice(&buf[..n]);
                            }
                            if to_store.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_store.shutdown().await;
                    };
                    let downstream = async {
                        let _ = tokio::io::copy(&mut from_store, &mut to_client).await;
                        let _ = to_client.shutdown().await;
                    };
                    tokio::join!(upstream, downstream);
                });
                connections.lock().unwrap().push(task.abort_handle());
            }
        });
        gate
    }

    /// What clients have sent through a recording gate so far, as text.
    pub fn sent(&self) -> String {
        let sent = self.sent.as_ref().expect("a recording gate");
        String::from_utf8_lossy(&sent.lock().unwrap()).into_owned()
    }

    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Refuses new connections and cuts the ones in flight.
    pub fn close(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

/// An upload form: `file_type=image/png` and a PNG-looking file of `len` bytes.
pub fn png_form(len: usize) -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::bytes(png_bytes(len))
        .file_name("photo.png")
        .mime_str("application/octet-stream")
        .unwrap();
    reqwest::multipart::Form::new()
        .text("file_type", "image/png")
        .part("file", part)
}

/// Raw access to stored blobs, as anyone with write access to the blob store
/// (not to the keys) has it: to tamper with them in tests.
impl Stores {
    pub fn raw_blob_store(&self) -> std::sync::Arc<dyn object_store::ObjectStore> {
        match self.blobs.url.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let s3 = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_endpoint(self.blobs.endpoint.clone().unwrap_or_default())
                    .with_region("garage")
                    .with_access_key_id(self.blobs.access_key_id.clone().unwrap_or_default())
                    .with_secret_access_key(secret_access_key(&self.blobs))
                    .with_allow_http(true)
                    .build()
                    .expect("s3 client");
                std::sync::Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
            }
            None => std::sync::Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(&self.blobs.url)
                    .expect("blob directory"),
            ),
        }
    }

    /// The stored bytes of blob `key` (a key as `inventory` lists it).
    pub async fn read_blob(&self, key: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt;
        let store = self.raw_blob_store();
        let found = store.get(&key.into()).await.expect("read blob");
        found.bytes().await.expect("read blob").to_vec()
    }

    /// Removes blob `key` from the store.
    pub async fn delete_blob(&self, key: &str) {
        use object_store::ObjectStoreExt;
        self.raw_blob_store()
            .delete(&key.into())
            .await
            .expect("delete blob");
    }

    /// Replaces blob `key` with `bytes`.
    pub async fn write_blob(&self, key: &str, bytes: Vec<u8>) {
        use object_store::ObjectStoreExt;
        self.raw_blob_store()
            .put(&key.into(), bytes.into())
            .await
            .expect("write blob");
    }
}

/// Reads a response body until it ends or fails; returns the bytes received
/// and whether it failed (a body cut before its end is an error, not a
/// short file).
pub async fn body_until_error(response: reqwest::Response) -> (Vec<u8>, bool) {
    use futures::StreamExt;
    let mut received = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => received.extend_from_slice(&chunk),
            Err(_) => return (received, true),
        }
    }
    (received, false)
}

/// Runs `command` expecting it to exit (a start that must be refused):
/// returns its output, or fails the test if it is still running (serving)
/// after `within`.
pub fn exit_within(command: &mut Command, within: Duration) -> std::process::Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mediavault");
    let deadline = std::time::Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "still running after {within:?}, where it should have refused:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

impl Server {
    /// SIGTERM, then waits: a clean stop, as an operator's.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        self.wait()
    }
}

/// Where the database keeps wrapped data keys, with the media id each
/// belongs to: the one statement that knows the schema.
const WRAPPED_KEYS_SQL: &str = "SELECT media_id, wrapped_dek FROM media_keys";

/// Runs `sql` on the stores' database, directly, as anyone who can read it.
pub async fn fetch_rows<T>(stores: &Stores, sql: &'static str, bind: Option<&str>) -> Vec<T>
where
    T: Send + Unpin,
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
{
    // The same steps on either dialect's connection.
    macro_rules! fetch_on {
        ($connection:ty) => {{
            let mut connection = <$connection>::connect(&stores.database_url)
                .await
                .expect("connect to the database");
            let mut query = sqlx::query_as(sql);
            if let Some(value) = bind {
                query = query.bind(value);
            }
            let rows = query.fetch_all(&mut connection).await;
            connection.close().await.ok();
            rows.expect("query the database")
        }};
    }
    match stores.backends {
        Backends::PostgresFiles | Backends::PostgresS3 => fetch_on!(sqlx::PgConnection),
        Backends::SqliteFiles | Backends::SqliteS3 => fetch_on!(sqlx::SqliteConnection),
    }
}

/// Every wrapped data key left in the database, by media id.
pub async fn wrapped_keys(stores: &Stores) -> Vec<(String, Vec<u8>)> {
    fetch_rows(stores, WRAPPED_KEYS_SQL, None).await
}

/// The wrapped data key the database still holds for `media_id`, if any.
pub async fn wrapped_key_of(stores: &Stores, media_id: &str) -> Option<Vec<u8>> {
    wrapped_keys(stores)
        .await
        .into_iter()
        .find_map(|(id, wrapped)| (id == media_id).then_some(wrapped))
}

/// The blob key of `media_id`'s row, while it has one.
pub async fn blob_key_of(stores: &Stores, media_id: &str) -> Option<String> {
    let rows: Vec<(String,)> =
        fetch_rows(stores, "SELECT blob_key FROM media WHERE id = $1", Some(media_id)).await;
    rows.into_iter().next().map(|(key,)| key)
}

/// The directory and the name of a fanned-out blob key, `media/<xy>/<name>`,
/// `xy` the name's first two digits; fails on a key of any other shape.
pub fn fanned_out_key(key: &str) -> (&str, &str) {
    let (fan_out, name) = key
        .strip_prefix("media/")
        .and_then(|rest| rest.split_once('/'))
        .unwrap_or_else(|| panic!("{key} has no directory of its own"));
    assert!(fan_out.len() == 2 && name.starts_with(fan_out), "{key}");
    (fan_out, name)
}

/// Whether anything the service holds still decrypts `blob` (a copy of the
/// stored ciphertext of `media_id`, whose plaintext is `plaintext_len`
/// bytes): every wrapped key left in the database is tried under every
/// configured KEK, bound to this media id and to its own, and every data key
/// that comes out is tried on the blob.
pub async fn service_can_decrypt(stores: &Stores, media_id: &str, blob: &[u8], plaintext_len: u64) -> bool {
    let keys = ConfiguredKeys::parse(&stores.keys).unwrap();
    let kek_ids: Vec<String> = keys.ids().map(str::to_owned).collect();
    wrapped_keys(stores).await.iter().any(|(owner, wrapped)| {
        kek_ids.iter().any(|kek| {
            [media_id, owner.as_str()].into_iter().any(|bound_to| {
                keys.unwrap(bound_to, kek, wrapped).is_ok_and(|dek| {
                    mediavault_storage::seal::open_all(&dek, media_id, plaintext_len, blob).is_ok()
                })
            })
        })
    })
}

/// The media among `ids` whose data key some 60-byte window of some file
/// under `dir` unwraps under one of `keys` (an `id:base64,…` line) with
/// that media's associated data: what anyone who can read the files and
/// holds the KEK recovers, whatever the schema or the file format.
pub fn carvable_keys(dir: &std::path::Path, keys: &str, ids: &[String]) -> Vec<String> {
    let keys = ConfiguredKeys::parse(keys).unwrap();
    let kek_ids: Vec<String> = keys.ids().map(str::to_owned).collect();
    let mut found = Vec::new();
    for file in files_under(dir) {
        let Ok(bytes) = std::fs::read(&file) else {
            continue; // removed while listed
        };
        for window in bytes.windows(mediavault_storage::format::WRAPPED_DEK_LEN) {
            for id in ids {
                if !found.contains(id) && kek_ids.iter().any(|kek| keys.unwrap(id, kek, window).is_ok()) {
                    found.push(id.clone());
                }
            }
        }
    }
    found
}

/// Every regular file under `dir`, at any depth.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                Ok(kind) if kind.is_file() => files.push(entry.path()),
                _ => {}
            }
        }
    }
    files
}

/// A PKCS#11 token (SoftHSM2) for the key-provider suites: the shared one
/// `scripts/test-services.sh` initialised, or a private one a test may take
/// away and give back.
pub struct Pkcs11Token {
    module: String,
    label: String,
    pin: String,
    /// `SOFTHSM2_CONF` of a private token; the shared one's is inherited.
    conf: Option<std::path::PathBuf>,
}

impl Pkcs11Token {
    /// The token of `scripts/test-services.sh`; tests share it, each with
    /// keys of its own labels.
    pub fn shared() -> Pkcs11Token {
        test_env("SOFTHSM2_CONF");
        Pkcs11Token {
            module: test_env("MEDIAVAULT_TEST_PKCS11_MODULE"),
            label: test_env("MEDIAVAULT_TEST_PKCS11_TOKEN"),
            pin: test_env("MEDIAVAULT_TEST_PKCS11_PIN"),
            conf: None,
        }
    }

    /// A token of its own, kept in `dir`/softhsm.
    pub fn private(dir: &std::path::Path) -> Pkcs11Token {
        let home = dir.join("softhsm");
        std::fs::create_dir_all(home.join("tokens")).unwrap();
        let conf = home.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                home.join("tokens").display()
            ),
        )
        .unwrap();
        let token = Pkcs11Token {
            module: test_env("MEDIAVAULT_TEST_PKCS11_MODULE"),
            label: "private".into(),
            pin: "4321".into(),
            conf: Some(conf.clone()),
        };
        let output = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", &token.label])
            .args(["--pin", &token.pin, "--so-pin", "12345678"])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("run softhsm2-util (scripts/test-services.sh installs it)");
        assert!(
            output.status.success(),
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        token
    }

    /// Where a private token keeps its objects.
    pub fn token_dir(&self) -> std::path::PathBuf {
        let conf = self.conf.as_ref().expect("a private token");
        conf.with_file_name("tokens")
    }

    /// A key label no other test uses.
    pub fn new_label() -> String {
        format!("hsm-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
    }

    /// The settings that reach this token, with KEKs `keys` in use (the
    /// first active); `crypto.provider` is `pkcs11` unless `keys` is empty.
    pub fn settings(&self, keys: &[&str]) -> Vec<(String, String)> {
        let mut settings = vec![
            (
                "MEDIAVAULT__CRYPTO__PKCS11__MODULE".to_owned(),
                self.module.clone(),
            ),
            (
                "MEDIAVAULT__CRYPTO__PKCS11__TOKEN_LABEL".to_owned(),
                self.label.clone(),
            ),
            // Quoted: digits alone would be read as a number.
            (
                "MEDIAVAULT__CRYPTO__PKCS11__PIN".to_owned(),
                format!("{:?}", self.pin),
            ),
        ];
        if !keys.is_empty() {
            settings.push(("MEDIAVAULT__CRYPTO__PROVIDER".into(), "pkcs11".into()));
            settings.push(("MEDIAVAULT__CRYPTO__PKCS11__KEYS".into(), format!("{keys:?}")));
        }
        if let Some(conf) = &self.conf {
            settings.push(("SOFTHSM2_CONF".into(), conf.display().to_string()));
        }
        settings
    }

    /// The settings by which this process reaches the token itself, with
    /// KEKs `keys` in use.
    pub fn provider_settings(&self, keys: &[&str]) -> mediavault_storage::keys::Pkcs11Settings {
        assert!(
            self.conf.is_none(),
            "a private token is reached by its processes only"
        );
        mediavault_storage::keys::Pkcs11Settings {
            module: self.module.clone().into(),
            token: mediavault_storage::keys::TokenSelector::Label(self.label.clone()),
            pin: self.pin.clone().into(),
            keys: keys.iter().map(|key| key.to_string()).collect(),
            sessions: 4,
        }
    }

    /// Creates KEK `label` in the token with `mediavault keys generate
    /// --provider pkcs11`; returns the JSON it printed.
    pub fn create_key(&self, stores: &Stores, label: &str) -> serde_json::Value {
        let settings = self.settings(&[]);
        let env: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (ok, out, err) = cli_with(
            stores,
            &["keys", "generate", "--provider", "pkcs11", "--label", label],
            &env,
        );
        assert!(ok, "keys generate --provider pkcs11: {err}");
        serde_json::from_str(&out).unwrap()
    }
}
