//! Which error answers when a request has several faults, and the shape of
//! the answers the router gives outside the handlers. An upload is judged
//! 401, 400 non-CAPI, 429 (rate, then slots), 400 form (part by part, as
//! they arrive), 403 quota (see `quota.rs`), 413, 400 content; a read 401,
//! 404, then 304, 416, 503.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use mediavault_storage::{AppId, AppUpdate, NewApp};

use super::*;
use crate::error::{AUTH_FAILED, MEDIA_NOT_FOUND, NOT_CAPI, TOO_LARGE};
use crate::{LimitSettings, Limits, Slots};

/// An app id that exists nowhere, though it could.
const UNKNOWN_APP: &str = "0b5e2c4e-6a53-4f4e-9d2b-6f0f7e1c2a10";

/// A body that is no multipart form at all.
fn not_a_form(call: Call) -> Call {
    call.body("text/plain", b"hello".to_vec())
}

/// The start of an ELF executable: content no declared type agrees with.
fn elf(len: usize) -> Vec<u8> {
    let mut bytes = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0>\0\x01\0\0\0".to_vec();
    bytes.resize(len, 0);
    bytes
}

fn mismatch(declared: &str) -> String {
    format!("Param file content is 'application/x-executable', which does not match file_type '{declared}'.")
}

fn limits(uploads_per_second: u32, auth_failures_per_hour: u32) -> Arc<Limits> {
    Arc::new(Limits::new(LimitSettings {
        uploads_per_second: NonZeroU32::new(uploads_per_second).unwrap(),
        upload_burst: NonZeroU32::new(1).unwrap(),
        auth_failures_per_hour,
        trusted_proxies: Vec::new(),
    }))
}

#[tokio::test]
async fn the_fallbacks_and_rejections_answer_in_the_error_shape() {
    let s = Service::new().await;
    let app = &s.app;
    s.send(Call::get("/nope"))
        .await
        .assert_error("unknown route", StatusCode::NOT_FOUND, "Not found");
    s.send(Call::new(Method::PUT, media_uri(&app.id, "")))
        .await
        .assert_error(
            "PUT on uploads",
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
        );
    let brew = Method::from_bytes(b"BREW").unwrap();
    s.send(Call::media(brew, app, "")).await.assert_error(
        "unknown method",
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
    );
    s.send(Call::media(Method::DELETE, app, "")).await.assert_error(
        "DELETE of the collection",
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
    );
    s.send(Call::media(Method::GET, app, "/not-a-media-id"))
        .await
        .assert_error("unknown media", StatusCode::NOT_FOUND, MEDIA_NOT_FOUND);
    s.send(Call::media(Method::GET, app, "/%FF%FE"))
        .await
        .assert_error_naming("path not UTF-8", StatusCode::BAD_REQUEST, "", &["UTF-8"]);
}

