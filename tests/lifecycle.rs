//! End to end: what happens to a stored file after upload — downloads whole
//! and by range, metadata, deletion with crypto-shredding, exact expiry and
//! isolation between apps — on SQLite + files and on Postgres + Garage.

use crate::support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{
    Backends, Fixture, Stores, app_and_token, app_with_retention, blob_key_of, carvable_keys, png_bytes,
    service_can_decrypt, wrapped_key_of,
};

fn not_found() -> Value {
    json!({"message": "Media not found", "status": "error"})
}

async fn download_whole_and_by_range(backends: Backends) {
    let f = Fixture::new(backends).await;
    let bytes = png_bytes(300_000);
    let id = f.upload(&bytes).await;
    let sha = hex::encode(Sha256::digest(&bytes));

    let whole = f.request(Method::GET, &format!("/{id}"), &[]).await;
    assert_eq!(whole.status(), StatusCode::OK);
    let headers = whole.headers().clone();
    assert_eq!(headers["etag"], format!("\"{sha}\"").as_str());
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(headers["content-length"], "300000");
    assert!(headers["last-modified"].to_str().unwrap().ends_with(" GMT"));
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"holiday photo _1_.png\"; filename*=UTF-8''holiday%20photo%20%221%22.png"
    );
    assert!(whole.bytes().await.unwrap() == bytes);

    for (range, start, end) in [
        ("bytes=0-0", 0, 1),
        ("bytes=65470-65500", 65_470, 65_501),
        ("bytes=299990-", 299_990, 300_000),
        ("bytes=-10", 299_990, 300_000),
        ("bytes=100-999999", 100, 300_000),
    ] {
        let response = f
            .request(Method::GET, &format!("/{id}"), &[("range", range)])
            .await;
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            response.headers()["content-range"],
            format!("bytes {start}-{}/300000", end - 1).as_str(),
            "{range}"
        );
        assert_eq!(
            response.headers()["content-length"],
            (end - start).to_string().as_str()
        );
        assert!(response.bytes().await.unwrap() == bytes[start..end], "{range}");
    }

    let refused = f
        .request(Method::GET, &format!("/{id}"), &[("range", "bytes=300000-")])
        .await;
    assert_eq!(refused.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(refused.headers()["content-range"], "bytes */300000");
    assert_eq!(refused.json::<Value>().await.unwrap()["status"], "error");

    let several = f
        .request(Method::GET, &format!("/{id}"), &[("range", "bytes=0-1,5-6")])
        .await;
    assert_eq!(
        several.status(),
        StatusCode::OK,
        "several ranges get the whole file"
    );
    assert_eq!(several.bytes().await.unwrap().len(), 300_000);

    let etag = format!("\"{sha}\"");
    let cached = f
        .request(Method::GET, &format!("/{id}"), &[("if-none-match", &etag)])
        .await;
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    assert!(cached.bytes().await.unwrap().is_empty());

    let head = f.request(Method::HEAD, &format!("/{id}"), &[]).await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "300000");
    assert_eq!(head.headers()["etag"], etag.as_str());
    assert!(head.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn downloads_whole_by_range_cached_and_head_on_sqlite_and_files() {
    download_whole_and_by_range(Backends::SqliteFiles).await;
}

#[tokio::test]
async fn downloads_whole_by_range_cached_and_head_on_postgres_and_garage() {
    download_whole_and_by_range(Backends::PostgresS3).await;
}

#[tokio::test]
async fn info_describes_the_file() {
    for backends in [Backends::SqliteFiles, Backends::PostgresS3] {
        let f = Fixture::new(backends).await;
        let bytes = png_bytes(4321);
        let id = f.upload(&bytes).await;
        let info: Value = f
            .request(Method::GET, &format!("/{id}/info"), &[])
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(info["id"], id.as_str());
        assert_eq!(info["mimeType"], "image/png");
        assert_eq!(info["sha256"], hex::encode(Sha256::digest(&bytes)).as_str());
        assert_eq!(info["fileSize"], 4321);
        assert_eq!(info["status"], "success");
        let created = chrono::DateTime::parse_from_rfc3339(info["createdAt"].as_str().unwrap()).unwrap();
        let expires = chrono::DateTime::parse_from_rfc3339(info["expiresAt"].as_str().unwrap()).unwrap();
        assert!(info["createdAt"].as_str().unwrap().ends_with('Z'), "UTC");
        let retention = (expires - created).num_seconds();
        assert!(
            (30 * 86_400 - 5..=30 * 86_400 + 5).contains(&retention),
            "{retention}"
        );
        assert_eq!(info.as_object().unwrap().len(), 7);
    }
}

/// From the moment DELETE answers, the wrapped key is gone: nothing the
/// service holds decrypts a copy of the blob taken before; the blob goes
/// too; every read is 404; a second DELETE is 404.
#[tokio::test]
async fn delete_shreds_and_removes() {
    for backends in [Backends::SqliteFiles, Backends::PostgresS3] {
        let f = Fixture::new(backends).await;
        let keep = f.upload(&png_bytes(1000)).await;
        let id = f.upload(&png_bytes(2000)).await;
        let blob_of = async |id: &str| {
            let key = blob_key_of(&f.stores, id).await.expect("a stored row");
            f.stores.read_blob(&key).await
        };
        let (kept_copy, deleted_copy) = (blob_of(&keep).await, blob_of(&id).await);
        assert!(service_can_decrypt(&f.stores, &id, &deleted_copy, 2000).await);
        let response = f.request(Method::DELETE, &format!("/{id}"), &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(wrapped_key_of(&f.stores, &id).await, None, "the key is shredded");
        assert!(
            !service_can_decrypt(&f.stores, &id, &deleted_copy, 2000).await,
            "a copy of the deleted blob no longer decrypts"
        );
        assert!(service_can_decrypt(&f.stores, &keep, &kept_copy, 1000).await);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"message": "Media deleted successfully", "status": "success"})
        );
        for (method, tail) in [
            (Method::GET, format!("/{id}")),
            (Method::GET, format!("/{id}/info")),
            (Method::DELETE, format!("/{id}")),
        ] {
            let response = f.request(method.clone(), &tail, &[]).await;
            assert_eq!(
                (response.status(), response.json::<Value>().await.unwrap()),
                (StatusCode::NOT_FOUND, not_found()),
                "{method} {tail}"
            );
        }
        let head = f.request(Method::HEAD, &format!("/{id}"), &[]).await;
        assert_eq!(head.status(), StatusCode::NOT_FOUND);
        // Only the kept file remains, row and blob.
        let (rows, blobs) = f.stores.inventory().await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows, blobs);
        assert_eq!(
            f.request(Method::GET, &format!("/{keep}"), &[]).await.status(),
            StatusCode::OK
        );
    }
}

