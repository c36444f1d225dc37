//! The binary's command line and its embedded default, run as an operator would.

use crate::support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use mediavault_storage::Keyring;
use mediavault_test_support::{START_WITHIN, ServeProcess};
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

/// `apps create|update` map WhatsApp phone-number ids (repeated flags; an
/// update's replace the set) and set the WhatsApp type limits (in the
/// order given); `apps show` and `apps list` print them.
#[tokio::test]
async fn apps_map_whatsapp_phone_numbers_and_type_limits() {
    for backends in [Backends::SqliteFiles, Backends::PostgresFiles] {
        let stores = Stores::new(backends).await;
        let run = |args: &[&str]| -> (String, Value) {
            let (ok, out, err) = cli(&stores, args);
            assert!(ok, "{args:?}: {err}");
            let value = serde_json::from_str(&out).unwrap();
            (out, value)
        };
        let refused = |args: &[&str]| -> String {
            let (ok, out, err) = cli(&stores, args);
            assert!(!ok, "{args:?} passed: {out}");
            err
        };

        let (_, plain) = run(&["apps", "create", "--name", "plain"]);
        assert_eq!(plain["waPhoneNumberIds"], serde_json::json!([]));
        assert!(plain["waTypeLimits"].is_null(), "Meta's: {plain}");

        let (out, app) = run(&[
            "apps",
            "create",
            "--name",
            "wa",
            "--wa-phone-number-id",
            "106540352242922",
            "--wa-phone-number-id",
            "106540352242911",
            "--wa-type-limit",
            "video/mp4=1000",
            "--wa-type-limit",
            "Image/GIF=20",
        ]);
        let app_id = app["appId"].as_str().unwrap();
        assert_eq!(
            app["waPhoneNumberIds"],
            serde_json::json!(["106540352242911", "106540352242922"])
        );
        assert!(
            out.contains(r#""waTypeLimits":{"video/mp4":1000,"image/gif":20}"#),
            "in the order given: {out}"
        );
        let (shown, _) = run(&["apps", "show", "--app", app_id]);
        assert_eq!(shown, out, "show prints what create did");

        // An id another app holds refuses the whole command.
        let err = refused(&[
            "apps",
            "create",
            "--name",
            "b",
            "--wa-phone-number-id",
            "106540352242922",
        ]);
        assert!(
            err.contains("phone number id 106540352242922 is mapped to another app"),
            "{err}"
        );
        let plain_id = plain["appId"].as_str().unwrap();
        let err = refused(&[
            "apps",
            "update",
            "--app",
            plain_id,
            "--name",
            "renamed",
            "--wa-phone-number-id",
            "106540352242911",
        ]);
        assert!(err.contains("mapped to another app"), "{err}");
        let (_, listed) = run(&["apps", "list"]);
        assert_eq!(listed.as_array().unwrap().len(), 2, "no app was made");
        assert_eq!(listed[0]["name"], "plain", "nothing changed");

        // Repeated flags replace the set and the list; others leave them.
        let (_, updated) = run(&["apps", "update", "--app", app_id, "--wa-phone-number-id", "42"]);
        assert_eq!(updated["waPhoneNumberIds"], serde_json::json!(["42"]));
        assert_eq!(updated["waTypeLimits"]["video/mp4"], 1000, "left as it was");
        let (out, _) = run(&[
            "apps",
            "update",
            "--app",
            app_id,
            "--wa-type-limit",
            "image/png=5242880",
        ]);
        assert!(out.contains(r#""waTypeLimits":{"image/png":5242880}"#), "{out}");
        let (_, listed) = run(&["apps", "list"]);
        assert_eq!(listed[1]["waPhoneNumberIds"], serde_json::json!(["42"]));
        assert_eq!(listed[0]["waPhoneNumberIds"], serde_json::json!([]));
        let (_, cleared) = run(&[
            "apps",
            "update",
            "--app",
            app_id,
            "--no-wa-phone-number-ids",
            "--default-wa-type-limits",
        ]);
        assert_eq!(cleared["waPhoneNumberIds"], serde_json::json!([]));
        assert!(cleared["waTypeLimits"].is_null(), "{cleared}");
        let (_, moved) = run(&[
            "apps",
            "update",
            "--app",
            plain_id,
            "--wa-phone-number-id",
            "106540352242911",
        ]);
        assert_eq!(
            moved["waPhoneNumberIds"],
            serde_json::json!(["106540352242911"]),
            "freed by the clear"
        );

        for (args, says) in [
            (&["--wa-phone-number-id", "12a"][..], "waPhoneNumberIds"),
            (&["--wa-type-limit", "image/png"][..], "TYPE=BYTES"),
            (&["--wa-type-limit", "image/png=5MiB"][..], "number of bytes"),
            (&["--wa-type-limit", "image/png=0"][..], "waTypeLimits"),
            (&["--wa-type-limit", "png=10"][..], "type/subtype"),
            (
                &["--wa-type-limit", "image/png=1", "--wa-type-limit", "image/png=2"][..],
                "listed twice",
            ),
            (
                &["--wa-phone-number-id", "1", "--no-wa-phone-number-ids"][..],
                "cannot be used with",
            ),
            (
                &["--wa-type-limit", "image/png=1", "--default-wa-type-limits"][..],
                "cannot be used with",
            ),
        ] {
            let err = refused(&[&["apps", "update", "--app", app_id][..], args].concat());
            assert!(err.contains(says), "{args:?}: {err}");
        }
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

    // A token's label without the token: refused, and no key is printed.
    let output = Command::new(MEDIAVAULT)
        .args(["keys", "generate", "--label", "hsm-2026q1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        output.stdout.is_empty(),
        "printed {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(stderr.contains("--provider pkcs11"), "{stderr}");
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
/// configuration at all); returns the server, the curl line it printed, and
/// all it writes to stderr until it exits.
fn start_embedded(dir: &std::path::Path) -> (ServeProcess, String, std::thread::JoinHandle<String>) {
    let mut command = Command::new(MEDIAVAULT);
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .stderr(Stdio::piped());
    let mut server =
        ServeProcess::start(&mut command, None, START_WITHIN).unwrap_or_else(|failure| panic!("{failure}"));
    // Keep draining stderr for the life of the child, so that it never
    // writes into a closed pipe; hand back the curl command it printed.
    let stderr = BufReader::new(server.take_stderr().unwrap());
    let (hint_tx, hint_rx) = std::sync::mpsc::channel();
    let all = std::thread::spawn(move || {
        let mut lines = stderr.lines().map_while(Result::ok);
        let mut all = String::new();
        let mut hint = String::new();
        for line in lines.by_ref() {
            all.push_str(&line);
            all.push('\n');
            if line.contains("curl ") {
                hint = line;
                for _ in 0..3 {
                    let next = lines.next().unwrap_or_default();
                    all.push_str(&next);
                    all.push('\n');
                    hint.push('\n');
                    hint.push_str(&next);
                }
                break;
            }
        }
        let _ = hint_tx.send(hint);
        for line in lines {
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let hint = hint_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("curl command on stderr");
    (server, hint, all)
}

/// Runs the curl command the server printed, in `dir`; fails unless the
/// upload succeeds.
fn run_printed_curl(dir: &std::path::Path, hint: &str) {
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

/// The first start makes the dev app and shows its token once, in a curl
/// command that works; later starts reuse app and token and never print the
/// token again: their command reads it from `data/dev-token`.
#[test]
fn embedded_default_makes_a_dev_app_once_and_its_curl_works() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.md"), "hello from the readme\n").unwrap();
    let (mut server, hint, _) = start_embedded(dir.path());
    let base = server.base_url().to_owned();
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
    let token = std::fs::read_to_string(dir.path().join("data/dev-token")).unwrap();
    let token = token.trim();
    assert!(hint.contains(token), "the first start shows the token: {hint}");
    run_printed_curl(dir.path(), &hint);
    server.kill();

    let (mut server, second_hint, stderr) = start_embedded(dir.path());
    assert!(
        second_hint.contains("data/dev-token"),
        "a second start points to the token file: {second_hint}"
    );
    run_printed_curl(dir.path(), &second_hint);
    let url_path = |h: &str| {
        h.split("/partner/app/")
            .nth(1)
            .map(|s| s.split('/').next().unwrap().to_owned())
    };
    assert_eq!(url_path(&hint), url_path(&second_hint), "and the dev app");
    server.kill();
    let stderr = stderr.join().unwrap();
    assert!(
        !stderr.contains(token),
        "a second start never prints the token:\n{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("data/dev-token"))
            .unwrap()
            .trim(),
        token,
        "the token is reused"
    );
}

/// Everything the embedded default creates is its user's alone: the
/// database with its WAL and SHM, the blobs and their directories.
#[test]
fn embedded_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.md"), "hello from the readme\n").unwrap();
    let (mut server, hint, _) = start_embedded(dir.path());
    run_printed_curl(dir.path(), &hint);
    let data = dir.path().join("data");
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let (blob_dirs, blobs): (Vec<_>, Vec<_>) = walkdir::WalkDir::new(data.join("blobs"))
        .into_iter()
        .map(|entry| entry.unwrap())
        .partition(|entry| entry.file_type().is_dir());
    // blobs/, blobs/media/ and the one directory the blob fanned out to.
    assert_eq!(blob_dirs.len(), 3, "{blob_dirs:?}");
    for dir in std::iter::once(data.clone()).chain(blob_dirs.iter().map(|entry| entry.path().to_owned())) {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    let blobs: Vec<_> = blobs.into_iter().map(|entry| entry.into_path()).collect();
    // The uploaded blob, and the mark of the installation whose files they are.
    assert_eq!(blobs.len(), 2, "{blobs:?}");
    assert!(
        blobs.contains(&data.join("blobs/mediavault-installation")),
        "{blobs:?}"
    );
    let database = ["mediavault.db", "mediavault.db-wal", "mediavault.db-shm"].map(|f| data.join(f));
    for file in database.iter().chain(&blobs) {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    server.kill();
}

/// Runs `mediavault ARGS` in `dir` with `env` and nothing else configured,
/// expecting a refusal: fails if the command starts serving instead, or
/// does not exit with an error. Returns its stderr.
fn refused(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(MEDIAVAULT);
    command
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stderr(Stdio::piped());
    match ServeProcess::start(&mut command, None, START_WITHIN) {
        Ok(server) => panic!("`mediavault {}` started: {}", args.join(" "), server.base_url()),
        // A refusal prints nothing and exits, so its status is its own
        // (not the kill that ends every failed start).
        Err(failure) => {
            assert!(
                failure.stdout_line.is_empty() && failure.status.is_some_and(|status| !status.success()),
                "`mediavault {}` did not refuse: {failure}",
                args.join(" ")
            );
            failure.stderr
        }
    }
}

/// A blob directory that holds the database or a key or token file is
/// refused by `serve` and by `reap`, with a message naming what is in the
/// way, and nothing in it is touched.
#[test]
fn a_blob_directory_holding_the_database_or_keys_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let migrated = Command::new(MEDIAVAULT)
        .arg("migrate")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&migrated.stderr);
    assert!(migrated.status.success(), "{stderr}");
    let data_dir = [("MEDIAVAULT__BLOBS__URL", "data")];
    for args in [&["serve", "--listen", "127.0.0.1:0"][..], &["reap", "--sweep"]] {
        let stderr = refused(dir.path(), args, &data_dir);
        assert!(
            stderr.contains("blobs.url") && stderr.contains("the database"),
            "{stderr}"
        );
    }
    for file in ["data/mediavault.db", "data/dev.key"] {
        assert!(dir.path().join(file).exists(), "{file} is kept");
    }

    std::fs::create_dir(dir.path().join("store")).unwrap();
    let keys_file = dir.path().join("store/keys");
    std::fs::write(&keys_file, Keyring::generate_line("k1")).unwrap();
    let keys_in_store = [
        ("MEDIAVAULT__BLOBS__URL", "store"),
        ("MEDIAVAULT__CRYPTO__KEYS_FILE", keys_file.to_str().unwrap()),
    ];
    let stderr = refused(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &keys_in_store);
    assert!(stderr.contains("crypto.keys_file"), "{stderr}");

    // The token's PIN is a secret file too: refused before the token is
    // reached (there is none at this module path).
    let pin_file = dir.path().join("store/pin");
    std::fs::write(&pin_file, "1234\n").unwrap();
    let pin_in_store = [
        ("MEDIAVAULT__BLOBS__URL", "store"),
        ("MEDIAVAULT__CRYPTO__PROVIDER", "pkcs11"),
        ("MEDIAVAULT__CRYPTO__PKCS11__MODULE", "/nonexistent/libpkcs11.so"),
        ("MEDIAVAULT__CRYPTO__PKCS11__TOKEN_LABEL", "token"),
        ("MEDIAVAULT__CRYPTO__PKCS11__PIN_FILE", pin_file.to_str().unwrap()),
        ("MEDIAVAULT__CRYPTO__PKCS11__KEYS", "[\"k1\"]"),
    ];
    for args in [&["serve", "--listen", "127.0.0.1:0"][..], &["reap", "--sweep"]] {
        let stderr = refused(dir.path(), args, &pin_in_store);
        assert!(stderr.contains("crypto.pkcs11.pin_file"), "{stderr}");
    }
}

/// A lost `data/dev.key` is not made anew while the database holds media it
/// wrapped: a new key under the same id would read none of them. The start
/// stops and says what to restore, and no key file is written.
#[test]
fn embedded_mode_never_regenerates_a_key_its_media_need() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.md"), "hello from the readme\n").unwrap();
    let (mut server, hint, _) = start_embedded(dir.path());
    run_printed_curl(dir.path(), &hint);
    server.kill();

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