/// Each step takes away the fault that answered the one before.
#[tokio::test]
async fn an_upload_answers_the_first_of_its_faults_in_the_contract_order() {
    let s = Service::new().await;
    let capi = s
        .app(NewApp {
            name: "small".into(),
            capi: true,
            max_file_bytes: Some(1000),
            ..NewApp::default()
        })
        .await;
    let non_capi = s
        .app(NewApp {
            name: "not capi".into(),
            ..NewApp::default()
        })
        .await;
    let form = |declared: &str, content: Vec<u8>| {
        [text("file_type", declared.as_bytes()), file(&content), end()].concat()
    };
    let cases: Vec<(&str, Call, StatusCode, String)> = vec![
        (
            "an app id that cannot name an app, no token, no form",
            not_a_form(Call::new(Method::POST, media_uri("a%20b", ""))),
            StatusCode::UNAUTHORIZED,
            AUTH_FAILED.into(),
        ),
        (
            "an unknown app, another app's token, no form",
            not_a_form(Call::new(Method::POST, media_uri(UNKNOWN_APP, "")).token(&capi.token)),
            StatusCode::UNAUTHORIZED,
            AUTH_FAILED.into(),
        ),
        (
            "a non-CAPI app, no token, no form",
            not_a_form(Call::new(Method::POST, media_uri(&non_capi.id, ""))),
            StatusCode::UNAUTHORIZED,
            AUTH_FAILED.into(),
        ),
        (
            "a non-CAPI app, a wrong token, no form",
            not_a_form(Call::new(Method::POST, media_uri(&non_capi.id, "")).token("mv_wrong")),
            StatusCode::UNAUTHORIZED,
            AUTH_FAILED.into(),
        ),
        (
            "a non-CAPI app, another app's token, no form",
            not_a_form(Call::new(Method::POST, media_uri(&non_capi.id, "")).token(&capi.token)),
            StatusCode::UNAUTHORIZED,
            AUTH_FAILED.into(),
        ),
        (
            "a non-CAPI app, its token, no form",
            not_a_form(Call::upload(&non_capi)),
            StatusCode::BAD_REQUEST,
            NOT_CAPI.into(),
        ),
        (
            "a non-CAPI app, its token, a disallowed type",
            Call::upload(&non_capi).multipart(form("image/gif", elf(2000))),
            StatusCode::BAD_REQUEST,
            NOT_CAPI.into(),
        ),
        (
            "a disallowed type, too large, not an image",
            Call::upload(&capi).multipart(form("image/gif", elf(2000))),
            StatusCode::BAD_REQUEST,
            type_refused("image/gif"),
        ),
        (
            "too large, not an image",
            Call::upload(&capi).multipart(form("image/png", elf(2000))),
            StatusCode::PAYLOAD_TOO_LARGE,
            TOO_LARGE.into(),
        ),
        (
            "not an image",
            Call::upload(&capi).multipart(form("image/png", elf(1000))),
            StatusCode::BAD_REQUEST,
            mismatch("image/png"),
        ),
    ];
    for (case, call, status, message) in cases {
        s.send(call).await.assert_error(case, status, &message);
    }
    let reply = s.send(not_a_form(Call::upload(&capi))).await;
    reply.assert_error_naming("no form", StatusCode::BAD_REQUEST, MALFORMED, &["multipart"]);
    assert_eq!(s.stored().await, 0);
    s.send(Call::upload(&capi).multipart(form("image/png", png_bytes(1000))))
        .await
        .json()["mediaId"]
        .as_str()
        .expect("exactly the limit is stored");
    assert_eq!(s.stored().await, 1);
}

/// The app's rate is checked after its authentication and CAPI status, and
/// before a slot is taken or the body read.
#[tokio::test]
async fn the_upload_rate_answers_after_the_app_and_before_slots_and_form() {
    let s = Service::with(|state| {
        state.limits = limits(1, 20);
        state.uploads = Arc::new(Slots::uploads(1, 1));
    })
    .await;
    let app = &s.app;
    s.upload(&png_bytes(100)).await;
    let _only_slot = s.state.uploads.try_acquire(&app.id).unwrap();

    s.send(not_a_form(Call::upload(app).without("token").token("mv_wrong")))
        .await
        .assert_error("a wrong token", StatusCode::UNAUTHORIZED, AUTH_FAILED);
    let reply = s.send(not_a_form(Call::upload(app))).await;
    let retry_after = reply.header("retry-after").expect("Retry-After").to_owned();
    reply.assert_error(
        "past the rate, no slot left, no form",
        StatusCode::TOO_MANY_REQUESTS,
        &format!("Too many uploads for this app; retry in {retry_after} s"),
    );

    s.vault
        .update_app(
            &AppId::new(&app.id),
            AppUpdate {
                capi: Some(false),
                ..AppUpdate::default()
            },
        )
        .await
        .unwrap();
    s.send(not_a_form(Call::upload(app))).await.assert_error(
        "past the rate, no longer CAPI",
        StatusCode::BAD_REQUEST,
        NOT_CAPI,
    );
    assert_eq!(s.stored().await, 1);
}

