//! The exact answers of the Gupshup routes: upload, download (whole, by
//! range, cached, HEAD), info and delete, on success and on each error.

use axum::http::{Method, StatusCode};
use mediavault_storage::{AppId, MediaId, NewApp, to_datetime};

use super::*;
use crate::error::{AUTH_FAILED, MEDIA_NOT_FOUND, NOT_CAPI, TOO_LARGE};

/// What a media id the service makes looks like: a decimal number of 16
/// to 19 digits, as Gupshup and Meta write theirs.
fn assert_media_id(id: &str) {
    assert!((16..=19).contains(&id.len()), "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_digit()), "{id}");
    assert!(!id.starts_with('0'), "{id}");
}

#[tokio::test]
async fn an_upload_answers_its_media_id_and_nothing_else() {
    let s = Service::new().await;
    let reply = s.send(Call::upload(&s.app).multipart(valid_form())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let id = reply.json()["mediaId"].as_str().unwrap().to_owned();
    assert_media_id(&id);
    assert_eq!(
        reply.text(),
        format!(r#"{{"mediaId":"{id}","status":"success"}}"#)
    );
    assert_eq!(s.stored().await, 1);
}

/// Each refusal of an upload, one fault at a time, with its body.
#[tokio::test]
async fn every_upload_refusal_has_its_gupshup_body() {
    let s = Service::new().await;
    let non_capi = s
        .app(NewApp {
            name: "not capi".into(),
            ..NewApp::default()
        })
        .await;
    let small = s
        .app(NewApp {
            name: "small".into(),
            capi: true,
            max_file_bytes: Some(1000),
            ..NewApp::default()
        })
        .await;
    let png = |len| [text("file_type", b"image/png"), file(&png_bytes(len)), end()].concat();
    let cases: Vec<(&str, Call, StatusCode, String)> = vec![
        (
            "no token",
            Call::upload(&s.app).without("token").multipart(valid_form()),
            StatusCode::UNAUTHORIZED,
            AUTH_FAILED.into(),
        ),
        (
            "not a CAPI app",
            Call::upload(&non_capi).multipart(valid_form()),
            StatusCode::BAD_REQUEST,
            NOT_CAPI.into(),
        ),
        (
            "a type not allowed",
            Call::upload(&s.app)
                .multipart([text("file_type", b"image/gif"), file(b"GIF89a"), end()].concat()),
            StatusCode::BAD_REQUEST,
            type_refused("image/gif"),
        ),
        (
            "a type as sent, not as normalised",
            Call::upload(&s.app)
                .multipart([text("file_type", b" Image/GIF "), file(b"GIF89a"), end()].concat()),
            StatusCode::BAD_REQUEST,
            type_refused(" Image/GIF "),
        ),
        (
            "no type",
            Call::upload(&s.app).multipart([file(&png_bytes(100)), end()].concat()),
            StatusCode::BAD_REQUEST,
            type_refused(""),
        ),
        (
            "no file",
            Call::upload(&s.app).multipart([text("file_type", b"image/png"), end()].concat()),
            StatusCode::BAD_REQUEST,
            "Param file is required: send the file as a multipart/form-data part named 'file'.".into(),
        ),
        (
            "the file as a URL the service may not fetch",
            Call::upload(&s.app).multipart(
                [
                    text("file_type", b"image/png"),
                    text("file", b"http://127.0.0.1/a.png"),
                    end(),
                ]
                .concat(),
            ),
            StatusCode::BAD_REQUEST,
            "Unable to fetch the file URL: address not allowed".into(),
        ),
        (
            "two files, the second large",
            Call::upload(&s.app).multipart(
                [
                    text("file_type", b"image/png"),
                    file(&png_bytes(10)),
                    file(&png_bytes(6 * 1024 * 1024)),
                    end(),
                ]
                .concat(),
            ),
            StatusCode::BAD_REQUEST,
            "Param file was sent more than once; send exactly one file.".into(),
        ),
        (
            "an empty file",
            Call::upload(&s.app).multipart([text("file_type", b"image/png"), file(b""), end()].concat()),
            StatusCode::BAD_REQUEST,
            "Param file must not be empty.".into(),
        ),
        (
            "one byte past the app's limit",
            Call::upload(&small).multipart(png(1001)),
            StatusCode::PAYLOAD_TOO_LARGE,
            TOO_LARGE.into(),
        ),
        (
            "content that contradicts the type",
            Call::upload(&s.app)
                .multipart([text("file_type", b"image/png"), file(b"%PDF-1.7\n"), end()].concat()),
            StatusCode::BAD_REQUEST,
            "Param file content is 'application/pdf', which does not match file_type 'image/png'.".into(),
        ),
    ];
    for (case, call, status, message) in cases {
        s.send(call).await.assert_error(case, status, &message);
    }
    let reply = s
        .send(
            Call::upload(&s.app).multipart([text("file_type", b"image/png"), file(&png_bytes(100))].concat()),
        )
        .await;
    reply.assert_error_naming("a form cut short", StatusCode::BAD_REQUEST, MALFORMED, &[]);
    assert_eq!(s.stored().await, 0);

    let reply = s.send(Call::upload(&small).multipart(png(1000))).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "exactly the limit: {}",
        reply.text()
    );
    assert_eq!(s.stored().await, 1);
}

/// The headers every answer that describes the file carries, whole or in part.
fn assert_describes(case: &str, reply: &Reply, etag: &str, last_modified: &str) {
    assert_eq!(reply.header("content-type"), Some("image/png"), "{case}");
    assert_eq!(reply.header("etag"), Some(etag), "{case}");
    assert_eq!(reply.header("last-modified"), Some(last_modified), "{case}");
    assert_eq!(reply.header("accept-ranges"), Some("bytes"), "{case}");
    assert_eq!(
        reply.header("cache-control"),
        Some("private, no-cache, no-transform"),
        "{case}"
    );
    assert_eq!(
        reply.header("content-disposition"),
        Some(
            "attachment; filename=\"holiday photo _1_.png\"; filename*=UTF-8''holiday%20photo%20%221%22.png"
        ),
        "{case}"
    );
}

#[tokio::test]
async fn a_download_sends_the_file_whole_by_range_cached_and_as_headers() {
    let s = Service::new().await;
    let bytes = png_bytes(300_000);
    let id = s.upload(&bytes).await;
    let etag = format!("\"{}\"", sha256_hex(&bytes));
    let created = s
        .vault
        .info(&AppId::new(&s.app.id), &MediaId::new(&id))
        .await
        .unwrap()
        .created_at;
    let last_modified = to_datetime(created)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let get = || Call::media(Method::GET, &s.app, &format!("/{id}"));
    let head = || Call::media(Method::HEAD, &s.app, &format!("/{id}"));

    let whole = s.send(get()).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_describes("whole", &whole, &etag, &last_modified);
    assert_eq!(whole.header("content-length"), Some("300000"));
    assert_eq!(whole.header("content-range"), None);
    assert!(whole.body == bytes, "the file, whole");

    let described = s.send(head()).await;
    assert_eq!(described.status, StatusCode::OK);
    assert_describes("HEAD", &described, &etag, &last_modified);
    assert_eq!(described.header("content-length"), Some("300000"));
    assert!(described.body.is_empty());

    for (range, start, end) in [
        ("bytes=0-0", 0, 1),
        ("bytes=65470-65500", 65_470, 65_501),
        ("bytes=299990-", 299_990, 300_000),
        ("bytes=-10", 299_990, 300_000),
        ("bytes=100-999999", 100, 300_000),
    ] {
        let content_range = format!("bytes {start}-{}/300000", end - 1);
        let length = (end - start).to_string();
        let part = s.send(get().header("range", range)).await;
        assert_eq!(part.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_describes(range, &part, &etag, &last_modified);
        assert_eq!(
            part.header("content-range"),
            Some(content_range.as_str()),
            "{range}"
        );
        assert_eq!(part.header("content-length"), Some(length.as_str()), "{range}");
        assert!(part.body == bytes[start..end], "{range}");

        let part = s.send(head().header("range", range)).await;
        assert_eq!(part.status, StatusCode::PARTIAL_CONTENT, "HEAD {range}");
        assert_eq!(
            part.header("content-range"),
            Some(content_range.as_str()),
            "HEAD {range}"
        );
        assert_eq!(
            part.header("content-length"),
            Some(length.as_str()),
            "HEAD {range}"
        );
        assert!(part.body.is_empty());
    }

    let refused = s.send(get().header("range", "bytes=300000-")).await;
    refused.assert_error(
        "past the end",
        StatusCode::RANGE_NOT_SATISFIABLE,
        "Requested range not satisfiable",
    );
    assert_eq!(refused.header("content-range"), Some("bytes */300000"));
    assert_eq!(refused.header("etag"), None);
    let refused = s.send(head().header("range", "bytes=300000-")).await;
    assert_eq!(refused.status, StatusCode::RANGE_NOT_SATISFIABLE, "HEAD");
    assert_eq!(refused.header("content-range"), Some("bytes */300000"), "HEAD");
    assert!(refused.body.is_empty(), "HEAD");

    // If-Range: the range only for this very file, else the whole of it.
    let weak = format!("W/{etag}");
    for (if_range, ranged) in [
        (etag.as_str(), true),
        (last_modified.as_str(), true),
        ("\"another file\"", false),
        (weak.as_str(), false),
        ("Thu, 01 Jan 1970 00:00:00 GMT", false),
    ] {
        let reply = s
            .send(get().header("range", "bytes=0-9").header("if-range", if_range))
            .await;
        if ranged {
            assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{if_range}");
            assert!(reply.body == bytes[..10], "{if_range}");
        } else {
            assert_eq!(reply.status, StatusCode::OK, "{if_range}");
            assert!(reply.body == bytes, "{if_range}");
        }
    }

    let several = s.send(get().header("range", "bytes=0-1,5-6")).await;
    assert_eq!(
        several.status,
        StatusCode::OK,
        "several ranges get the whole file"
    );
    assert!(several.body == bytes);

    let weak = format!("W/{etag}");
    let listed = format!("\"other\", {etag}");
    for tag in [etag.as_str(), weak.as_str(), listed.as_str(), "*"] {
        for call in [get(), head()] {
            let cached = s.send(call.header("if-none-match", tag)).await;
            assert_eq!(cached.status, StatusCode::NOT_MODIFIED, "{tag}");
            assert_describes(tag, &cached, &etag, &last_modified);
            assert!(cached.body.is_empty(), "{tag}");
        }
    }
    let stale = s.send(get().header("if-none-match", "\"other\"")).await;
    assert_eq!(stale.status, StatusCode::OK);
    assert!(stale.body == bytes);

    // The dates and If-Match (RFC 9110 §13), as a cache or a careful
    // client sends them.
    let earlier = "Thu, 01 Jan 1970 00:00:00 GMT";
    for (name, value, answer) in [
        (
            "if-modified-since",
            last_modified.as_str(),
            StatusCode::NOT_MODIFIED,
        ),
        ("if-modified-since", earlier, StatusCode::OK),
        ("if-match", etag.as_str(), StatusCode::OK),
        ("if-match", "*", StatusCode::OK),
        ("if-match", "\"another file\"", StatusCode::PRECONDITION_FAILED),
        ("if-unmodified-since", last_modified.as_str(), StatusCode::OK),
        ("if-unmodified-since", earlier, StatusCode::PRECONDITION_FAILED),
    ] {
        let case = format!("{name}: {value}");
        for call in [get(), head()] {
            let reply = s.send(call.header(name, value)).await;
            assert_eq!(reply.status, answer, "{case}");
        }
        let reply = s
            .send(get().header(name, value).header("range", "bytes=0-9"))
            .await;
        match answer {
            StatusCode::OK => {
                assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{case}");
                assert!(reply.body == bytes[..10], "{case}");
            }
            StatusCode::NOT_MODIFIED => {
                assert_eq!(reply.status, answer, "{case}");
                assert_describes(&case, &reply, &etag, &last_modified);
                assert!(reply.body.is_empty(), "{case}");
            }
            _ => reply.assert_error(&case, answer, "Precondition failed"),
        }
    }
}

/// A file part with a type but no filename is stored; it is sent as a bare
/// attachment (with no header at all, a browser would show it inline).
#[tokio::test]
async fn a_file_without_a_filename_is_sent_as_a_bare_attachment() {
    let s = Service::new().await;
    let form = [
        text("file_type", b"image/png"),
        part(
            b"Content-Disposition: form-data; name=\"file\"\r\nContent-Type: image/png",
            &png_bytes(100),
        ),
        end(),
    ]
    .concat();
    let id = s.send(Call::upload(&s.app).multipart(form)).await.json()["mediaId"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = s.send(Call::media(Method::GET, &s.app, &format!("/{id}"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-disposition"), Some("attachment"));
    assert!(reply.body == png_bytes(100));
}

#[tokio::test]
async fn info_describes_the_file_field_by_field() {
    let s = Service::new().await;
    let bytes = png_bytes(4321);
    let id = s.upload(&bytes).await;
    let reply = s
        .send(Call::media(Method::GET, &s.app, &format!("/{id}/info")))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let info = reply.json();
    let (created, expires) = (
        info["createdAt"].as_str().unwrap(),
        info["expiresAt"].as_str().unwrap(),
    );
    assert_eq!(
        reply.text(),
        format!(
            r#"{{"id":"{id}","mimeType":"image/png","sha256":"{}","fileSize":4321,"createdAt":"{created}","expiresAt":"{expires}","status":"success"}}"#,
            sha256_hex(&bytes)
        )
    );
    let stored = s
        .vault
        .info(&AppId::new(&s.app.id), &MediaId::new(&id))
        .await
        .unwrap();
    for (field, time, ms) in [
        ("createdAt", created, stored.created_at),
        ("expiresAt", expires, stored.expires_at),
    ] {
        assert_eq!(
            time,
            to_datetime(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "{field}: RFC 3339, UTC, milliseconds"
        );
    }
    let retention = stored.expires_at - stored.created_at;
    assert!(retention >= 30 * 86_400_000, "{retention}");
}

#[tokio::test]
async fn delete_answers_success_then_every_read_is_404() {
    let s = Service::new().await;
    let keep = s.upload(&png_bytes(100)).await;
    let id = s.upload(&png_bytes(1000)).await;
    let media = format!("/{id}");

    let reply = s.send(Call::media(Method::DELETE, &s.app, &media)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.text(),
        r#"{"message":"Media deleted successfully","status":"success"}"#
    );
    assert_eq!(s.stored().await, 1);

    for (case, method, tail) in [
        ("GET", Method::GET, media.clone()),
        ("info", Method::GET, format!("{media}/info")),
        ("DELETE again", Method::DELETE, media.clone()),
    ] {
        s.send(Call::media(method, &s.app, &tail)).await.assert_error(
            case,
            StatusCode::NOT_FOUND,
            MEDIA_NOT_FOUND,
        );
    }
    let head = s.send(Call::media(Method::HEAD, &s.app, &media)).await;
    assert_eq!(head.status, StatusCode::NOT_FOUND);
    assert_eq!(head.header("etag"), None);
    let kept = s
        .send(Call::media(Method::GET, &s.app, &format!("/{keep}")))
        .await;
    assert!(kept.body == png_bytes(100), "the other file stays");
}

/// A read by the wrong app, or of what does not exist, says nothing more
/// than `Media not found`: the same answer, header for header.
#[tokio::test]
async fn another_apps_media_answers_like_media_that_never_existed() {
    let s = Service::new().await;
    let id = s.upload(&png_bytes(1000)).await;
    let etag = format!("\"{}\"", sha256_hex(&png_bytes(1000)));
    let b = s.capi_app().await;
    for (method, tail) in [
        (Method::GET, ""),
        (Method::HEAD, ""),
        (Method::GET, "/info"),
        (Method::DELETE, ""),
    ] {
        for headers in [
            vec![],
            vec![("range", "bytes=0-0")],
            vec![("if-none-match", etag.as_str())],
        ] {
            let mut replies = Vec::new();
            for media in [id.as_str(), "00000000-0000-4000-8000-000000000000"] {
                let mut call = Call::media(method.clone(), &b, &format!("/{media}{tail}"));
                for (name, value) in &headers {
                    call = call.header(name, value);
                }
                let reply = s.send(call).await;
                let mut seen = reply.headers.clone();
                seen.remove("x-request-id");
                replies.push((reply.status, seen, reply.body));
            }
            let case = format!("{method} {tail} {headers:?}");
            assert_eq!(replies[0].0, StatusCode::NOT_FOUND, "{case}");
            if method != Method::HEAD {
                assert_eq!(replies[0].2, error_body(MEDIA_NOT_FOUND), "{case}");
            }
            assert_eq!(replies[0], replies[1], "{case}: like an id that never existed");
        }
    }
    assert_eq!(s.stored().await, 1);
}
