//! End to end: KEKs in a PKCS#11 token (SoftHSM2), which wraps and unwraps
//! every data key itself; moving media from configured keys to the token
//! while serving; refusing to start without a key media need; and a token
//! that goes away under load and comes back.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use support::{
    Backends, Fixture, Pkcs11Token, Stores, app_and_token, cli, keys_usage, png_bytes, refused_start,
};

/// The KEK id each live media's data key is wrapped under.
async fn kek_ids(stores: &Stores) -> Vec<String> {
    let rows: Vec<(String,)> = support::fetch_rows(stores, "SELECT kek_id FROM media_keys", None).await;
    rows.into_iter().map(|(id,)| id).collect()
}

/// Fresh stores whose only KEK is `label`, made in `token` for them.
async fn token_stores(backends: Backends, token: &Pkcs11Token, label: &str) -> Stores {
    let mut stores = Stores::new(backends).await;
    let created = token.create_key(&stores, label);
    assert_eq!(created["label"], label);
    assert_eq!(created["provider"], "pkcs11");
    let fingerprint = created["fingerprint"].as_str().unwrap();
    assert!(
        fingerprint.len() == 32 && fingerprint.bytes().all(|b| b.is_ascii_hexdigit()),
        "{created}"
    );
    stores.keys = String::new();
    stores.settings = token.settings(&[label]);
    stores
}

