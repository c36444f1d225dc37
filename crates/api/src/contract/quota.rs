//! The storage quota at the router: 403 `Storage quota exceeded` in the
//! error shape, and its place in an upload's error order. It answers after
//! authentication, the CAPI check, the upload rate and a `file_type` sent
//! before the file; after the file's first 256 KiB (no room for another
//! medium, or for a byte) or as it passes what is left, so before the size
//! limit and the content check. A refused upload leaves nothing and holds
//! nothing.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::http::StatusCode;
use mediavault_storage::{AppId, AppUpdate, NewApp};

use super::*;
use crate::error::{AUTH_FAILED, NOT_CAPI, QUOTA_EXCEEDED, TOO_LARGE};
use crate::{LimitSettings, Limits};

/// The start of an ELF executable: content no declared type agrees with.
fn elf(len: usize) -> Vec<u8> {
    let mut bytes = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0>\0\x01\0\0\0".to_vec();
    bytes.resize(len, 0);
    bytes
}

fn form(declared: &str, content: &[u8]) -> Vec<u8> {
    [text("file_type", declared.as_bytes()), file(content), end()].concat()
}

/// A CAPI app of files up to 1,000 bytes with the given quota.
async fn app(s: &Service, max_bytes_stored: Option<u64>, max_media: Option<u64>) -> AppKey {
    s.app(NewApp {
        name: "quota".into(),
        capi: true,
        max_file_bytes: Some(1000),
        max_bytes_stored,
        max_media,
        ..NewApp::default()
    })
    .await
}