/// Upload slots: all of them taken is 503, an app's share taken is 429;
/// either answers before the body is read, after authentication.
#[tokio::test]
async fn upload_slots_answer_before_the_form() {
    let s = Service::with(|state| state.uploads = Arc::new(Slots::uploads(2, 1))).await;
    let (a, b) = (&s.app, s.capi_app().await);
    let non_capi = s
        .app(NewApp {
            name: "not capi".into(),
            ..NewApp::default()
        })
        .await;

    let held_by_a = s.state.uploads.try_acquire(&a.id).unwrap();
    let reply = s.send(not_a_form(Call::upload(a))).await;
    reply.assert_error(
        "the app's share taken",
        StatusCode::TOO_MANY_REQUESTS,
        "This app has 1 uploads in progress, its most at once; retry when one completes",
    );
    assert_eq!(reply.header("retry-after"), Some("1"));
    s.send(Call::upload(&b).multipart(valid_form())).await.json()["mediaId"]
        .as_str()
        .expect("another app still uploads");

    let _held_by_b = s.state.uploads.try_acquire(&b.id).unwrap();
    for app in [a, &b] {
        let reply = s.send(not_a_form(Call::upload(app))).await;
        reply.assert_error(
            "every slot taken",
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many uploads in progress; retry shortly",
        );
        assert_eq!(reply.header("retry-after"), Some("1"));
    }
    s.send(not_a_form(Call::upload(a).without("token").token("mv_wrong")))
        .await
        .assert_error(
            "every slot taken, a wrong token",
            StatusCode::UNAUTHORIZED,
            AUTH_FAILED,
        );
    s.send(not_a_form(Call::upload(&non_capi))).await.assert_error(
        "every slot taken, a non-CAPI app",
        StatusCode::BAD_REQUEST,
        NOT_CAPI,
    );

    drop(held_by_a);
    s.send(Call::upload(a).multipart(valid_form())).await.json()["mediaId"]
        .as_str()
        .expect("a slot given back is taken again");
    assert_eq!(s.stored().await, 2);
}

/// Parts are judged as they arrive: a type sent first is refused before
/// the file is read; a file sent first is measured before its type is
/// known, so past the size limit it is 413 whatever type follows.
#[tokio::test]
async fn the_form_is_judged_part_by_part() {
    let s = Service::new().await;
    let small = s
        .app(NewApp {
            name: "small".into(),
            capi: true,
            max_file_bytes: Some(1000),
            ..NewApp::default()
        })
        .await;
    // Loopback, which the guard refuses: no case may fetch anything.
    let url = b"http://127.0.0.1:9/a.png";
    let cases: Vec<(&str, &AppKey, Vec<u8>, StatusCode, String)> = vec![
        (
            "a disallowed type, then a body that never closes",
            &s.app,
            [text("file_type", b"image/gif"), b"--XyZ\r\nContent-Disp".to_vec()].concat(),
            StatusCode::BAD_REQUEST,
            type_refused("image/gif"),
        ),
        (
            "no type and no file",
            &s.app,
            [text("caption", b"hi"), end()].concat(),
            StatusCode::BAD_REQUEST,
            type_refused(""),
        ),
        (
            "a type and no file",
            &s.app,
            [text("file_type", b"image/png"), end()].concat(),
            StatusCode::BAD_REQUEST,
            "Param file is required: send the file as a multipart/form-data part named 'file'.".into(),
        ),
        (
            "a file past the limit, then a disallowed type",
            &small,
            [file(&png_bytes(1001)), text("file_type", b"image/gif"), end()].concat(),
            StatusCode::PAYLOAD_TOO_LARGE,
            TOO_LARGE.into(),
        ),
        (
            "a file past the limit, and no type",
            &small,
            [file(&png_bytes(1001)), end()].concat(),
            StatusCode::PAYLOAD_TOO_LARGE,
            TOO_LARGE.into(),
        ),
        (
            "a file, then a disallowed type",
            &small,
            [file(&png_bytes(1000)), text("file_type", b"image/gif"), end()].concat(),
            StatusCode::BAD_REQUEST,
            type_refused("image/gif"),
        ),
        (
            "an empty file of a disallowed type",
            &s.app,
            [text("file_type", b"image/gif"), file(b""), end()].concat(),
            StatusCode::BAD_REQUEST,
            type_refused("image/gif"),
        ),
        (
            "an empty file of an allowed type",
            &s.app,
            [text("file_type", b"application/pdf"), file(b""), end()].concat(),
            StatusCode::BAD_REQUEST,
            "Param file must not be empty.".into(),
        ),
        (
            "a URL as the file, and no type: judged before any fetch",
            &s.app,
            [text("file", url), end()].concat(),
            StatusCode::BAD_REQUEST,
            type_refused(""),
        ),
        (
            "a disallowed type, then a URL as the file",
            &s.app,
            [text("file_type", b"image/gif"), text("file", url), end()].concat(),
            StatusCode::BAD_REQUEST,
            type_refused("image/gif"),
        ),
        (
            "two files, and no type",
            &s.app,
            [file(&png_bytes(10)), file(&png_bytes(10)), end()].concat(),
            StatusCode::BAD_REQUEST,
            "Param file was sent more than once; send exactly one file.".into(),
        ),
        (
            "a file past the limit that is not an image",
            &small,
            [text("file_type", b"image/png"), file(&elf(1001)), end()].concat(),
            StatusCode::PAYLOAD_TOO_LARGE,
            TOO_LARGE.into(),
        ),
    ];
    for (case, app, form, status, message) in cases {
        s.send(Call::upload(app).multipart(form))
            .await
            .assert_error(case, status, &message);
    }
    assert_eq!(s.stored().await, 0);
}

