//! End to end: signed links over the real binary. An app asks for a link,
//! anyone with it downloads the file (whole, by range) with no token; the
//! link dies with its medium, outlives a key rotation while its key is
//! configured, and expires on time. The embedded default gives working
//! links with no configuration.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support;

use mediavault_api::LinkKeys;
use mediavault_test_support::{START_WITHIN, ServeProcess};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Backends, Fixture, png_bytes};

/// Asks for a link to `media_id` with `body`; the link's path (`/l/…`) and
/// the URL it was given as.
async fn ask(f: &Fixture, media_id: &str, body: Value) -> (String, String) {
    let response = f
        .client
        .post(f.media_url_with(&format!("/{media_id}/link")))
        .header("token", &f.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["status"], "success", "{reply}");
    let url = reply["url"].as_str().unwrap().to_owned();
    let path = url[url.find("/l/").unwrap()..].to_owned();
    (path, url)
}

/// GET of a link's path on the fixture's server, with no token: a
/// WhatsApp-style client's `Authorization: Bearer` is sent and ignored.
async fn follow(f: &Fixture, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = f
        .client
        .get(f.server.url(path))
        .header("authorization", "Bearer not-an-app-token");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// Fails unless `response` is `status` with exactly this error body.
async fn assert_refused(response: reqwest::Response, status: StatusCode, message: &str) {
    assert_eq!(response.status(), status);
    let body = response.text().await.unwrap();
    assert_eq!(body, format!(r#"{{"message":"{message}","status":"error"}}"#));
}

async fn links_serve_the_file_until_they_should_not(backends: Backends) {
    let (old, new) = (LinkKeys::generate_line("old"), LinkKeys::generate_line("new"));
    let f = Fixture::with_env(backends, &[("MEDIAVAULT__LINKS__KEYS", &old)]).await;
    let file = png_bytes(200_000);
    let id = f.upload(&file).await;
    let (path, url) = ask(&f, &id, json!({"ttl": "10m", "disposition": "inline"})).await;
    assert_eq!(url, f.server.url(&path), "on the address the request was sent to");

    let response = follow(&f, &path, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-disposition"],
        "inline; filename=\"holiday photo _1_.png\"; filename*=UTF-8''holiday%20photo%20%221%22.png"
    );
    assert!(response.bytes().await.unwrap() == file);

    let response = follow(&f, &path, &[("range", "bytes=70000-70099")]).await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.headers()["content-range"], "bytes 70000-70099/200000");
    assert!(response.bytes().await.unwrap() == file[70_000..70_100]);

    // Deleting a medium ends its links at once.
    let doomed = f.upload(&png_bytes(1_000)).await;
    let (doomed_link, _) = ask(&f, &doomed, json!({})).await;
    assert_eq!(follow(&f, &doomed_link, &[]).await.status(), StatusCode::OK);
    let deleted = f
        .request(reqwest::Method::DELETE, &format!("/{doomed}"), &[])
        .await;
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_refused(
        follow(&f, &doomed_link, &[]).await,
        StatusCode::NOT_FOUND,
        "Media not found",
    )
    .await;

    // A new key in front: the old key's link still works while it is
    // configured, and new links are signed by the new key.
    let rotated = format!("{new},{old}");
    let f = f.restart_with(|_| {}, &[("MEDIAVAULT__LINKS__KEYS", &rotated)]);
    let response = follow(&f, &path, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap() == file);
    let (fresh, _) = ask(&f, &id, json!({"ttl": "10m"})).await;
    let asked = Instant::now();
    let (short, _) = ask(&f, &id, json!({"ttl": 1})).await;

    // The old key gone: its links are no longer ours.
    let f = f.restart_with(|_| {}, &[("MEDIAVAULT__LINKS__KEYS", &new)]);
    assert_refused(
        follow(&f, &path, &[]).await,
        StatusCode::FORBIDDEN,
        "Invalid link",
    )
    .await;
    assert_eq!(follow(&f, &fresh, &[]).await.status(), StatusCode::OK);

    // The one-second link (of the key still configured), two seconds on.
    let wait = Duration::from_secs(2).saturating_sub(asked.elapsed());
    tokio::time::sleep(wait).await;
    assert_refused(follow(&f, &short, &[]).await, StatusCode::GONE, "Link expired").await;
}

#[tokio::test]
async fn links_serve_the_file_until_they_should_not_on_sqlite_and_files() {
    links_serve_the_file_until_they_should_not(Backends::SqliteFiles).await;
}

#[tokio::test]
async fn links_serve_the_file_until_they_should_not_on_postgres_and_garage() {
    links_serve_the_file_until_they_should_not(Backends::PostgresS3).await;
}

/// With a Postgres database and no links keys, links are off, and the start
/// says so once.
#[tokio::test]
async fn without_links_keys_links_are_off_and_the_start_says_so() {
    let f = Fixture::new(Backends::PostgresFiles).await;
    let id = f.upload(&png_bytes(1_000)).await;
    let response = f
        .client
        .post(f.media_url_with(&format!("/{id}/link")))
        .header("token", &f.token)
        .send()
        .await
        .unwrap();
    assert_refused(response, StatusCode::NOT_FOUND, "Signed links are not enabled").await;
    let log = f.server.log();
    assert_eq!(log.matches("signed links are off").count(), 1, "{log}");
}

/// `make run` with nothing configured: links work, under a development key
/// kept beside the database (0600), so a link outlives a restart.
#[tokio::test]
async fn the_embedded_default_makes_working_links() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let log = dir
            .path()
            .join(format!("serve-{}.log", uuid::Uuid::new_v4().simple()));
        let mut command = Command::new(support::MEDIAVAULT);
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(dir.path())
            .stderr(std::fs::File::create(&log).unwrap());
        ServeProcess::start(&mut command, Some(&log), START_WITHIN)
            .unwrap_or_else(|failure| panic!("{failure}"))
    };
    let server = start();
    let key = dir.path().join("data/dev-links.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let token = std::fs::read_to_string(dir.path().join("data/dev-token")).unwrap();
    let token = token.trim();
    // The start names the development app it made.
    let log = server.log();
    let app_id = log
        .split("Development app ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{log}"))
        .to_owned();
    let client = reqwest::Client::new();
    let file = png_bytes(3_000);
    let part = reqwest::multipart::Part::bytes(file.clone())
        .file_name("a.png")
        .mime_str("image/png")
        .unwrap();
    let form = reqwest::multipart::Form::new()
        .text("file_type", "image/png")
        .part("file", part);
    let uploaded: Value = client
        .post(server.url(&format!("/partner/app/{app_id}/media")))
        .header("token", token)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = uploaded["mediaId"]
        .as_str()
        .unwrap_or_else(|| panic!("{uploaded}"));
    let reply: Value = client
        .post(server.url(&format!("/partner/app/{app_id}/media/{id}/link")))
        .header("token", token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = reply["url"].as_str().unwrap_or_else(|| panic!("{reply}"));
    let path = url[url.find("/l/").unwrap()..].to_owned();
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap() == file);
    drop(server);

    let server = start();
    let response = client.get(server.url(&path)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the development key is kept");
}
