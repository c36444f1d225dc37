//! Upload by URL: the `file` part is a plain text value holding a URL. The
//! files come from an origin on 127.0.0.1 that the test starts, opened with
//! `allow_networks = ["127.0.0.1/32"]` unless a test says otherwise. The
//! answers are those of a file upload; a fetch that fails is 400 naming its
//! class. Every refusal leaves no row and no blob.

use std::io;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use bytes::Bytes;
use mediavault_fetch::origin::{Answer, Origin};
use mediavault_fetch::{FetchPolicy, Fetcher, Lookup, Resolver};
use mediavault_storage::{AppId, AppUpdate, NewApp};

use super::*;
use crate::error::{QUOTA_EXCEEDED, TOO_LARGE};

/// The defaults with 127.0.0.1 opened, and a short timeout for the tests
/// of timing out.
fn loopback_policy() -> FetchPolicy {
    FetchPolicy {
        allow_networks: vec!["127.0.0.1/32".parse().unwrap()],
        timeout: Duration::from_secs(2),
        ..FetchPolicy::default()
    }
}

async fn service(policy: FetchPolicy) -> Service {
    Service::with(|state| state.fetcher = Fetcher::new(policy).unwrap()).await
}

/// The upload form with `file` as a URL.
fn by_url(file_type: &str, url: &str) -> Vec<u8> {
    [
        text("file_type", file_type.as_bytes()),
        text("file", url.as_bytes()),
        end(),
    ]
    .concat()
}

/// An app whose files may be at most 1,000 bytes.
async fn small_app(s: &Service) -> AppKey {
    s.app(NewApp {
        name: "small".into(),
        capi: true,
        max_file_bytes: Some(1000),
        ..NewApp::default()
    })
    .await
}

fn fetch_failed(reason: &str) -> String {
    format!("Unable to fetch the file URL: {reason}")
}

#[tokio::test]
async fn a_fetched_file_is_stored_as_if_it_had_been_sent() {
    let s = service(loopback_policy()).await;
    let png = Bytes::from(png_bytes(300_000));
    let served = png.clone();
    let origin = Origin::start(move |path| {
        let body = served.clone();
        match path {
            "/named" => Answer::File {
                headers: vec![
                    // The answer's type is not what is stored: file_type is.
                    ("Content-Type".into(), "application/octet-stream".into()),
                    (
                        "Content-Disposition".into(),
                        "attachment; filename=\"holiday photo.png\"".into(),
                    ),
                ],
                body,
            },
            _ => Answer::Chunked { body },
        }
    })
    .await;

    let reply = s
        .send(Call::upload(&s.app).multipart(by_url("image/png", &origin.url("/named"))))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let named = reply.json()["mediaId"].as_str().unwrap().to_owned();
    assert_eq!(
        reply.text(),
        format!(r#"{{"mediaId":"{named}","status":"success"}}"#)
    );

    // The URL first, then the type; no Content-Disposition: the URL names it.
    let form = [
        text("file", origin.url("/files/from%20url.png?sig=abc").as_bytes()),
        text("file_type", b"image/png"),
        end(),
    ]
    .concat();
    let reply = s.send(Call::upload(&s.app).multipart(form)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let unnamed = reply.json()["mediaId"].as_str().unwrap().to_owned();

    for (id, disposition) in [
        (
            &named,
            "attachment; filename=\"holiday photo.png\"; filename*=UTF-8''holiday%20photo.png",
        ),
        (
            &unnamed,
            "attachment; filename=\"from url.png\"; filename*=UTF-8''from%20url.png",
        ),
    ] {
        let download = s.send(Call::media(Method::GET, &s.app, &format!("/{id}"))).await;
        assert_eq!(download.status, StatusCode::OK);
        assert!(download.body == png, "the bytes read back are the bytes served");
        assert_eq!(download.header("content-type"), Some("image/png"));
        assert_eq!(download.header("content-disposition"), Some(disposition));
        let info = s
            .send(Call::media(Method::GET, &s.app, &format!("/{id}/info")))
            .await
            .json();
        assert_eq!(info["mimeType"], "image/png");
        assert_eq!(info["fileSize"], 300_000);
        assert_eq!(info["sha256"], sha256_hex(&png));
    }
    assert_eq!(s.stored().await, 2);
    assert_eq!(origin.connections(), 2);
}

/// A declared length past the limit is refused on the answer's head: the
/// origin here never sends its body, and the fetch would time out (400)
/// if the body were waited for.
#[tokio::test]
async fn a_declared_length_past_the_limit_is_413_before_the_body() {
    let s = service(loopback_policy()).await;
    let small = small_app(&s).await;
    let origin = Origin::start(|path| match path {
        "/exact" => Answer::file(png_bytes(1000)),
        _ => Answer::Stall {
            declared: 1001,
            body: Bytes::new(),
        },
    })
    .await;
    s.send(Call::upload(&small).multipart(by_url("image/png", &origin.url("/large"))))
        .await
        .assert_error(
            "a declared length past the limit",
            StatusCode::PAYLOAD_TOO_LARGE,
            TOO_LARGE,
        );
    assert_eq!(s.stored().await, 0);

    let reply = s
        .send(Call::upload(&small).multipart(by_url("image/png", &origin.url("/exact"))))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "exactly the limit: {}",
        reply.text()
    );
    assert_eq!(s.stored().await, 1);
}

/// A declared length past the size limit, for an app whose quota has less
/// room left than that limit, is refused for the quota (403), as the same
/// file sent is: its reservation meets the quota before the file meets the
/// limit. With room for the limit it is 413, as above.
#[tokio::test]
async fn a_declared_length_past_the_limit_and_the_room_is_403_as_when_sent() {
    let s = service(loopback_policy()).await;
    let app = s
        .app(NewApp {
            name: "tight".into(),
            capi: true,
            max_file_bytes: Some(1000),
            max_bytes_stored: Some(1500),
            ..NewApp::default()
        })
        .await;
    let small = [text("file_type", b"image/png"), file(&png_bytes(900)), end()].concat();
    let stored = s.send(Call::upload(&app).multipart(small)).await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.text());
    let used = s.vault.app_stats(&AppId::new(&app.id)).await.unwrap().bytes_used;
    assert_eq!(used, 900, "600 bytes of room left, under the 1,000-byte limit");

    let origin = Origin::start(|_| Answer::Stall {
        declared: 2000,
        body: Bytes::new(),
    })
    .await;
    let sent = [text("file_type", b"image/png"), file(&png_bytes(2000)), end()].concat();
    s.send(Call::upload(&app).multipart(sent)).await.assert_error(
        "sent",
        StatusCode::FORBIDDEN,
        QUOTA_EXCEEDED,
    );
    s.send(Call::upload(&app).multipart(by_url("image/png", &origin.url("/large"))))
        .await
        .assert_error("by URL", StatusCode::FORBIDDEN, QUOTA_EXCEEDED);
    assert_eq!(s.stored().await, 1);
}