/// A read (GET, HEAD, info, DELETE) is judged 401, then 404; a download
/// then 304 before 416, and 416 before the download slots (503).
#[tokio::test]
async fn a_read_answers_the_first_of_its_faults_in_the_contract_order() {
    let s = Service::new().await;
    let a = &s.app;
    let b = s.capi_app().await;
    let own = s.upload(&png_bytes(1000)).await;
    let others = s.send(Call::upload(&b).multipart(valid_form())).await.json()["mediaId"]
        .as_str()
        .unwrap()
        .to_owned();
    let own_etag = format!("\"{}\"", sha256_hex(&png_bytes(1000)));
    let others_etag = format!("\"{}\"", sha256_hex(&png_bytes(5000)));

    // DELETE last: every one of its requests is refused, so nothing goes.
    for (method, tail) in [
        (Method::GET, ""),
        (Method::HEAD, ""),
        (Method::GET, "/info"),
        (Method::DELETE, ""),
    ] {
        let path = |app: &str, id: &str| media_uri(app, &format!("/{id}{tail}"));
        let cases: Vec<(&str, Call, StatusCode, &str)> = vec![
            (
                "an app id that cannot name an app, no token, an implausible id",
                Call::new(method.clone(), path("a%20b", "%00")),
                StatusCode::UNAUTHORIZED,
                AUTH_FAILED,
            ),
            (
                "an unknown app, the media's token",
                Call::new(method.clone(), path(UNKNOWN_APP, &own)).token(&a.token),
                StatusCode::UNAUTHORIZED,
                AUTH_FAILED,
            ),
            (
                "no token, an implausible id",
                Call::new(method.clone(), path(&a.id, "%00")),
                StatusCode::UNAUTHORIZED,
                AUTH_FAILED,
            ),
            (
                "a wrong token, an unknown id",
                Call::new(method.clone(), path(&a.id, "unknown")).token("mv_wrong"),
                StatusCode::UNAUTHORIZED,
                AUTH_FAILED,
            ),
            (
                "another app's token, the app's own media",
                Call::new(method.clone(), path(&a.id, &own)).token(&b.token),
                StatusCode::UNAUTHORIZED,
                AUTH_FAILED,
            ),
            (
                "the token, an implausible id",
                Call::new(method.clone(), path(&a.id, "%00")).token(&a.token),
                StatusCode::NOT_FOUND,
                MEDIA_NOT_FOUND,
            ),
            (
                "the token, an unknown id",
                Call::new(method.clone(), path(&a.id, "unknown")).token(&a.token),
                StatusCode::NOT_FOUND,
                MEDIA_NOT_FOUND,
            ),
            (
                "the token, another app's media, its ETag, a range",
                Call::new(method.clone(), path(&a.id, &others))
                    .token(&a.token)
                    .header("if-none-match", &others_etag)
                    .header("range", "bytes=0-0"),
                StatusCode::NOT_FOUND,
                MEDIA_NOT_FOUND,
            ),
        ];
        for (case, call, status, message) in cases {
            let case = format!("{method} {tail}: {case}");
            let reply = s.send(call).await;
            if method == Method::HEAD {
                assert_eq!(reply.status, status, "{case}");
            } else {
                reply.assert_error(&case, status, message);
            }
        }
    }

    for method in [Method::GET, Method::HEAD] {
        let reply = s
            .send(
                Call::media(method.clone(), a, &format!("/{own}"))
                    .header("if-none-match", &own_etag)
                    .header("range", "bytes=5000-"),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_MODIFIED,
            "{method}: a current ETag before the range"
        );
        let reply = s
            .send(Call::media(method.clone(), a, &format!("/{own}")).header("range", "bytes=1000-"))
            .await;
        assert_eq!(reply.status, StatusCode::RANGE_NOT_SATISFIABLE, "{method}");
    }
    assert_eq!(s.stored().await, 2);
}