/// Uploads `len` bytes of PNG for `app`; fails unless it is stored.
async fn upload(s: &Service, app: &AppKey, len: usize) {
    let reply = s
        .send(Call::upload(app).multipart(form("image/png", &png_bytes(len))))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

/// The app's usage against its quota: (media, bytes).
async fn usage(s: &Service, app: &AppKey) -> (u64, u64) {
    let stats = s.vault.app_stats(&AppId::new(&app.id)).await.unwrap();
    (stats.media_used, stats.bytes_used)
}

async fn update(s: &Service, app: &AppKey, update: AppUpdate) {
    s.vault.update_app(&AppId::new(&app.id), update).await.unwrap();
}

#[tokio::test]
async fn an_upload_past_the_quota_is_403_and_leaves_nothing() {
    let s = Service::new().await;
    let by_bytes = app(&s, Some(1500), None).await;
    upload(&s, &by_bytes, 1000).await;
    for (case, len) in [("past what is left", 600), ("past it and the size limit", 1001)] {
        s.send(Call::upload(&by_bytes).multipart(form("image/png", &png_bytes(len))))
            .await
            .assert_error(case, StatusCode::FORBIDDEN, QUOTA_EXCEEDED);
        assert_eq!(usage(&s, &by_bytes).await, (1, 1000), "{case}: nothing held");
    }
    upload(&s, &by_bytes, 500).await;
    assert_eq!(
        usage(&s, &by_bytes).await,
        (2, 1500),
        "exactly the quota is stored"
    );

    let by_media = app(&s, None, Some(1)).await;
    upload(&s, &by_media, 10).await;
    let reply = s.send(Call::upload(&by_media).multipart(valid_form())).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.text(),
        r#"{"message":"Storage quota exceeded","status":"error"}"#
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(usage(&s, &by_media).await, (1, 10));
    assert_eq!(s.stored().await, 3);
}

/// Each step takes away the fault that answered the one before, on an app
/// with no room for another medium; then the quota is lifted.
#[tokio::test]
async fn the_quota_answers_in_the_contract_order() {
    let s = Service::new().await;
    let full = app(&s, None, Some(1)).await;
    upload(&s, &full, 10).await;

    s.send(
        Call::upload(&full)
            .without("token")
            .token("mv_wrong")
            .multipart(valid_form()),
    )
    .await
    .assert_error("a wrong token", StatusCode::UNAUTHORIZED, AUTH_FAILED);
    let capi = |capi| AppUpdate {
        capi: Some(capi),
        ..AppUpdate::default()
    };
    update(&s, &full, capi(false)).await;
    s.send(Call::upload(&full).multipart(valid_form()))
        .await
        .assert_error("not a CAPI app", StatusCode::BAD_REQUEST, NOT_CAPI);
    update(&s, &full, capi(true)).await;

    let cases: Vec<(&str, Vec<u8>, StatusCode, String)> = vec![
        (
            "a disallowed type before the file",
            form("image/gif", &png_bytes(10)),
            StatusCode::BAD_REQUEST,
            type_refused("image/gif"),
        ),
        (
            "a type and no file",
            [text("file_type", b"image/png"), end()].concat(),
            StatusCode::BAD_REQUEST,
            "Param file is required: send the file as a multipart/form-data part named 'file'.".into(),
        ),
        (
            "a file past the size limit that is not an image",
            form("image/png", &elf(2000)),
            StatusCode::FORBIDDEN,
            QUOTA_EXCEEDED.into(),
        ),
        (
            "a file that is not an image",
            form("image/png", &elf(100)),
            StatusCode::FORBIDDEN,
            QUOTA_EXCEEDED.into(),
        ),
        (
            // The type would only be known after the file: it is refused as it starts.
            "a file, then a disallowed type",
            [file(&png_bytes(10)), text("file_type", b"image/gif"), end()].concat(),
            StatusCode::FORBIDDEN,
            QUOTA_EXCEEDED.into(),
        ),
        (
            "an empty file",
            form("image/png", b""),
            StatusCode::FORBIDDEN,
            QUOTA_EXCEEDED.into(),
        ),
    ];
    for (case, body, status, message) in cases {
        s.send(Call::upload(&full).multipart(body))
            .await
            .assert_error(case, status, &message);
    }
    assert_eq!(usage(&s, &full).await, (1, 10), "nothing held");
    assert_eq!(s.stored().await, 1, "nothing left");

    update(
        &s,
        &full,
        AppUpdate {
            max_media: Some(Some(2)),
            ..AppUpdate::default()
        },
    )
    .await;
    s.send(Call::upload(&full).multipart(form("image/png", &elf(2000))))
        .await
        .assert_error("room again, too large", StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE);
    s.send(Call::upload(&full).multipart(form("image/png", &elf(100))))
        .await
        .assert_error(
            "room again, not an image",
            StatusCode::BAD_REQUEST,
            "Param file content is 'application/x-executable', which does not match file_type 'image/png'.",
        );
    upload(&s, &full, 10).await;
    assert_eq!(usage(&s, &full).await, (2, 20));
}

/// The upload rate is judged before the quota: a request past both is 429.
#[tokio::test]
async fn the_upload_rate_answers_before_the_quota() {
    let s = Service::with(|state| {
        state.limits = Arc::new(Limits::new(LimitSettings {
            uploads_per_second: NonZeroU32::new(1).unwrap(),
            upload_burst: NonZeroU32::new(1).unwrap(),
            ..LimitSettings::default()
        }));
    })
    .await;
    let full = app(&s, None, Some(1)).await;
    // An upload in progress holds the app's only medium.
    let app = s.vault.get_app(&AppId::new(&full.id)).await.unwrap();
    let mut held = s.vault.begin_upload(&app, None).await.unwrap();
    held.write(&png_bytes(10)).await.unwrap();

    s.send(Call::upload(&full).multipart(valid_form()))
        .await
        .assert_error("within the rate", StatusCode::FORBIDDEN, QUOTA_EXCEEDED);
    let reply = s.send(Call::upload(&full).multipart(valid_form())).await;
    let retry_after = reply.header("retry-after").expect("Retry-After").to_owned();
    reply.assert_error(
        "past the rate and the quota",
        StatusCode::TOO_MANY_REQUESTS,
        &format!("Too many uploads for this app; retry in {retry_after} s"),
    );
    held.abort().await;
    assert_eq!(usage(&s, &full).await, (0, 0));
    assert_eq!(s.stored().await, 0);
}

/// An upload for `app` of a form of `length` bytes sent as `body` arrives.
fn streamed_upload(app: &AppKey, length: usize, body: Body) -> Request<Body> {
    Request::post(media_uri(&app.id, ""))
        .header("token", &app.token)
        .header("content-type", form_content_type())
        .header("content-length", length)
        .body(body)
        .unwrap()
}

/// A small file is read whole before its upload begins, so its reservation
/// is its size, not the request's length, from the start (and completing it
/// has nothing to settle). Seen while the form's last part is still
/// arriving: the file's upload has begun and holds the app's one medium.
#[tokio::test]
async fn a_small_file_reserves_exactly_its_size() {
    let s = Service::new().await;
    let app = app(&s, None, None).await;
    let head = [
        text("file_type", b"image/png"),
        file(&png_bytes(500)),
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n").into_bytes(),
    ]
    .concat();
    let tail = [b"later\r\n".to_vec(), end()].concat();
    let length = head.len() + tail.len();
    let (sender, body) = futures::channel::mpsc::unbounded::<Result<Bytes, Infallible>>();
    sender.unbounded_send(Ok(head.into())).unwrap();
    let request = streamed_upload(&app, length, Body::from_stream(body));
    let while_arriving = async {
        let sender = sender;
        let held = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                let held = usage(&s, &app).await;
                if held.0 == 1 {
                    break held;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the file's upload did not begin");
        sender.unbounded_send(Ok(tail.into())).unwrap();
        held
    };
    let (reply, held) = tokio::join!(s.send_request(request), while_arriving);
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        held,
        (1, 500),
        "held while the form arrived (the request is {length} bytes)"
    );
    assert_eq!(usage(&s, &app).await, (1, 500));
}

/// A file past the size limit is not read ahead to learn its size: with a
/// limit below what is read before reserving, the upload begins once the
/// limit is passed and answers 413 there.
#[tokio::test]
async fn a_file_past_a_small_limit_is_refused_without_reading_ahead() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let s = Service::new().await;
    let app = app(&s, None, None).await;
    let form = form("image/png", &png_bytes(2 * 1024 * 1024));
    let length = form.len();
    let read = Arc::new(AtomicUsize::new(0));
    let counter = read.clone();
    let pieces: Vec<Bytes> = form.chunks(16 * 1024).map(Bytes::copy_from_slice).collect();
    // One piece at a time, as a connection delivers them.
    let body = futures::stream::iter(pieces).then(move |piece| {
        let counter = counter.clone();
        async move {
            tokio::task::yield_now().await;
            counter.fetch_add(piece.len(), Ordering::Relaxed);
            Ok::<_, Infallible>(piece)
        }
    });
    let request = streamed_upload(&app, length, Body::from_stream(body));
    s.send_request(request)
        .await
        .assert_error("past the limit", StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE);
    let read = read.load(Ordering::Relaxed);
    assert!(read <= 128 * 1024, "{read} bytes read for a limit of 1,000");
    assert_eq!(usage(&s, &app).await, (0, 0));
}