/// After DELETE no 60-byte window of any file in the SQLite database's
/// directory unwraps, under the KEK, as a deleted file's data key: not while
/// serving, not after a clean stop. The kept file's key is found each time,
/// and every key before the deletes, which shows that the scan finds keys.
#[tokio::test]
async fn deleted_keys_cannot_be_carved_from_the_sqlite_files() {
    let mut f = Fixture::with_env(Backends::SqliteFiles, &[("MEDIAVAULT__REAPER__ENABLED", "false")]).await;
    let kept = f.upload(&png_bytes(1000)).await;
    let mut deleted = Vec::new();
    for i in 0..5 {
        deleted.push(f.upload(&png_bytes(2000 + i)).await);
    }
    let all: Vec<String> = deleted.iter().chain([&kept]).cloned().collect();
    let dir = f.stores.dir().to_path_buf();
    assert_eq!(carvable_keys(&dir, &f.stores.keys, &all).len(), all.len());
    for id in &deleted {
        let response = f.request(Method::DELETE, &format!("/{id}"), &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(
        carvable_keys(&dir, &f.stores.keys, &all),
        std::slice::from_ref(&kept),
        "while serving"
    );
    assert!(f.server.terminate().success());
    assert_eq!(
        carvable_keys(&dir, &f.stores.keys, &all),
        [kept],
        "after a clean stop"
    );
}

/// GET, HEAD, info and DELETE answer 404 once `expires_at` has passed,
/// with no reaper involved. The reads leave the media to the reaper; the
/// DELETE shreds it (the key, the row and the blob) all the same.
#[tokio::test]
async fn expiry_is_exact_for_readers() {
    for backends in [Backends::SqliteFiles, Backends::PostgresS3] {
        let stores = Stores::new(backends).await;
        let (app_id, token) = app_with_retention(&stores, "2s");
        // The reaper would remove the row on its own schedule: off, so the
        // 404s below can come only from the read path's expiry check.
        let f = Fixture::serve(stores, app_id, token, &[("MEDIAVAULT__REAPER__ENABLED", "false")]);
        let id = f.upload(&png_bytes(500)).await;
        assert_eq!(
            f.request(Method::GET, &format!("/{id}"), &[]).await.status(),
            StatusCode::OK
        );
        tokio::time::sleep(Duration::from_millis(2300)).await;
        for (method, tail) in [
            (Method::GET, format!("/{id}")),
            (Method::HEAD, format!("/{id}")),
            (Method::GET, format!("/{id}/info")),
        ] {
            let response = f.request(method.clone(), &tail, &[]).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {tail}");
        }
        let (rows, blobs) = f.stores.inventory().await;
        assert_eq!(
            (rows.len(), blobs.len()),
            (1, 1),
            "{backends:?}: the expired row and blob are still there for the reaper"
        );
        let response = f.request(Method::DELETE, &format!("/{id}"), &[]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "DELETE");
        let (rows, blobs) = f.stores.inventory().await;
        assert_eq!(
            (rows.len(), blobs.len()),
            (0, 0),
            "{backends:?}: the DELETE shredded the expired media"
        );
    }
}

/// App B never reaches app A's media: B's token on A's path is 401; A's
/// media id on B's path is 404, exactly like an id that never existed.
#[tokio::test]
async fn apps_are_isolated() {
    for backends in [Backends::SqliteFiles, Backends::PostgresS3] {
        let f = Fixture::new(backends).await;
        let id = f.upload(&png_bytes(700)).await;
        let (b_app, b_token) = app_and_token(&f.stores, true);
        for (method, tail) in [
            (Method::GET, format!("/{id}")),
            (Method::GET, format!("/{id}/info")),
            (Method::DELETE, format!("/{id}")),
        ] {
            let on_a = f
                .client
                .request(method.clone(), f.media_url_with(&tail))
                .header("token", &b_token)
                .send()
                .await
                .unwrap();
            assert_eq!(on_a.status(), StatusCode::UNAUTHORIZED, "{method} {tail}");
            let b_url = f.server.url(&format!("/partner/app/{b_app}/media{tail}"));
            let on_b = f
                .client
                .request(method.clone(), &b_url)
                .header("token", &b_token)
                .send()
                .await
                .unwrap();
            let unknown = b_url.replace(&id, "00000000-0000-4000-8000-000000000000");
            let never = f
                .client
                .request(method.clone(), &unknown)
                .header("token", &b_token)
                .send()
                .await
                .unwrap();
            assert_eq!(on_b.status(), StatusCode::NOT_FOUND);
            assert_eq!(never.status(), StatusCode::NOT_FOUND);
            assert_eq!(
                on_b.json::<Value>().await.unwrap(),
                never.json::<Value>().await.unwrap()
            );
        }
        assert_eq!(
            f.request(Method::GET, &format!("/{id}"), &[]).await.status(),
            StatusCode::OK,
            "still A's"
        );
    }
}

/// A tampered blob is never served: a file this small is verified whole
/// before the status goes out, so a bad segment, first or later, is a clean
/// 500 (larger files: `tests/downloads.rs`).
#[tokio::test]
async fn tampered_blobs_are_never_served() {
    let f = Fixture::new(Backends::SqliteFiles).await;
    let bytes = png_bytes(200_000);
    let id = f.upload(&bytes).await;
    let (rows, _) = f.stores.inventory().await;
    let blob_path = std::path::Path::new(&f.stores.blobs.url).join(&rows[0]);
    let original = std::fs::read(&blob_path).unwrap();

    for at in [100, 65_536 + 100] {
        let mut tampered = original.clone();
        tampered[at] ^= 1;
        std::fs::write(&blob_path, &tampered).unwrap();
        let response = f.request(Method::GET, &format!("/{id}"), &[]).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR, "byte {at}");
        assert_eq!(response.json::<Value>().await.unwrap()["status"], "error");
    }
    assert!(f.server.log().contains("failed verification"));
}