/// One app's downloads, by its token or by its links, hold at most its
/// share of the slots: past it that app is refused with 429 while the
/// other apps still download, so slow readers of one app cannot take every
/// slot (before, one app holding them all left every other app 503).
#[tokio::test]
async fn an_app_holds_at_most_its_share_of_the_download_slots() {
    let s = Service::with(|state| {
        state.downloads = Arc::new(Slots::downloads(3, 2));
        state.links = Some(Arc::new(crate::links::LinkSigner::new(
            crate::links::LinkKeys::parse(&crate::links::LinkKeys::generate_line("l1")).unwrap(),
            Duration::from_secs(60),
        )));
    })
    .await;
    let other = s.capi_app().await;
    let mine = s.upload(&png_bytes(1000)).await;
    let theirs = {
        let form = [text("file_type", b"image/png"), file(&png_bytes(10)), end()].concat();
        let reply = s.send(Call::upload(&other).multipart(form)).await;
        reply.json()["mediaId"].as_str().unwrap().to_owned()
    };
    let link = s
        .send(Call::media(Method::POST, &s.app, &format!("/{mine}/link")).header("host", "media.test"))
        .await
        .json()["url"]
        .as_str()
        .unwrap()
        .replace("http://media.test", "");
    // Two downloads of the app in flight (slow readers, say).
    let held = [
        s.state.downloads.try_acquire(&s.app.id).unwrap(),
        s.state.downloads.try_acquire(&s.app.id).unwrap(),
    ];
    let share = "This app has 2 downloads in progress, its most at once; retry when one completes";
    let reply = s
        .send(Call::media(Method::GET, &s.app, &format!("/{mine}")))
        .await;
    reply.assert_error("by token", StatusCode::TOO_MANY_REQUESTS, share);
    assert_eq!(reply.header("retry-after"), Some("1"));
    s.send(Call::get(&link))
        .await
        .assert_error("by link", StatusCode::TOO_MANY_REQUESTS, share);
    let reply = s
        .send(Call::media(Method::GET, &other, &format!("/{theirs}")))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "another app still downloads");
    assert!(reply.body == png_bytes(10));
    drop(held);
    let reply = s.send(Call::get(&link)).await;
    assert_eq!(reply.status, StatusCode::OK, "slots given back are taken again");
    assert!(reply.body == png_bytes(1000));
}

