//! The binary's command line and its embedded default, run as an operator would.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{Backends, MEDIAVAULT, Stores, cli};

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

    let command: String = hint
        .lines()
        .map(|l| l.trim().trim_end_matches('\\'))
        .collect::<Vec<_>>()
        .join(" ");
    let output = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let body: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    assert_eq!(
        body["status"],
        "success",
        "{command}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
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

/// `reap --once` while another replica's pass holds the reaper lock says
/// it skipped, rather than printing zeros that read as an empty pass.
#[tokio::test]
async fn reap_once_says_when_another_pass_holds_the_lock() {
    use sqlx::Connection;
    // The advisory-lock key every replica's reaper takes ("mvreap").
    const REAPER_LOCK_KEY: i64 = 0x6d76_7265_6170;
    let stores = Stores::new(Backends::PostgresFiles).await;
    let (ok, _, err) = cli(&stores, &["migrate"]);
    assert!(ok, "{err}");
    let mut other_replica = sqlx::PgConnection::connect(&stores.database_url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(REAPER_LOCK_KEY)
        .execute(&mut other_replica)
        .await
        .unwrap();

    let (ok, out, err) = cli(&stores, &["reap", "--once"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["skipped"], "another pass holds the lock", "{out}");
    for count in ["expired", "deleted", "abandoned"] {
        assert_eq!(report[count], 0, "{out}");
    }

    other_replica.close().await.unwrap();
    let (ok, out, err) = cli(&stores, &["reap", "--once"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(report.get("skipped").is_none(), "{out}");
    assert_eq!(report["expired"], 0, "{out}");
}