/// Without a declared length the body is measured as it comes; past the
/// limit it is refused, and what was stored of it goes.
#[tokio::test]
async fn a_body_growing_past_the_limit_is_413_and_leaves_nothing() {
    let s = service(loopback_policy()).await;
    let small = small_app(&s).await;
    let origin = Origin::start(|path| match path {
        "/exact" => Answer::Chunked {
            body: png_bytes(1000).into(),
        },
        // 64 KiB pieces: the upload has stored some when the limit is passed.
        _ => Answer::Chunked {
            body: png_bytes(200_000).into(),
        },
    })
    .await;
    let larger = s
        .app(NewApp {
            name: "larger".into(),
            capi: true,
            max_file_bytes: Some(150_000),
            ..NewApp::default()
        })
        .await;
    for app in [&small, &larger] {
        s.send(Call::upload(app).multipart(by_url("image/png", &origin.url("/over"))))
            .await
            .assert_error("past the limit", StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE);
        assert_eq!(s.stored().await, 0);
    }

    let reply = s
        .send(Call::upload(&small).multipart(by_url("image/png", &origin.url("/exact"))))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "exactly the limit: {}",
        reply.text()
    );
    assert_eq!(s.stored().await, 1);
}

/// The type is judged before anything is fetched; the content after, as a
/// sent file's is.
#[tokio::test]
async fn types_and_content_are_judged_as_for_a_sent_file() {
    let s = service(loopback_policy()).await;
    let origin = Origin::start(|path| match path {
        "/pdf" => Answer::file(&b"%PDF-1.7\n"[..]),
        _ => Answer::file(Bytes::new()),
    })
    .await;
    s.send(Call::upload(&s.app).multipart(by_url("image/gif", &origin.url("/pdf"))))
        .await
        .assert_error(
            "a type not allowed",
            StatusCode::BAD_REQUEST,
            &type_refused("image/gif"),
        );
    assert_eq!(origin.connections(), 0, "a refused type fetches nothing");

    let cases = [
        (
            "/pdf",
            "Param file content is 'application/pdf', which does not match file_type 'image/png'.",
        ),
        ("/empty", "Param file must not be empty."),
    ];
    for (path, message) in cases {
        s.send(Call::upload(&s.app).multipart(by_url("image/png", &origin.url(path))))
            .await
            .assert_error(path, StatusCode::BAD_REQUEST, message);
    }
    assert_eq!(s.stored().await, 0);
}

