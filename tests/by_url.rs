//! End to end: the real binary uploads by URL from an origin on 127.0.0.1
//! that the test starts, opened with `MEDIAVAULT__FETCH__ALLOW_NETWORKS`,
//! on SQLite + files and on Postgres + Garage. What is refused leaves no
//! row and no blob, and an address the guard refuses is never connected to.

use crate::support;

use mediavault_fetch::origin::{Answer, Origin};
use reqwest::StatusCode;
use reqwest::multipart::Form;
use serde_json::json;
use support::{Backends, Fixture, cli, png_bytes};

/// The form of an upload by URL, as Gupshup's reference sends it.
fn by_url(url: &str) -> Form {
    Form::new()
        .text("file_type", "image/png")
        .text("file", url.to_owned())
}

/// `apps update` of the fixture's app, setting `flag` to `value`.
fn update_app(f: &Fixture, flag: &str, value: &str) {
    let (ok, _, err) = cli(&f.stores, &["apps", "update", "--app", &f.app_id, flag, value]);
    assert!(ok, "apps update failed: {err}");
}

async fn uploads_by_url(backends: Backends) {
    let f = Fixture::with_env(
        backends,
        &[("MEDIAVAULT__FETCH__ALLOW_NETWORKS", "[\"127.0.0.1/32\"]")],
    )
    .await;
    // 1 MiB: a body past it has been partly written to the store by then.
    update_app(&f, "--max-file-bytes", "1048576");
    let png = png_bytes(700_000);
    let served = png.clone();
    let origin = Origin::start(move |path| match path {
        "/too-large" => Answer::Chunked {
            body: png_bytes(2 * 1048576).into(),
        },
        _ => Answer::file_with(
            "Content-Disposition",
            "attachment; filename=\"holiday photo.png\"",
            served.clone(),
        ),
    })
    .await;

    let (status, body) = f.post(by_url(&origin.url("/media/1234"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let media_id = body["mediaId"].as_str().unwrap();
    let response = f.download(media_id).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"holiday photo.png\"; filename*=UTF-8''holiday%20photo.png"
    );
    assert!(
        response.bytes().await.unwrap() == png,
        "the bytes read back are the bytes served"
    );
    f.assert_stored(1).await;

    let (status, body) = f.post(by_url(&origin.url("/too-large"))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(
        body,
        json!({"message": "File size exceeds the maximum limit!", "status": "error"})
    );
    f.assert_stored(1).await;

    // The same origin through an address outside the allowed network.
    let port = origin.addr().port();
    let (status, body) = f.post(by_url(&format!("http://127.0.0.2:{port}/a.png"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body,
        json!({"message": "Unable to fetch the file URL: address not allowed", "status": "error"})
    );
    assert_eq!(origin.connections(), 2, "only the two allowed fetches connected");
    f.assert_stored(1).await;

    // Room for 300,000 bytes more: the 700,000 fetched pass the quota as
    // they arrive.
    update_app(&f, "--max-bytes-stored", "1000000");
    let (status, body) = f.post(by_url(&origin.url("/media/5678"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(origin.connections(), 3);
    f.assert_stored(1).await;

    // Every fetch is counted once, by how it ended, refused ones included.
    let metrics = f
        .client
        .get(f.server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut counted: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("mediavault_url_fetches_total"))
        .collect();
    counted.sort_unstable();
    assert_eq!(
        counted,
        [
            "mediavault_url_fetches_total{result=\"denied_address\"} 1",
            "mediavault_url_fetches_total{result=\"ok\"} 1",
            "mediavault_url_fetches_total{result=\"quota\"} 1",
            "mediavault_url_fetches_total{result=\"too_large\"} 1",
        ],
        "{metrics}"
    );
}

#[tokio::test]
async fn uploads_by_url_on_sqlite_and_files() {
    uploads_by_url(Backends::SqliteFiles).await;
}

#[tokio::test]
async fn uploads_by_url_on_postgres_and_garage() {
    uploads_by_url(Backends::PostgresS3).await;
}
