//! The binary's command line and its embedded default, run as an operator would.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{Backends, MEDIAVAULT, Server, Stores, cli};

#[tokio::test]
async fn apps_and_tokens_print_json() {
    for backends in [Backends::SqliteFiles, Backends::PostgresFiles] {
        let stores = Stores::new(backends).await;
        let (ok, out, err) = cli(&stores, &["migrate"]);
        assert!(ok, "{err}");
        let (ok, out2, err) = cli(
            &stores,
            &["apps", "create", "--name", "shop", "--retention", "90s"],
        );
        assert!(ok, "{out} {err}");
        let app: Value = serde_json::from_str(&out2).unwrap();
        assert_eq!(app["name"], "shop");
        assert_eq!(app["capi"], true, "apps are CAPI unless told");
        assert_eq!(app["retentionSeconds"], 90);
        assert_eq!(app["maxFileBytes"], 104_857_600);
        let app_id = app["appId"].as_str().unwrap();
        let (ok, out, err) = cli(
            &stores,
            &["apps", "create", "--name", "legacy", "--capi", "false"],
        );
        assert!(ok, "{err}");
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["capi"], false);

        let (ok, out, err) = cli(&stores, &["tokens", "issue", "--app", app_id]);
        assert!(ok, "{err}");
        let token: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(token["appId"], app_id);
        assert!(token["token"].as_str().unwrap().starts_with("mv_"));

        let (ok, out, _) = cli(&stores, &["apps", "list"]);
        assert!(ok);
        assert_eq!(
            serde_json::from_str::<Value>(&out)
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            2
        );

        let (ok, _, err) = cli(&stores, &["tokens", "issue", "--app", "nope"]);
        assert!(!ok);
        assert!(err.contains("no app"), "{err}");
    }
}

#[test]
fn keys_generate_prints_a_usable_key_line() {
    let output = Command::new(MEDIAVAULT)
        .args(["keys", "generate", "--id", "k2"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let line: Value = serde_json::from_slice(&output.stdout).unwrap();
    let key = line["key"].as_str().unwrap();
    assert!(key.starts_with("k2:"));
    mediavault_storage::Keyring::parse(key).unwrap();
}

#[tokio::test]
async fn postgres_without_an_explicit_key_refuses_to_start() {
    let stores = Stores::new(Backends::PostgresFiles).await;
    let output = Command::new(MEDIAVAULT)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(stores.dir())
        .env("MEDIAVAULT__DATABASE__URL", &stores.database_url)
        .env("MEDIAVAULT__BLOBS__URL", &stores.blobs.url)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("crypto.keys"), "{stderr}");
}

#[test]
fn invalid_configuration_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(MEDIAVAULT)
        .args(["migrate"])
        .current_dir(dir.path())
        .env("MEDIAVAULT__MEDIA__MAX_FILE_BYTES", "lots")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.to_lowercase().contains("media.max_file_bytes"), "{stderr}");
}

/// Starts the embedded default in `dir` exactly as `make run` does (no
/// configuration at all); returns the base URL, the curl line it printed and
/// the child.
fn start_embedded(dir: &std::path::Path) -> (String, String, std::process::Child) {
    let mut child = Command::new(MEDIAVAULT)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_owned();
    // Keep draining stderr for the life of the child, so that it never
    // writes into a closed pipe; hand back the curl command it printed.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (hint_tx, hint_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = stderr.lines().map_while(Result::ok);
        let mut hint = String::new();
        for line in lines.by_ref() {
            if line.contains("curl ") {
                hint = line;
                for _ in 0..3 {
                    hint.push('\n');
                    hint.push_str(&lines.next().unwrap_or_default());
                }
                break;
            }
        }
        let _ = hint_tx.send(hint);
        lines.for_each(drop);
    });
    let hint = hint_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("curl command on stderr");
    (base, hint, child)
}