/// An app with no room left is 403 before its URL is fetched: the quota
/// answers before a fetch failure, and the origin hears nothing. With room
/// again, the same URL is fetched and its failure answers.
#[tokio::test]
async fn an_app_with_no_room_is_403_and_nothing_is_fetched() {
    let s = service(loopback_policy()).await;
    let origin = Origin::start(|_| Answer::Status(404)).await;
    let url = origin.url("/missing");
    let quota = |max_bytes_stored, max_media| NewApp {
        name: "full".into(),
        capi: true,
        max_bytes_stored,
        max_media,
        ..NewApp::default()
    };
    let by_media = s.app(quota(None, Some(1))).await;
    let by_bytes = s.app(quota(Some(5000), None)).await;
    for (case, full) in [("media", &by_media), ("bytes", &by_bytes)] {
        let reply = s.send(Call::upload(full).multipart(valid_form())).await;
        assert_eq!(reply.status, StatusCode::OK, "{case}: {}", reply.text());
        s.send(Call::upload(full).multipart(by_url("image/png", &url)))
            .await
            .assert_error(case, StatusCode::FORBIDDEN, QUOTA_EXCEEDED);
    }
    assert_eq!(origin.connections(), 0, "no request for an app with no room");
    assert_eq!(s.stored().await, 2);

    s.vault
        .update_app(
            &AppId::new(&by_media.id),
            AppUpdate {
                max_media: Some(Some(2)),
                ..AppUpdate::default()
            },
        )
        .await
        .unwrap();
    s.send(Call::upload(&by_media).multipart(by_url("image/png", &url)))
        .await
        .assert_error(
            "room again",
            StatusCode::BAD_REQUEST,
            &fetch_failed("the server answered HTTP 404"),
        );
    assert_eq!(origin.connections(), 1);
}

/// Stands in for a DNS server that knows no name.
struct NoSuchName;

impl Resolver for NoSuchName {
    fn lookup(&self, _host: &str) -> Lookup {
        Box::pin(async { Err(io::Error::other("no such name")) })
    }
}

#[tokio::test]
async fn each_failed_fetch_is_400_naming_its_class() {
    let s = service(FetchPolicy {
        timeout: Duration::from_millis(500),
        ..loopback_policy()
    })
    .await;
    let origin = Origin::start(|path| match path {
        "/missing" => Answer::Status(404),
        "/error" => Answer::Status(503),
        "/silent" => Answer::Silent,
        "/stalled" => Answer::Stall {
            declared: 5000,
            body: png_bytes(100).into(),
        },
        "/short" => Answer::Short {
            declared: 5000,
            body: png_bytes(100).into(),
        },
        "/denied" => Answer::Redirect("http://127.0.0.2/a.png".into()),
        "/ftp" => Answer::Redirect("ftp://127.0.0.1/a.png".into()),
        path => match path.strip_prefix("/hop/").map(|n| n.parse::<u32>().unwrap()) {
            Some(0) => Answer::file(png_bytes(100)),
            Some(n) => Answer::Redirect(format!("/hop/{}", n - 1)),
            None => Answer::Status(500),
        },
    })
    .await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = format!("http://{}/a.png", closed.local_addr().unwrap());
    drop(closed);
    let https = origin.url("/a.png").replace("http://", "https://");
    let cases = [
        (origin.url("/missing"), "the server answered HTTP 404"),
        (origin.url("/error"), "the server answered HTTP 503"),
        (origin.url("/silent"), "timed out"),
        (origin.url("/stalled"), "timed out"),
        (origin.url("/short"), "the transfer broke off"),
        (origin.url("/hop/4"), "too many redirects"),
        (origin.url("/denied"), "address not allowed"),
        (origin.url("/ftp"), "only http and https URLs can be fetched"),
        (refused, "could not connect"),
        (https, "TLS handshake failed"),
        (
            "http://169.254.169.254/latest/meta-data/".into(),
            "address not allowed",
        ),
        ("http://[::1]/a.png".into(), "address not allowed"),
        (
            "ftp://127.0.0.1/a.png".into(),
            "only http and https URLs can be fetched",
        ),
        (
            "http://user:secret@127.0.0.1/a.png".into(),
            "URLs with credentials are not allowed",
        ),
        ("a.png".into(), "not a valid URL"),
        (String::new(), "not a valid URL"),
    ];
    for (url, reason) in &cases {
        s.send(Call::upload(&s.app).multipart(by_url("image/png", url)))
            .await
            .assert_error(url, StatusCode::BAD_REQUEST, &fetch_failed(reason));
    }
    // Three redirects are followed.
    let reply = s
        .send(Call::upload(&s.app).multipart(by_url("image/png", &origin.url("/hop/3"))))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(s.stored().await, 1);

    let unknown = Service::with(|state| {
        state.fetcher = Fetcher::with_resolver(loopback_policy(), std::sync::Arc::new(NoSuchName)).unwrap();
    })
    .await;
    unknown
        .send(Call::upload(&unknown.app).multipart(by_url("image/png", "http://media.test/a.png")))
        .await
        .assert_error(
            "an unknown name",
            StatusCode::BAD_REQUEST,
            &fetch_failed("host name not found"),
        );
    assert_eq!(unknown.stored().await, 0);
}