#[tokio::test]
async fn files_are_stored_read_by_range_and_deleted_through_the_token() {
    let token = Pkcs11Token::shared();
    let label = Pkcs11Token::new_label();
    let stores = token_stores(Backends::PostgresS3, &token, &label).await;
    let (app_id, app_token) = app_and_token(&stores, true);
    let f = Fixture::serve(stores, app_id, app_token, &[]);

    let small = png_bytes(16 * 1024);
    let large = png_bytes(300_000);
    let small_id = f.upload(&small).await;
    let large_id = f.upload(&large).await;
    assert_eq!(kek_ids(&f.stores).await, [label.clone(), label.clone()]);
    assert!(
        support::wrapped_keys(&f.stores)
            .await
            .iter()
            .all(|(_, wrapped)| wrapped.len() == mediavault_storage::format::WRAPPED_DEK_LEN),
        "the wrapped-key layout does not change"
    );

    for (id, bytes) in [(&small_id, &small), (&large_id, &large)] {
        let response = f.download(id).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.bytes().await.unwrap() == **bytes);
    }
    let response = f
        .request(
            reqwest::Method::GET,
            &format!("/{large_id}"),
            &[("Range", "bytes=70000-200099")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert!(response.bytes().await.unwrap() == large[70_000..200_100]);

    let deleted = f
        .request(reqwest::Method::DELETE, &format!("/{small_id}"), &[])
        .await;
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_eq!(f.download(&small_id).await.status(), StatusCode::NOT_FOUND);
    f.assert_stored(1).await;

    let usage = keys_usage(&f.stores);
    assert_eq!(usage["activeKey"], label.as_str());
    assert_eq!(usage["keys"], serde_json::json!([{"keyId": label, "media": 1}]));
}

/// Media wrapped by a configured key stay readable once the token holds
/// the active key (the configured key kept as a legacy key to unwrap);
/// `keys rewrap`, while serving, moves them to the token's key; then the
/// configured key can go. Without a key media need, or with a label the
/// token lacks, the service refuses to start and names it.
#[tokio::test]
async fn media_move_from_a_configured_key_to_the_token_while_serving() {
    let token = Pkcs11Token::shared();
    let f = Fixture::new(Backends::PostgresFiles).await;
    let mut files: Vec<Vec<u8>> = (0..3).map(|i| png_bytes(70_000 + i)).collect();
    let mut ids = Vec::new();
    for bytes in &files {
        ids.push(f.upload(bytes).await);
    }
    let label = Pkcs11Token::new_label();
    token.create_key(&f.stores, &label);
    let f = f.restart(|stores| stores.settings = token.settings(&[&label]));
    for (id, bytes) in ids.iter().zip(&files) {
        let response = f.download(id).await;
        assert_eq!(response.status(), StatusCode::OK, "legacy media read");
        assert!(response.bytes().await.unwrap() == *bytes);
    }
    let fresh = png_bytes(5_000);
    ids.push(f.upload(&fresh).await);
    files.push(fresh);
    let usage = keys_usage(&f.stores);
    assert_eq!(usage["activeKey"], label.as_str());
    let mut expected = vec![
        serde_json::json!({"keyId": label, "media": 1}),
        serde_json::json!({"keyId": "test1", "media": 3}),
    ];
    expected.sort_by_key(|key| key["keyId"].as_str().unwrap().to_owned());
    assert_eq!(usage["keys"], Value::Array(expected));

    // Re-wrap while the server runs, in batches of 2.
    let (ok, out, err) = cli(&f.stores, &["keys", "rewrap", "--batch", "2"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (report["rewrapped"].as_u64(), report["failed"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(report["keys"], serde_json::json!([{"keyId": label, "media": 4}]));
    for id in &ids {
        assert_eq!(
            f.download(id).await.status(),
            StatusCode::OK,
            "read while serving"
        );
    }

    // The configured key can go: every file still reads, byte for byte.
    let f = f.restart(|stores| stores.keys = String::new());
    for (id, bytes) in ids.iter().zip(&files) {
        let response = f.download(id).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.bytes().await.unwrap() == *bytes);
    }

    // Another token key in use instead: the one media need is named.
    let mut stores = f.stop();
    let other = Pkcs11Token::new_label();
    token.create_key(&stores, &other);
    stores.settings = token.settings(&[&other]);
    let stderr = refused_start(&stores);
    assert!(
        stderr.contains(&format!("{label:?} (4 media)")) && stderr.contains("crypto.pkcs11.keys"),
        "{stderr}"
    );
    // A label the token lacks: named too.
    stores.settings = token.settings(&[&label, "absent-key"]);
    let stderr = refused_start(&stores);
    assert!(stderr.contains("\"absent-key\""), "{stderr}");
}

/// One upload and one download, over and over, until `stop`; counts what
/// each answered.
#[derive(Default)]
struct Load {
    stored: std::sync::Mutex<Vec<(String, usize)>>,
    ok: AtomicUsize,
    failed: AtomicUsize,
    /// A failure answered otherwise than 500/503 in the error shape.
    malformed: std::sync::Mutex<Vec<String>>,
}

async fn load(f: Arc<Fixture>, load: Arc<Load>, stop: Arc<AtomicBool>, client: usize) {
    let mut round = 0;
    while !stop.load(Ordering::SeqCst) {
        round += 1;
        let len = 16 * 1024 + client * 1000 + round;
        let (status, body) = f.post(support::png_form(len)).await;
        let upload = match status {
            StatusCode::OK => {
                let id = body["mediaId"].as_str().unwrap().to_owned();
                load.stored.lock().unwrap().push((id.clone(), len));
                load.ok.fetch_add(1, Ordering::SeqCst);
                Some(id)
            }
            status => {
                note_failure(&load, status, &body);
                None
            }
        };
        let stored = load.stored.lock().unwrap().first().cloned();
        if let Some(id) = upload.or(stored.map(|(id, _)| id)) {
            let response = f.download(&id).await;
            match response.status() {
                StatusCode::OK => {
                    load.ok.fetch_add(1, Ordering::SeqCst);
                    let _ = response.bytes().await;
                }
                status => {
                    let body = response.json().await.unwrap_or(Value::Null);
                    note_failure(&load, status, &body);
                }
            }
        }
    }
}

/// Waits until `done`, at most 30 s.
async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what} within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn note_failure(load: &Load, status: StatusCode, body: &Value) {
    load.failed.fetch_add(1, Ordering::SeqCst);
    let shaped = body["status"] == "error" && body["message"].is_string();
    if !(matches!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR | StatusCode::SERVICE_UNAVAILABLE
    ) && shaped)
    {
        load.malformed.lock().unwrap().push(format!("{status} {body}"));
    }
}

/// The token's store taken away from the running module (SoftHSM2 keeps
/// its objects in a directory: it is moved away) fails uploads and
/// downloads in the service's error shape, leaving nothing half-written;
/// once it is back, the service reconnects and both work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_goes_away_under_load_fails_cleanly_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let token = Pkcs11Token::private(dir.path());
    let label = Pkcs11Token::new_label();
    let stores = token_stores(Backends::PostgresFiles, &token, &label).await;
    let (app_id, app_token) = app_and_token(&stores, true);
    let f = Arc::new(Fixture::serve(stores, app_id, app_token, &[]));
    let before = f.upload(&png_bytes(20_000)).await;

    let (counts, stop) = (Arc::new(Load::default()), Arc::new(AtomicBool::new(false)));
    let clients: Vec<_> = (0..8)
        .map(|client| tokio::spawn(load(f.clone(), counts.clone(), stop.clone(), client)))
        .collect();
    wait_for("uploads under load", || counts.ok.load(Ordering::SeqCst) >= 20).await;

    let away = dir.path().join("tokens-away");
    std::fs::rename(token.token_dir(), &away).unwrap();
    let failed = counts.failed.load(Ordering::SeqCst);
    wait_for("failures while the token is away", || {
        counts.failed.load(Ordering::SeqCst) >= failed + 20
    })
    .await;
    let during = f.download(&before).await;
    assert_eq!(during.status(), StatusCode::INTERNAL_SERVER_ERROR);

    std::fs::rename(&away, token.token_dir()).unwrap();
    let ok = counts.ok.load(Ordering::SeqCst);
    wait_for("uploads once the token is back", || {
        counts.ok.load(Ordering::SeqCst) >= ok + 20
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }

    let malformed = counts.malformed.lock().unwrap().clone();
    assert!(
        malformed.is_empty(),
        "failures outside the error shape: {malformed:?}"
    );
    assert!(f.server.log().contains("PKCS#11 token connected"));
    // Every upload answered 200 reads back, and nothing else was stored.
    let stored = counts.stored.lock().unwrap().clone();
    for (id, len) in &stored {
        let response = f.download(id).await;
        assert_eq!(response.status(), StatusCode::OK, "{id}");
        assert!(response.bytes().await.unwrap() == png_bytes(*len));
    }
    assert_eq!(f.download(&before).await.status(), StatusCode::OK);
    f.assert_stored(stored.len() + 1).await;
}

/// The settings of a server whose data keys go under epoch keys labelled
/// `prefix` and the day, in `token`, with keys made one day ahead.
fn epoch_settings(token: &Pkcs11Token, prefix: &str) -> Vec<(String, String)> {
    let mut settings = token.settings(&[]);
    for (name, value) in [
        ("MEDIAVAULT__CRYPTO__PROVIDER", "pkcs11"),
        ("MEDIAVAULT__CRYPTO__EPOCHS__ENABLED", "true"),
        ("MEDIAVAULT__CRYPTO__EPOCHS__AHEAD", "1d"),
        ("MEDIAVAULT__CRYPTO__EPOCHS__LABEL_PREFIX", prefix),
    ] {
        settings.push((name.into(), value.into()));
    }
    settings
}

/// `prefix` and the UTC day of `at` (milliseconds): the label of the epoch
/// key of media that expire then.
fn day_label(prefix: &str, at: i64) -> String {
    let day = chrono::DateTime::from_timestamp_millis(at).unwrap().date_naive();
    format!("{prefix}{}", day.format("%Y%m%d"))
}

/// The end of the UTC day of `at`, plus `grace`.
fn day_over(at: i64, grace: Duration) -> i64 {
    let day = chrono::DateTime::from_timestamp_millis(at).unwrap().date_naive();
    let next = day.succ_opt().unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
    next.timestamp_millis() + grace.as_millis() as i64
}

/// (media id, KEK id, expires at) of every live media.
async fn media_keys(stores: &Stores) -> Vec<(String, String, i64)> {
    support::fetch_rows(
        stores,
        "SELECT m.id, k.kek_id, m.expires_at FROM media m JOIN media_keys k ON k.media_id = m.id ORDER BY m.id",
        None,
    )
    .await
}

/// A keyring of this process on `token`, with epoch keys labelled `prefix`.
async fn epoch_keyring(token: &Pkcs11Token, prefix: &str) -> mediavault_storage::Keyring {
    let keys = mediavault_storage::keys::Pkcs11Keys::open(token.provider_settings(&[]))
        .await
        .unwrap();
    let epochs = mediavault_storage::EpochSettings {
        ahead_days: 1,
        ..mediavault_storage::EpochSettings::new(prefix)
    };
    mediavault_storage::Keyring::pkcs11(keys, None, Some(epochs)).unwrap()
}

/// The labels of the keys in the token that start with `prefix`.
async fn epoch_labels_of(keyring: &mediavault_storage::Keyring, prefix: &str) -> Vec<String> {
    let labels = keyring.labels().await.unwrap();
    labels
        .into_iter()
        .filter(|label| label.starts_with(prefix))
        .collect()
}

/// Whether `keyring` unwraps each data key of a database restored from
/// `dump`, by media id.
async fn unwrappable_from_dump(
    dump: &std::path::Path,
    keyring: &mediavault_storage::Keyring,
) -> std::collections::BTreeMap<String, bool> {
    let (url, name) = support::fresh_postgres_database().await;
    let restored = std::process::Command::new("pg_restore")
        .args(["--no-owner", "--dbname", &url])
        .arg(dump)
        .output()
        .expect("run pg_restore");
    assert!(
        restored.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let rows: Vec<(String, String, Vec<u8>)> =
        sqlx::query_as("SELECT media_id, kek_id, wrapped_dek FROM media_keys")
            .fetch_all(&mut connection)
            .await
            .unwrap();
    drop(connection);
    support::drop_postgres_database(&name).await;
    let mut unwrapped = std::collections::BTreeMap::new();
    for (media_id, kek_id, wrapped) in rows {
        let outcome = keyring.unwrap(&media_id, &kek_id, &wrapped).await;
        if let Err(error) = &outcome {
            assert!(
                matches!(error, mediavault_storage::KeyError::Unknown(id) if *id == kek_id),
                "only a destroyed key fails: {error}"
            );
        }
        unwrapped.insert(media_id, outcome.is_ok());
    }
    unwrapped
}

/// Epoch keys: each data key goes under the key of its media's expiry day,
/// made in the token when first needed (or a day ahead by the reaper). The
/// reaper destroys a day's key once the day and the grace have passed, not
/// before; from then on a database dump taken while the media lived no
/// longer unwraps any of that day's data keys, though it still unwraps the
/// others.
#[tokio::test]
async fn epoch_keys_follow_expiry_days_and_destroying_one_reaches_old_dumps() {
    let token = Pkcs11Token::shared();
    let prefix = format!("ep{}-", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let mut stores = Stores::new(Backends::PostgresS3).await;
    stores.keys = String::new();
    stores.settings = epoch_settings(&token, &prefix);
    let (short_app, short_token) = support::app_with_retention(&stores, "1d");
    let (long_app, long_token) = support::app_with_retention(&stores, "3d");
    // The passes here are the test's own.
    let f = Fixture::serve(
        stores,
        short_app,
        short_token,
        &[("MEDIAVAULT__REAPER__ENABLED", "false")],
    );

    let short_files = [png_bytes(20_000), png_bytes(300_000)];
    let mut short_ids = Vec::new();
    for bytes in &short_files {
        short_ids.push(f.upload(bytes).await);
    }
    let long_file = png_bytes(70_000);
    let response = f
        .client
        .post(f.server.url(&format!("/partner/app/{long_app}/media")))
        .header("token", &long_token)
        .multipart(support::png_form(long_file.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let long_id = response.json::<Value>().await.unwrap()["mediaId"]
        .as_str()
        .unwrap()
        .to_owned();

    // Each data key is under the key of its expiry day.
    let rows = media_keys(&f.stores).await;
    assert_eq!(rows.len(), 3);
    for (_, kek_id, expires_at) in &rows {
        assert_eq!(*kek_id, day_label(&prefix, *expires_at));
    }
    let expiry_of = |id: &str| rows.iter().find(|row| row.0 == id).unwrap().2;
    let (short_expiry, long_expiry) = (expiry_of(&short_ids[0]), expiry_of(&long_id));
    let (short_label, long_label) = (day_label(&prefix, short_expiry), day_label(&prefix, long_expiry));
    assert_ne!(short_label, long_label);
    for (id, bytes) in short_ids.iter().zip(&short_files) {
        let response = f.download(id).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.bytes().await.unwrap() == *bytes);
    }
    let response = f
        .client
        .get(f.server.url(&format!("/partner/app/{long_app}/media/{long_id}")))
        .header("token", &long_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap() == long_file);
    let usage = keys_usage(&f.stores);
    assert_eq!(usage["activeKey"], Value::Null);
    assert_eq!(usage["epochKeys"]["labelPrefix"], prefix.as_str());

    // A pass now makes today's key, ahead of any upload that needs it.
    let (ok, out, err) = cli(&f.stores, &["reap", "--once"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let today = day_label(&prefix, mediavault_storage::now_millis());
    let keyring = epoch_keyring(&token, &prefix).await;
    let held = epoch_labels_of(&keyring, &prefix).await;
    assert!(held.contains(&today), "{held:?} {report}");
    assert!(
        held.contains(&short_label) && held.contains(&long_label),
        "{held:?}"
    );
    assert!(report["epochKeysMade"].as_u64() >= Some(1), "{report}");

    // The backup an attacker later holds, taken while all three lived.
    let dump = f.stores.dir().join("old.dump");
    let dumped = std::process::Command::new("pg_dump")
        .args(["--format=custom", "--file"])
        .arg(&dump)
        .arg(&f.stores.database_url)
        .output()
        .expect("run pg_dump");
    assert!(
        dumped.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&dumped.stderr)
    );
    let stores = f.stop();
    let vault = mediavault_storage::Vault::open(mediavault_storage::VaultConfig {
        keys: epoch_keyring(&token, &prefix).await,
        ..stores.vault_config()
    })
    .await
    .unwrap();
    let all_unwrap = unwrappable_from_dump(&dump, &keyring).await;
    assert_eq!(all_unwrap.values().filter(|ok| **ok).count(), 3, "{all_unwrap:?}");

    // The short media's day is over, the grace not yet: they are reaped,
    // their key kept.
    let grace = Duration::from_secs(24 * 3600);
    let budget = Duration::from_secs(60);
    let before_grace = day_over(short_expiry, grace) - 1;
    let report = mediavault_reaper::reap_once(&vault, before_grace, budget)
        .await
        .unwrap();
    assert_eq!(report.expired, 2);
    let held = epoch_labels_of(&keyring, &prefix).await;
    assert!(held.contains(&short_label), "{held:?}");
    // Today's key, made ahead, has had its day and grace by then.
    assert!(
        !held.contains(&today) && report.epoch_keys_destroyed == 1,
        "{held:?}"
    );
    assert_eq!(unwrappable_from_dump(&dump, &keyring).await, all_unwrap);

    // Once the grace has passed, the short media's key goes: the old dump
    // no longer unwraps their data keys; the long one's still.
    let after_grace = before_grace + 1;
    let report = mediavault_reaper::reap_once(&vault, after_grace, budget)
        .await
        .unwrap();
    assert!(report.epoch_keys_destroyed >= 1, "{report:?}");
    let held = epoch_labels_of(&keyring, &prefix).await;
    assert!(
        !held.contains(&short_label) && held.contains(&long_label),
        "{held:?}"
    );
    let key_kept = |at: i64| -> std::collections::BTreeMap<String, bool> {
        rows.iter()
            .map(|(id, _, expires_at)| (id.clone(), day_over(*expires_at, grace) > at))
            .collect()
    };
    let unwrapped = unwrappable_from_dump(&dump, &keyring).await;
    assert_eq!(unwrapped, key_kept(after_grace));
    assert!(!unwrapped[&short_ids[0]] && unwrapped[&long_id], "{unwrapped:?}");

    // And so for the long one, after its day and grace. Every key of a day
    // that is over is gone.
    let after = day_over(long_expiry, grace);
    let report = mediavault_reaper::reap_once(&vault, after, budget).await.unwrap();
    assert_eq!((report.expired, report.deleted), (1, 0));
    assert!(
        unwrappable_from_dump(&dump, &keyring)
            .await
            .values()
            .all(|ok| !ok)
    );
    let held = epoch_labels_of(&keyring, &prefix).await;
    let settings = mediavault_storage::EpochSettings::new(&prefix);
    for label in &held {
        let epoch = settings.epoch_of(label).unwrap();
        assert!(!epoch.is_over(after, grace), "{label} outlived its day");
    }
    // The keys made ahead of that last pass go with the test.
    for label in held {
        keyring.destroy(&label).await.unwrap();
    }
    vault.close().await;
}

/// Fails unless each of `ids` downloads as the bytes of `files`.
async fn reads_back(f: &Fixture, ids: &[String], files: &[Vec<u8>]) {
    for (id, bytes) in ids.iter().zip(files) {
        let response = f.download(id).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.bytes().await.unwrap() == *bytes);
    }
}

/// Turning epoch keys on moves older media under their days' keys with
/// `keys rewrap`, while serving; turning them off again is refused at start
/// while media need epoch keys, naming them, until `keys rewrap` has moved
/// those media to the active key.
#[tokio::test]
async fn epoch_keys_are_turned_on_and_off_with_keys_rewrap() {
    let token = Pkcs11Token::shared();
    let prefix = format!("ep{}-", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let f = Fixture::new(Backends::PostgresFiles).await;
    let files: Vec<Vec<u8>> = (0..3).map(|i| png_bytes(40_000 + i)).collect();
    let mut ids = Vec::new();
    for bytes in &files {
        ids.push(f.upload(bytes).await);
    }

    // On, with the configured key kept to unwrap; rewrap while serving.
    let f = f.restart(|stores| stores.settings = epoch_settings(&token, &prefix));
    reads_back(&f, &ids, &files).await;
    let (ok, out, err) = cli(&f.stores, &["keys", "rewrap", "--batch", "2"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (report["rewrapped"].as_u64(), report["failed"].as_u64()),
        (Some(3), Some(0))
    );
    let rows = media_keys(&f.stores).await;
    for (_, kek_id, expires_at) in &rows {
        assert_eq!(*kek_id, day_label(&prefix, *expires_at));
    }
    let days: std::collections::BTreeSet<&String> = rows.iter().map(|(_, kek_id, _)| kek_id).collect();
    let f = f.restart(|stores| stores.keys = String::new());
    reads_back(&f, &ids, &files).await;

    // Off, with an active key in the token: refused while media need the
    // days' keys; started once rewrap has moved them.
    let (app_id, app_token) = (f.app_id.clone(), f.token.clone());
    let mut stores = f.stop();
    let label = Pkcs11Token::new_label();
    token.create_key(&stores, &label);
    stores.settings = token.settings(&[&label]);
    let stderr = refused_start(&stores);
    for day in &days {
        assert!(stderr.contains(&format!("{day:?}")), "{stderr}");
    }
    let (ok, out, err) = cli(&stores, &["keys", "rewrap"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["keys"], serde_json::json!([{"keyId": label, "media": 3}]));
    let f = Fixture::serve(stores, app_id, app_token, &[]);
    reads_back(&f, &ids, &files).await;
}