/// Past the download slots a GET is 503; what sends no file (HEAD, 304,
/// 416, info, refusals) needs no slot.
#[tokio::test]
async fn downloads_past_their_slots_are_503_and_nothing_else_is() {
    let s = Service::with(|state| state.downloads = Arc::new(Slots::downloads(0, 1))).await;
    let app = &s.app;
    let id = s.upload(&png_bytes(1000)).await;
    let etag = format!("\"{}\"", sha256_hex(&png_bytes(1000)));
    let media = format!("/{id}");

    let reply = s.send(Call::media(Method::GET, app, &media)).await;
    reply.assert_error(
        "no download slot",
        StatusCode::SERVICE_UNAVAILABLE,
        "Too many downloads in progress; retry shortly",
    );
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("etag"), None, "the refusal describes no file");
    let reply = s
        .send(Call::media(Method::GET, app, &media).header("range", "bytes=0-0"))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a range needs a slot too"
    );

    let cases: Vec<(&str, Call, StatusCode)> = vec![
        ("HEAD", Call::media(Method::HEAD, app, &media), StatusCode::OK),
        (
            "a current ETag",
            Call::media(Method::GET, app, &media).header("if-none-match", &etag),
            StatusCode::NOT_MODIFIED,
        ),
        (
            "an unsatisfiable range",
            Call::media(Method::GET, app, &media).header("range", "bytes=1000-"),
            StatusCode::RANGE_NOT_SATISFIABLE,
        ),
        (
            "info",
            Call::media(Method::GET, app, &format!("{media}/info")),
            StatusCode::OK,
        ),
        (
            "a wrong token",
            Call::media(Method::GET, app, &media)
                .without("token")
                .token("mv_wrong"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "an unknown id",
            Call::media(Method::GET, app, "/unknown"),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (case, call, status) in cases {
        assert_eq!(s.send(call).await.status, status, "{case}");
    }
}

/// A client that failed too often for an app is 429 for that app, a right
/// token this process has not accepted yet included, on every route; app
/// ids that cannot name an app are 401 before the lock-out is consulted;
/// other clients, other apps, and tokens accepted within the hour (another
/// client's behind the same address) are not touched.
#[tokio::test]
async fn a_locked_out_client_is_429_after_the_app_id_check_and_before_the_token() {
    let s = Service::with(|state| state.limits = limits(10, 2)).await;
    let (used, b) = (&s.app, s.capi_app().await);
    let id = s.upload(&png_bytes(100)).await;
    let a = &AppKey {
        id: used.id.clone(),
        token: s
            .vault
            .issue_token(&AppId::new(&used.id), None)
            .await
            .unwrap()
            .token,
    };
    let info = format!("/{id}/info");
    for _ in 0..2 {
        let reply = s
            .send(
                Call::media(Method::GET, a, &info)
                    .without("token")
                    .token("mv_guess"),
            )
            .await;
        reply.assert_error("a guess", StatusCode::UNAUTHORIZED, AUTH_FAILED);
    }

    for (case, call) in [
        ("info", Call::media(Method::GET, a, &info)),
        ("download", Call::media(Method::GET, a, &format!("/{id}"))),
        ("HEAD", Call::media(Method::HEAD, a, &format!("/{id}"))),
        ("upload", not_a_form(Call::upload(a))),
        ("DELETE", Call::media(Method::DELETE, a, &format!("/{id}"))),
    ] {
        let reply = s.send(call).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{case}");
        let retry_after: u32 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!((3500..=3600).contains(&retry_after), "{case}: {retry_after}");
        if case != "HEAD" {
            reply.assert_error(
                case,
                StatusCode::TOO_MANY_REQUESTS,
                &format!("Too many failed authentications from this address; retry in {retry_after} s"),
            );
        }
    }
    s.send(Call::new(Method::GET, media_uri("a%20b", &info)).token(&a.token))
        .await
        .assert_error(
            "an id that cannot name an app",
            StatusCode::UNAUTHORIZED,
            AUTH_FAILED,
        );
    assert_eq!(
        s.send(Call::media(Method::GET, used, &info)).await.status,
        StatusCode::OK,
        "a token accepted before"
    );
    let elsewhere = std::net::IpAddr::from([192, 0, 2, 7]);
    assert_eq!(
        s.send(Call::media(Method::GET, a, &info).from(elsewhere))
            .await
            .status,
        StatusCode::OK,
        "another client"
    );
    assert_eq!(
        s.send(Call::media(Method::GET, &b, "/unknown/info")).await.status,
        StatusCode::NOT_FOUND,
        "another app"
    );
    assert_eq!(s.stored().await, 1);
}

/// A token this process accepted is checked whatever the lock-out; once
/// revoked, it is forgotten at its first refusal, even where that refusal
/// is the lock-out's 429, so it is no longer looked up at every try.
#[tokio::test]
async fn a_live_token_revoked_is_forgotten_when_its_answer_is_a_lock_out() {
    let s = Service::with(|state| state.limits = limits(10, 2)).await;
    let a_id = AppId::new(&s.app.id);
    let lookup = |token: &str| {
        Call::get("/v23.0/0123456789")
            .header("authorization", format!("Bearer {token}"))
            .header("host", "media.test")
    };
    let live = s.vault.issue_token(&a_id, None).await.unwrap();
    let reply = s.send(lookup(&live.token)).await;
    // Accepted: the object is unknown (Graph's 400), not the token.
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "accepted: {}",
        reply.text()
    );
    assert!(s.state.limits.is_live_token(&live.token));

    // The address is locked out of the app by another of its tokens,
    // revoked; the live one is still served.
    let other = s.vault.issue_token(&a_id, None).await.unwrap();
    s.vault.revoke_token(&a_id, &other.id).await.unwrap();
    for _ in 0..2 {
        let reply = s.send(lookup(&other.token)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    }
    let reply = s.send(lookup(&live.token)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "live: {}", reply.text());

    s.vault.revoke_token(&a_id, &live.id).await.unwrap();
    let reply = s.send(lookup(&live.token)).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{}", reply.text());
    assert!(
        !s.state.limits.is_live_token(&live.token),
        "a revoked token is forgotten at its first refusal"
    );
}

/// On the WhatsApp surface, whose paths name no app, a client still sending
/// its app's revoked token locks its address out of that app alone: another
/// app used from the same address goes on. A token never issued names no
/// app, and locks the address out of the surface.
#[tokio::test]
async fn a_revoked_bearer_token_locks_out_its_own_app_alone() {
    let s = Service::with(|state| state.limits = limits(10, 2)).await;
    let (a, b) = (&s.app, s.capi_app().await);
    let bs = s.send(Call::upload(&b).multipart(valid_form())).await.json()["mediaId"]
        .as_str()
        .unwrap()
        .to_owned();
    let a_id = AppId::new(&a.id);
    let revoked = s.vault.issue_token(&a_id, None).await.unwrap().token;
    s.vault
        .revoke_token(&a_id, &mediavault_storage::token_id_of(&revoked))
        .await
        .unwrap();
    let lookup = |token: &str, id: &str| {
        Call::get(format!("/v23.0/{id}"))
            .header("authorization", format!("Bearer {token}"))
            .header("host", "media.test")
    };
    for expected in [
        StatusCode::UNAUTHORIZED,
        StatusCode::UNAUTHORIZED,
        // Locked out of its app, the revoked token is too: it is not
        // looked up again at any rate.
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        let reply = s.send(lookup(&revoked, &bs)).await;
        assert_eq!(reply.status, expected, "{}", reply.text());
    }
    let reply = s.send(lookup(&b.token, &bs)).await;
    assert_eq!(reply.status, StatusCode::OK, "another app: {}", reply.text());
    let reply = s.send(lookup(&a.token, "0123456789")).await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the revoked token's app, its live token: {}",
        reply.text()
    );
    let reply = s.send(Call::media(Method::GET, a, "/unknown/info")).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "by its path too");

    for _ in 0..2 {
        let reply = s.send(lookup("mv_never_issued", &bs)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    }
    let b_unused = s.vault.issue_token(&AppId::new(&b.id), None).await.unwrap().token;
    let reply = s.send(lookup(&b_unused, &bs)).await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "tokens never issued lock the address out of the surface: {}",
        reply.text()
    );
    let reply = s.send(lookup(&b.token, &bs)).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "but for tokens accepted within the hour: {}",
        reply.text()
    );
    assert_eq!(
        s.send(Call::media(Method::GET, &b, &format!("/{bs}/info")))
            .await
            .status,
        StatusCode::OK,
        "and not out of the apps' paths"
    );
}