/// With the default settings loopback is refused, by address and by name,
/// and the origin never sees a connection. A name that resolves only to
/// refused addresses is answered as one that does not resolve: the answer
/// does not tell a caller which names resolve inside the network.
#[tokio::test]
async fn loopback_is_denied_by_default_and_never_connected_to() {
    let s = Service::new().await;
    let origin = Origin::start(|_| Answer::file(png_bytes(100))).await;
    let port = origin.addr().port();
    for (url, reason) in [
        (origin.url("/a.png"), "address not allowed"),
        (format!("http://localhost:{port}/a.png"), "host name not found"),
        (format!("http://0x7f.1:{port}/a.png"), "address not allowed"),
        (format!("http://2130706433:{port}/a.png"), "address not allowed"),
    ] {
        s.send(Call::upload(&s.app).multipart(by_url("image/png", &url)))
            .await
            .assert_error(&url, StatusCode::BAD_REQUEST, &fetch_failed(reason));
    }
    assert_eq!(origin.connections(), 0);
    assert_eq!(s.stored().await, 0);
}

/// With fetching off, a URL is refused as it was before the feature.
#[tokio::test]
async fn with_fetching_off_a_url_is_refused_as_before() {
    let s = service(FetchPolicy {
        enabled: false,
        ..loopback_policy()
    })
    .await;
    let origin = Origin::start(|_| Answer::file(png_bytes(100))).await;
    s.send(Call::upload(&s.app).multipart(by_url("image/png", &origin.url("/a.png"))))
        .await
        .assert_error(
            "fetching off",
            StatusCode::BAD_REQUEST,
            "Param file must be a file upload; upload by URL is not supported.",
        );
    assert_eq!(origin.connections(), 0);
    assert_eq!(s.stored().await, 0);
}

/// A URL and a sent file are two files, in either order; a URL longer
/// than a form field may be is a malformed form.
#[tokio::test]
async fn a_url_counts_as_the_one_file() {
    let s = service(loopback_policy()).await;
    let origin = Origin::start(|_| Answer::file(png_bytes(100))).await;
    let url = origin.url("/a.png");
    for form in [
        [
            text("file_type", b"image/png"),
            text("file", url.as_bytes()),
            file(&png_bytes(10)),
            end(),
        ]
        .concat(),
        [
            text("file_type", b"image/png"),
            file(&png_bytes(10)),
            text("file", url.as_bytes()),
            end(),
        ]
        .concat(),
        [
            text("file_type", b"image/png"),
            text("file", url.as_bytes()),
            text("file", url.as_bytes()),
            end(),
        ]
        .concat(),
    ] {
        s.send(Call::upload(&s.app).multipart(form)).await.assert_error(
            "two files",
            StatusCode::BAD_REQUEST,
            "Param file was sent more than once; send exactly one file.",
        );
    }
    let long = format!("{}?{}", url, "a".repeat(5000));
    s.send(Call::upload(&s.app).multipart(by_url("image/png", &long)))
        .await
        .assert_error(
            "a URL past the field limit",
            StatusCode::BAD_REQUEST,
            &format!("{MALFORMED}file is longer than 4096 bytes"),
        );
    assert_eq!(origin.connections(), 0);
    assert_eq!(s.stored().await, 0);
}
