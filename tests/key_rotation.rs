//! End to end: rotating key-encryption keys without losing a file, and
//! refusing to start without a key that stored media need.

use crate::support;

use reqwest::StatusCode;
use serde_json::Value;
use support::{Backends, Fixture, Server, cli, keys_usage, png_bytes, refused_start};

async fn keys_rotate_without_losing_a_file(backends: Backends) {
    let f = Fixture::new(backends).await;
    let old_key = f.stores.keys.clone();
    let files: Vec<Vec<u8>> = (0..3).map(|i| png_bytes(70_000 + i)).collect();
    let mut ids = Vec::new();
    for bytes in &files {
        ids.push(f.upload(bytes).await);
    }
    // A new active key in front of the old one: old media still read, new
    // media are wrapped by the new key.
    let new_key = mediavault_storage::Keyring::generate_line("test2");
    let f = f.restart(|stores| stores.keys = format!("{new_key},{old_key}"));
    let fresh = png_bytes(5_000);
    ids.push(f.upload(&fresh).await);
    let files: Vec<Vec<u8>> = files.into_iter().chain([fresh]).collect();
    for (id, bytes) in ids.iter().zip(&files) {
        let response = f.download(id).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.bytes().await.unwrap() == *bytes);
    }
    let usage = keys_usage(&f.stores);
    assert_eq!(usage["activeKey"], "test2");
    assert_eq!(
        usage["keys"],
        serde_json::json!([{"keyId": "test1", "media": 3}, {"keyId": "test2", "media": 1}])
    );

    // Re-wrap while the server runs (it has both keys), in batches of 2.
    let (ok, out, err) = cli(&f.stores, &["keys", "rewrap", "--batch", "2"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["rewrapped"], 3);
    assert_eq!(report["failed"], 0);
    assert_eq!(
        report["keys"],
        serde_json::json!([{"keyId": "test2", "media": 4}])
    );
    for id in &ids {
        assert_eq!(
            f.download(id).await.status(),
            StatusCode::OK,
            "read while serving"
        );
    }
    // Again: nothing left to do.
    let (ok, out, _) = cli(&f.stores, &["keys", "rewrap"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["rewrapped"], 0);

    // The old key can go: every file still reads, byte for byte.
    let f = f.restart(|stores| stores.keys = new_key.clone());
    for (id, bytes) in ids.iter().zip(&files) {
        let response = f.download(id).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.bytes().await.unwrap() == *bytes);
    }

    // Without the key they need, the service refuses to start and says
    // which key and how many media.
    let mut stores = f.stop();
    stores.keys = mediavault_storage::Keyring::generate_line("test3");
    let stderr = refused_start(&stores);
    assert!(stderr.contains("\"test2\" (4 media)"), "{stderr}");
}

#[tokio::test]
async fn keys_rotate_without_losing_a_file_on_sqlite_and_files() {
    keys_rotate_without_losing_a_file(Backends::SqliteFiles).await;
}

#[tokio::test]
async fn keys_rotate_without_losing_a_file_on_postgres_and_garage() {
    keys_rotate_without_losing_a_file(Backends::PostgresS3).await;
}

/// Media whose key is missing cannot be re-wrapped: they are counted, left
/// as they were, and the command fails so that scripts notice.
#[tokio::test]
async fn rewrap_without_an_old_key_reports_what_it_could_not_do() {
    let f = Fixture::new(Backends::SqliteFiles).await;
    let id = f.upload(&png_bytes(1_000)).await;
    let old_key = f.stores.keys.clone();
    let new_key = mediavault_storage::Keyring::generate_line("test2");
    let only_new = [("MEDIAVAULT__CRYPTO__KEYS", new_key.as_str())];
    let (ok, out, err) = support::cli_with(&f.stores, &["keys", "rewrap"], &only_new);
    assert!(!ok);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (report["rewrapped"].as_u64(), report["failed"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(err.contains("could not be unwrapped"), "{err}");

    // With the key back, the file is intact.
    let f = f.restart(|stores| stores.keys = format!("{new_key},{old_key}"));
    assert_eq!(f.download(&id).await.status(), StatusCode::OK);
    // Deleted media need no key: once shredded they stop counting.
    assert_eq!(
        f.request(reqwest::Method::DELETE, &format!("/{id}"), &[])
            .await
            .status(),
        StatusCode::OK
    );
    let mut stores = f.stop();
    stores.keys = mediavault_storage::Keyring::generate_line("test9");
    // Starts (`Server::start` fails the test otherwise): no live media
    // needs the missing key any more.
    let _server = Server::start(&stores);
}

/// A key id configured with other material than the key recorded under it
/// stops `serve` and every other command, naming the id: with it every read
/// of the media that id wrapped would fail. A key in use from before
/// fingerprints were recorded is checked against a data key it wrapped.
#[tokio::test]
async fn a_key_id_given_other_material_stops_the_start() {
    use sqlx::Connection;

    let f = Fixture::new(Backends::PostgresFiles).await;
    let id = f.upload(&png_bytes(1_000)).await;
    let (app_id, token) = (f.app_id.clone(), f.token.clone());
    let mut stores = f.stop();
    let original = stores.keys.clone();
    stores.keys = mediavault_storage::Keyring::generate_line("test1");

    let stderr = refused_start(&stores);
    assert!(
        stderr.contains("\"test1\"") && stderr.contains("not the key recorded"),
        "{stderr}"
    );
    let (ok, _, err) = cli(&stores, &["apps", "list"]);
    assert!(!ok, "a command ran with the wrong key");
    assert!(err.contains("\"test1\""), "{err}");

    // A database from before fingerprints were kept: the stored data key
    // tells, and nothing is recorded for the wrong key.
    let mut db = sqlx::PgConnection::connect(&stores.database_url).await.unwrap();
    sqlx::query("DELETE FROM key_fingerprints")
        .execute(&mut db)
        .await
        .unwrap();
    let stderr = refused_start(&stores);
    assert!(
        stderr.contains("\"test1\"") && stderr.contains("does not unwrap"),
        "{stderr}"
    );

    // The key the id stood for starts, and the file reads.
    stores.keys = original;
    let f = Fixture::serve(stores, app_id, token, &[]);
    let response = f.download(&id).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap() == png_bytes(1_000));
}