/// Runs the curl command the embedded default printed, in `dir`; fails
/// unless the upload succeeds.
fn upload_as_printed(dir: &std::path::Path, hint: &str) {
    let command: String = hint
        .lines()
        .map(|l| l.trim().trim_end_matches('\\'))
        .collect::<Vec<_>>()
        .join(" ");
    let output = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .current_dir(dir)
        .output()
        .unwrap();
    let body: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    assert_eq!(
        body["status"],
        "success",
        "{command}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn embedded_default_makes_a_dev_app_once_and_its_curl_works() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.md"), "hello from the readme\n").unwrap();
    let (base, hint, mut child) = start_embedded(dir.path());
    assert!(
        hint.contains(&base),
        "the printed command targets the bound address: {hint}"
    );
    for file in ["data/dev.key", "data/dev-token"] {
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    assert!(dir.path().join("data/mediavault.db").exists());

    upload_as_printed(dir.path(), &hint);
    child.kill().unwrap();
    child.wait().unwrap();

    let token = std::fs::read_to_string(dir.path().join("data/dev-token")).unwrap();
    let (_, second_hint, mut child) = start_embedded(dir.path());
    assert!(
        second_hint.contains(token.trim()),
        "a second start reuses the dev token"
    );
    let url_path = |h: &str| {
        h.split("/partner/app/")
            .nth(1)
            .map(|s| s.split('/').next().unwrap().to_owned())
    };
    assert_eq!(url_path(&hint), url_path(&second_hint), "and the dev app");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A lost `data/dev.key` is not made anew while the database holds media it
/// wrapped: a new key under the same id would read none of them. The start
/// stops and says what to restore, and no key file is written.
#[test]
fn embedded_mode_never_regenerates_a_key_its_media_need() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.md"), "hello from the readme\n").unwrap();
    let (_, hint, mut child) = start_embedded(dir.path());
    upload_as_printed(dir.path(), &hint);
    child.kill().unwrap();
    child.wait().unwrap();

    let key_file = dir.path().join("data/dev.key");
    std::fs::remove_file(&key_file).unwrap();
    let output = support::exit_within(
        Command::new(MEDIAVAULT)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(dir.path()),
        std::time::Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started with a new key: {stderr}");
    assert!(
        stderr.contains("data/dev.key is missing") && stderr.contains("restore"),
        "{stderr}"
    );
    assert!(!key_file.exists(), "no new key is written");
}

/// The newest schema version this build knows: its newest migration.
fn newest_migration() -> i64 {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations/postgres");
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name.split('_').next()?.parse().ok()
        })
        .max()
        .unwrap()
}

/// Only `migrate` and `serve` change the schema. Every other command
/// refuses a database whose schema is older (here: never migrated) or newer
/// than the one it knows, naming both versions, and leaves it as it was;
/// `serve` told not to migrate refuses an older one too, and tolerates a
/// newer one (a rolling deploy next to newer replicas).
#[tokio::test]
async fn only_migrate_and_serve_change_the_schema() {
    let known = newest_migration().to_string();
    for backends in [Backends::SqliteFiles, Backends::PostgresFiles] {
        let stores = Stores::unmigrated(backends).await;
        let (ok, _, err) = cli(&stores, &["apps", "list"]);
        assert!(!ok, "{backends:?}: ran against an unmigrated database");
        assert!(
            err.contains("version none (never migrated), older than version")
                && err.contains(&known)
                && err.contains("mediavault migrate"),
            "{backends:?}: {err}"
        );
        let no_migration = [("MEDIAVAULT__DATABASE__MIGRATE_ON_START", "false")];
        let output = support::exit_within(
            Command::new(MEDIAVAULT)
                .args(["serve", "--listen", "127.0.0.1:0"])
                .current_dir(stores.dir())
                .envs(stores.env())
                .envs(no_migration),
            std::time::Duration::from_secs(30),
        );
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{backends:?}: served an unmigrated database"
        );
        assert!(
            err.contains("never migrated"),
            "{backends:?}: the refusals left the schema as it was: {err}"
        );
        let (ok, _, err) = cli(&stores, &["migrate"]);
        assert!(ok, "{backends:?}: {err}");
        let (ok, out, err) = cli(&stores, &["apps", "list"]);
        assert!(ok, "{backends:?}: {err}");
        assert_eq!(out.trim(), "[]");
    }

    // A newer release has migrated the database further.
    let stores = Stores::new(Backends::PostgresFiles).await;
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&stores.database_url)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (20991231000000, 'from a newer release', TRUE, '\\x00', 0)",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let (ok, _, err) = cli(&stores, &["apps", "list"]);
    assert!(!ok, "ran against a newer schema");
    assert!(
        err.contains("version 20991231000000, newer than version") && err.contains(&known),
        "{err}"
    );
    let _serving = Server::start(&stores);
}

/// `serve` rewrites the key table every `reaper.rewrite_keys_every`, and
/// logs each rewrite with its duration.
#[tokio::test]
async fn serve_rewrites_the_key_table_on_its_schedule() {
    let every = [("MEDIAVAULT__REAPER__REWRITE_KEYS_EVERY", "1s")];
    let f = support::Fixture::with_env(Backends::PostgresFiles, &every).await;
    f.upload(&support::png_bytes(1_000)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !f.server.log().contains("key table rewritten") {
        assert!(
            std::time::Instant::now() < deadline,
            "no rewrite logged:\n{}",
            f.server.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let line = f
        .server
        .log()
        .lines()
        .find(|line| line.contains("key table rewritten"))
        .unwrap()
        .to_owned();
    assert!(line.contains("seconds="), "{line}");
}
