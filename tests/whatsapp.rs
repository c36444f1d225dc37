//! End to end: the WhatsApp Cloud API surface of the real binary on
//! PostgreSQL + Garage and SQLite + files: one medium read on both surfaces
//! by the same id, the lookup's link with and without the Bearer token and
//! by range, and the Graph errors byte for byte (`fbtrace_id` is the
//! request id). The public client library's round trip is in
//! `whatsapp_client`; the whole error table is at the router
//! (crates/api/src/contract/whatsapp.rs).

use crate::support;

use reqwest::StatusCode;
use serde_json::Value;
use support::{Backends, Fixture, png_bytes};

const PHONE: &str = "106540352242922";

async fn fixture(backends: Backends) -> Fixture {
    let links_keys = mediavault_api::LinkKeys::generate_line("wa");
    let f = Fixture::with_env(backends, &[("MEDIAVAULT__LINKS__KEYS", &links_keys)]).await;
    f.map_phone_number_id(PHONE);
    f
}

fn graph(f: &Fixture, method: reqwest::Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
    let request = f
        .client
        .request(method, f.server.url(path))
        .header("x-request-id", "trace-e2e");
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

async fn wa_upload(f: &Fixture, bytes: &[u8]) -> String {
    let part = reqwest::multipart::Part::bytes(bytes.to_vec())
        .file_name("pic.png")
        .mime_str("image/png")
        .unwrap();
    let form = reqwest::multipart::Form::new()
        .text("messaging_product", "whatsapp")
        .part("file", part)
        .text("type", "image/png");
    let response = graph(
        f,
        reqwest::Method::POST,
        &format!("/v23.0/{PHONE}/media"),
        Some(&f.token),
    )
    .multipart(form)
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn lookup(f: &Fixture, id: &str) -> (StatusCode, String) {
    let response = graph(f, reqwest::Method::GET, &format!("/v23.0/{id}"), Some(&f.token))
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn both_surfaces_share_media(backends: Backends) {
    let f = fixture(backends).await;
    let png = png_bytes(300_000);

    // Up on WhatsApp; down on Gupshup, and through the lookup's link with
    // and without the token, whole and by range.
    let id = wa_upload(&f, &png).await;
    let gupshup = f.download(&id).await;
    assert_eq!(gupshup.status(), StatusCode::OK);
    assert!(gupshup.bytes().await.unwrap() == png);
    let (status, body) = lookup(&f, &id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["file_size"], "300000");
    let url = body["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/l/", f.server.base_url)), "{url}");
    for bearer in [None, Some(f.token.as_str())] {
        let mut request = f.client.get(url);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let file = request.send().await.unwrap();
        assert_eq!(file.status(), StatusCode::OK);
        assert!(file.bytes().await.unwrap() == png);
    }
    let range = f
        .client
        .get(url)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), StatusCode::PARTIAL_CONTENT);
    assert!(range.bytes().await.unwrap() == png[1000..2000]);

    // Up on Gupshup; looked up and deleted on WhatsApp, which kills its link.
    let gupshup_id = f.upload(&png_bytes(5000)).await;
    let (status, body) = lookup(&f, &gupshup_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let link: Value = serde_json::from_str(&body).unwrap();
    let deleted = graph(
        &f,
        reqwest::Method::DELETE,
        &format!("/v23.0/{gupshup_id}"),
        Some(&f.token),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_eq!(deleted.text().await.unwrap(), r#"{"success":true}"#);
    let dead = f.client.get(link["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(dead.status(), StatusCode::NOT_FOUND);
    assert_eq!(f.download(&gupshup_id).await.status(), StatusCode::NOT_FOUND);

    // Graph errors, byte for byte.
    let (status, body) = lookup(&f, &gupshup_id).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        format!(
            r#"{{"error":{{"message":"Unsupported get request. Object with ID '{gupshup_id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api","type":"GraphMethodException","code":100,"error_subcode":33,"fbtrace_id":"trace-e2e"}}}}"#
        )
    );
    let anonymous = graph(&f, reqwest::Method::GET, &format!("/v23.0/{id}"), None)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.text().await.unwrap(),
        r#"{"error":{"message":"Invalid OAuth access token - Cannot parse access token","type":"OAuthException","code":190,"fbtrace_id":"trace-e2e"}}"#
    );
    f.assert_stored(1).await;
}

#[tokio::test]
async fn both_surfaces_share_media_on_postgres_and_garage() {
    both_surfaces_share_media(Backends::PostgresS3).await;
}

#[tokio::test]
async fn both_surfaces_share_media_on_sqlite_and_files() {
    both_surfaces_share_media(Backends::SqliteFiles).await;
}