/// Path app ids that cannot be app ids (too long, or with characters no id
/// has) are 401 but count nothing: they grow no failure record and lock
/// nobody out, the sender included.
#[tokio::test]
async fn app_ids_that_cannot_exist_are_refused_without_being_counted() {
    let s = Service::with(|state| state.limits = limits(10, 2)).await;
    let app = &s.app;
    let long = "0b5e2c4e6a534f4e9d2b6f0f7e1c2a10".repeat(200);
    for app_id in [
        long.as_str(),
        long.as_str(),
        long.as_str(),
        "app%20id",
        "app%20id",
        "app%20id",
    ] {
        s.send(Call::get(media_uri(app_id, "/x/info")).token("mv_guess"))
            .await
            .assert_error(
                "an id that cannot name an app",
                StatusCode::UNAUTHORIZED,
                AUTH_FAILED,
            );
    }
    // A flood of distinct ones leaves the sender's standing with the real
    // app as it was: one failure before it, one after, make a lock-out.
    let guess = || {
        Call::media(Method::GET, app, "/unknown/info")
            .without("token")
            .token("mv_guess")
    };
    assert_eq!(s.send(guess()).await.status, StatusCode::UNAUTHORIZED);
    for i in 0..200 {
        let app_id = format!("{i:032}").repeat(3);
        let reply = s
            .send(Call::get(media_uri(&app_id, "/x/info")).token("mv_guess"))
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let right = || Call::media(Method::GET, app, "/unknown/info");
    assert_eq!(s.send(right()).await.status, StatusCode::NOT_FOUND);
    assert_eq!(s.send(guess()).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.send(guess()).await.status, StatusCode::TOO_MANY_REQUESTS);
}
