//! The WhatsApp Cloud API surface at the router: Meta's upload, lookup and
//! delete, the Graph error envelope byte for byte (the trace id is the
//! request id, sent here as `x-request-id`), Meta's types and limits per
//! type, and one medium read on both surfaces by the same id.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use mediavault_storage::{AppId, AppUpdate, NewApp, TypeLimit};

use super::*;
use crate::{LimitSettings, Limits, LinkKeys, LinkSigner};

const PHONE: &str = "106540352242922";
const TRACE: &str = "trace-1";

/// The service, with link keys, and one CAPI app whose phone number is `PHONE`.
async fn service() -> (Service, AppKey) {
    service_with_max_ttl(Duration::from_secs(86_400)).await
}

/// As `service`, with links lasting at most `max_ttl`.
async fn service_with_max_ttl(max_ttl: Duration) -> (Service, AppKey) {
    let s = Service::with(|state| {
        let keys = LinkKeys::parse(&LinkKeys::generate_line("l1")).unwrap();
        state.links = Some(Arc::new(LinkSigner::new(keys, max_ttl)));
    })
    .await;
    let app = phone_app(&s, PHONE).await;
    (s, app)
}

async fn phone_app(s: &Service, phone: &str) -> AppKey {
    s.app(NewApp {
        name: "wa".into(),
        capi: true,
        wa_phone_number_ids: vec![phone.to_owned()],
        ..NewApp::default()
    })
    .await
}

fn bearer(call: Call, app: &AppKey) -> Call {
    call.header("authorization", format!("Bearer {}", app.token))
        .header("x-request-id", TRACE)
        .header("host", "media.test")
}

/// A file part sent as curl sends `file=@name;type=<mime>`.
fn typed_file(mime: &str, content: &[u8]) -> Vec<u8> {
    part(
        format!("Content-Disposition: form-data; name=\"file\"; filename=\"f\"\r\nContent-Type: {mime}")
            .as_bytes(),
        content,
    )
}

/// Meta's form: messaging_product, file, type.
fn wa_form(mime: &str, content: &[u8]) -> Vec<u8> {
    [
        text("messaging_product", b"whatsapp"),
        typed_file(mime, content),
        text("type", mime.as_bytes()),
        end(),
    ]
    .concat()
}

fn upload_call(app: &AppKey, phone: &str, form: Vec<u8>) -> Call {
    bearer(Call::new(Method::POST, format!("/v23.0/{phone}/media")), app).multipart(form)
}

async fn wa_upload(s: &Service, app: &AppKey, mime: &str, content: &[u8]) -> String {
    let reply = s.send(upload_call(app, PHONE, wa_form(mime, content))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let json = reply.json();
    assert_eq!(json.as_object().unwrap().len(), 1, "{json}");
    json["id"].as_str().unwrap().to_owned()
}

/// The Graph error body, byte for byte.
fn graph(message: &str, kind: &str, code: u32, subcode: Option<u32>, details: Option<&str>) -> String {
    let mut body = format!(
        r#"{{"error":{{"message":{},"type":"{kind}","code":{code}"#,
        serde_json::to_string(message).unwrap()
    );
    if let Some(subcode) = subcode {
        body.push_str(&format!(r#","error_subcode":{subcode}"#));
    }
    if let Some(details) = details {
        body.push_str(&format!(
            r#","error_data":{{"messaging_product":"whatsapp","details":{}}}"#,
            serde_json::to_string(details).unwrap()
        ));
    }
    body.push_str(&format!(r#","fbtrace_id":"{TRACE}"}}}}"#));
    body
}

fn unknown(method: &str, id: &str) -> String {
    graph(
        &format!(
            "Unsupported {method} request. Object with ID '{id}' does not exist, cannot be loaded due to \
             missing permissions, or does not support this operation. Please read the Graph API \
             documentation at https://developers.facebook.com/docs/graph-api"
        ),
        "GraphMethodException",
        100,
        Some(33),
        None,
    )
}

fn assert_graph(reply: &Reply, case: &str, status: StatusCode, body: &str) {
    assert_eq!(reply.status, status, "{case}: {}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"), "{case}");
    assert_eq!(reply.text(), body, "{case}");
}

/// The path of `url` (the tests' requests carry `Host: media.test`).
fn path_of(url: &str) -> &str {
    url.strip_prefix("http://media.test")
        .unwrap_or_else(|| panic!("{url}"))
}

/// A store failure while the phone number is checked answers as the
/// route's other failures do: 131053 for an upload, 131052 for a lookup
/// (it was Graph's unknown error, code 1). The token is still answered
/// from memory when the store goes.
#[tokio::test]
async fn a_store_failure_checking_the_phone_number_is_the_routes_own_error() {
    let (s, app) = service().await;
    let id = wa_upload(&s, &app, "image/png", &png_bytes(100)).await;
    s.vault.close().await;
    let upload = s
        .send(upload_call(&app, PHONE, wa_form("image/png", &png_bytes(100))))
        .await;
    let lookup = s
        .send(bearer(
            Call::get(format!("/v23.0/{id}?phone_number_id={PHONE}")),
            &app,
        ))
        .await;
    for (case, reply, code) in [("upload", upload, 131_053), ("lookup", lookup, 131_052)] {
        assert_eq!(
            reply.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{case}: {}",
            reply.text()
        );
        assert_eq!(reply.json()["error"]["code"], code, "{case}: {}", reply.text());
    }
}

#[tokio::test]
async fn a_medium_goes_up_is_looked_up_downloaded_and_deleted() {
    let (s, app) = service().await;
    let png = png_bytes(5000);
    let id = wa_upload(&s, &app, "image/png", &png).await;
    assert!(
        (16..=19).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()),
        "{id}"
    );

    for query in ["", "?phone_number_id=106540352242922"] {
        let reply = s
            .send(bearer(Call::get(format!("/v23.0/{id}{query}")), &app))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let json = reply.json();
        let url = json["url"].as_str().unwrap();
        assert!(url.starts_with("http://media.test/l/"), "{url}");
        // Meta's fields, in Meta's order, the size as a string.
        let expected = format!(
            r#"{{"messaging_product":"whatsapp","url":"{url}","mime_type":"image/png","sha256":"{}","file_size":"5000","id":"{id}"}}"#,
            sha256_hex(&png)
        );
        assert_eq!(reply.text(), expected);
        // Without credentials, and with the Bearer token Meta's URLs need.
        for call in [Call::get(path_of(url)), bearer(Call::get(path_of(url)), &app)] {
            let file = s.send(call).await;
            assert_eq!(file.status, StatusCode::OK, "{url}: {}", file.text());
            assert!(file.body == png, "{url}");
            assert_eq!(file.header("content-type"), Some("image/png"));
        }
    }

    let deleted = s
        .send(bearer(Call::new(Method::DELETE, format!("/v23.0/{id}")), &app))
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text());
    assert_eq!(deleted.text(), r#"{"success":true}"#);
    let gone = s.send(bearer(Call::get(format!("/v23.0/{id}")), &app)).await;
    assert_graph(
        &gone,
        "after delete",
        StatusCode::BAD_REQUEST,
        &unknown("get", &id),
    );
    let again = s
        .send(bearer(Call::new(Method::DELETE, format!("/v23.0/{id}")), &app))
        .await;
    assert_graph(
        &again,
        "delete again",
        StatusCode::BAD_REQUEST,
        &unknown("delete", &id),
    );
    assert_eq!(s.stored().await, 0);
}

#[tokio::test]
async fn the_type_comes_from_the_type_field_or_else_the_file_part() {
    let (s, app) = service().await;
    let png = png_bytes(2000);
    let orders = [
        (
            "type first",
            [
                text("messaging_product", b"whatsapp"),
                text("type", b"image/png"),
                typed_file("application/octet-stream", &png),
                end(),
            ]
            .concat(),
        ),
        (
            "type last",
            [
                typed_file("application/octet-stream", &png),
                text("type", b"image/png"),
                text("messaging_product", b"whatsapp"),
                end(),
            ]
            .concat(),
        ),
        (
            "part type only",
            [
                text("messaging_product", b"whatsapp"),
                typed_file("image/png", &png),
                end(),
            ]
            .concat(),
        ),
    ];
    for (case, form) in orders {
        let reply = s.send(upload_call(&app, PHONE, form)).await;
        assert_eq!(reply.status, StatusCode::OK, "{case}: {}", reply.text());
        let id = reply.json()["id"].as_str().unwrap().to_owned();
        let info = s.send(bearer(Call::get(format!("/v23.0/{id}")), &app)).await;
        assert_eq!(info.json()["mime_type"], "image/png", "{case}");
    }
}

/// A lookup's URL lasts five minutes, as Meta's do, or `links.max_ttl`
/// where that is shorter (before: five minutes whatever the setting), and
/// it ends with the token it was looked up with.
#[tokio::test]
async fn a_lookups_url_lasts_no_longer_than_links_max_ttl_or_its_token() {
    let (s, app) = service_with_max_ttl(Duration::from_secs(60)).await;
    let id = wa_upload(&s, &app, "image/png", &png_bytes(100)).await;
    let reply = s.send(bearer(Call::get(format!("/v23.0/{id}")), &app)).await;
    let url = reply.json()["url"].as_str().unwrap().to_owned();
    let token = path_of(&url).strip_prefix("/l/").unwrap();
    let signer = s.state.links.clone().unwrap();
    let now = mediavault_storage::now_millis();
    let link = signer.verify(token, now).unwrap();
    assert!(
        link.expires_at <= now + 60_000,
        "expires in {} ms",
        link.expires_at - now
    );
    assert_eq!(link.token_id, Some(mediavault_storage::token_id_of(&app.token)));
    assert_eq!(s.send(Call::get(path_of(&url))).await.status, StatusCode::OK);
    s.vault
        .revoke_token(&AppId::new(&app.id), link.token_id.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(
        s.send(Call::get(path_of(&url))).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn both_surfaces_read_each_others_media() {
    let (s, app) = service().await;
    let png = png_bytes(3000);
    // Up on WhatsApp, down on Gupshup.
    let id = wa_upload(&s, &app, "image/png", &png).await;
    let download = s.send(Call::media(Method::GET, &app, &format!("/{id}"))).await;
    assert_eq!(download.status, StatusCode::OK, "{}", download.text());
    assert!(download.body == png);
    let info = s
        .send(Call::media(Method::GET, &app, &format!("/{id}/info")))
        .await;
    assert_eq!(info.json()["sha256"], sha256_hex(&png));
    // Up on Gupshup, looked up and deleted on WhatsApp.
    let form = [text("file_type", b"image/png"), file(&png), end()].concat();
    let reply = s.send(Call::upload(&app).multipart(form)).await;
    let gupshup_id = reply.json()["mediaId"].as_str().unwrap().to_owned();
    let looked_up = s
        .send(bearer(Call::get(format!("/v23.0/{gupshup_id}")), &app))
        .await;
    assert_eq!(looked_up.status, StatusCode::OK, "{}", looked_up.text());
    assert_eq!(looked_up.json()["file_size"], "3000");
    let deleted = s
        .send(bearer(
            Call::new(Method::DELETE, format!("/v23.0/{gupshup_id}")),
            &app,
        ))
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    let gone = s
        .send(Call::media(Method::GET, &app, &format!("/{gupshup_id}")))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn another_apps_media_and_phone_numbers_are_unknown_objects() {
    let (s, app) = service().await;
    let other = phone_app(&s, "222222222222222").await;
    let id = wa_upload(&s, &app, "image/png", &png_bytes(100)).await;
    let cases = [
        (
            "other app's medium",
            bearer(Call::get(format!("/v23.0/{id}")), &other),
            unknown("get", &id),
        ),
        (
            "other app's delete",
            bearer(Call::new(Method::DELETE, format!("/v23.0/{id}")), &other),
            unknown("delete", &id),
        ),
        (
            "phone of another app",
            bearer(
                Call::get(format!("/v23.0/{id}?phone_number_id=222222222222222")),
                &app,
            ),
            unknown("get", &id),
        ),
        (
            "unmapped phone",
            bearer(Call::get(format!("/v23.0/{id}?phone_number_id=999")), &app),
            unknown("get", &id),
        ),
        (
            "no such medium",
            bearer(Call::get("/v23.0/1234567890123456"), &app),
            unknown("get", "1234567890123456"),
        ),
        (
            "upload to another app's phone",
            upload_call(&app, "222222222222222", wa_form("image/png", &png_bytes(10))),
            unknown("post", "222222222222222"),
        ),
        (
            "upload to an unmapped phone",
            upload_call(&app, "12345", wa_form("image/png", &png_bytes(10))),
            unknown("post", "12345"),
        ),
    ];
    for (case, call, body) in cases {
        assert_graph(&s.send(call).await, case, StatusCode::BAD_REQUEST, &body);
    }
    // The medium is still there for its own app.
    let mine = s.send(bearer(Call::get(format!("/v23.0/{id}")), &app)).await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(s.stored().await, 1);
}

/// A query that does not parse (a field given twice) is Graph's invalid
/// parameter, on lookup and delete alike, and deletes nothing.
#[tokio::test]
async fn a_query_that_does_not_parse_is_an_invalid_parameter() {
    let (s, app) = service().await;
    let id = wa_upload(&s, &app, "image/png", &png_bytes(100)).await;
    let twice = format!("/v23.0/{id}?phone_number_id={PHONE}&phone_number_id={PHONE}");
    let invalid = graph(
        "(#100) Invalid query: duplicate field `phone_number_id`",
        "OAuthException",
        100,
        None,
        None,
    );
    for method in [Method::GET, Method::DELETE] {
        let reply = s
            .send(bearer(Call::new(method.clone(), twice.clone()), &app))
            .await;
        assert_graph(&reply, method.as_str(), StatusCode::BAD_REQUEST, &invalid);
    }
    assert_eq!(s.stored().await, 1);
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_190() {
    let (s, app) = service().await;
    let id = wa_upload(&s, &app, "image/png", &png_bytes(100)).await;
    let invalid = graph(
        "Invalid OAuth access token - Cannot parse access token",
        "OAuthException",
        190,
        None,
        None,
    );
    let no_token = |call: Call| call.header("x-request-id", TRACE);
    let wrong = AppKey {
        id: app.id.clone(),
        token: "mv_not-a-token".into(),
    };
    let cases = [
        ("get, no token", no_token(Call::get(format!("/v23.0/{id}")))),
        (
            "get, wrong token",
            bearer(Call::get(format!("/v23.0/{id}")), &wrong),
        ),
        (
            "delete, no token",
            no_token(Call::new(Method::DELETE, format!("/v23.0/{id}"))),
        ),
        (
            "get, no token, a query that does not parse",
            no_token(Call::get(format!(
                "/v23.0/{id}?phone_number_id=1&phone_number_id=2"
            ))),
        ),
        (
            "upload, wrong token",
            upload_call(&wrong, PHONE, wa_form("image/png", &png_bytes(10))),
        ),
    ];
    for (case, call) in cases {
        assert_graph(&s.send(call).await, case, StatusCode::UNAUTHORIZED, &invalid);
    }
    assert_eq!(s.stored().await, 1);
}

/// Graph reads `messaging_product` from the query string as from the form
/// (whatsapp-api-js sends it there, with a form of `file` alone), and reads
/// its value in either case. A wrong one is refused there as in the form.
#[tokio::test]
async fn messaging_product_may_come_in_the_query_string() {
    let (s, app) = service().await;
    let png = png_bytes(100);
    let file_alone = || [typed_file("image/png", &png), end()].concat();
    for query in [
        "messaging_product=whatsapp",
        "messaging_product=WHATSAPP&access_token=x",
    ] {
        let call = Call::new(Method::POST, format!("/v23.0/{PHONE}/media?{query}"));
        let reply = s.send(bearer(call, &app).multipart(file_alone())).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text());
        assert_eq!(reply.json().as_object().unwrap().len(), 1, "{query}");
    }
    let call = Call::new(
        Method::POST,
        format!("/v23.0/{PHONE}/media?messaging_product=sms"),
    );
    let reply = s.send(bearer(call, &app).multipart(file_alone())).await;
    let refused = graph(
        r#"(#100) Param messaging_product must be one of {WHATSAPP} - got "sms"."#,
        "OAuthException",
        100,
        None,
        None,
    );
    assert_graph(&reply, "sms in the query", StatusCode::BAD_REQUEST, &refused);
    assert_eq!(s.stored().await, 2);
}

#[tokio::test]
async fn bad_forms_are_invalid_parameters_and_leave_nothing() {
    let (s, app) = service().await;
    let png = png_bytes(100);
    let meta_types = "audio/aac, audio/amr, audio/mpeg, audio/mp4, audio/ogg, text/plain, \
                      application/vnd.ms-excel, application/msword, application/vnd.ms-powerpoint, \
                      application/pdf, application/vnd.openxmlformats-officedocument.spreadsheetml.sheet, \
                      application/vnd.openxmlformats-officedocument.wordprocessingml.document, \
                      application/vnd.openxmlformats-officedocument.presentationml.presentation, image/jpeg, image/png, \
                      image/webp, video/3gpp, video/mp4";
    let cases = [
        (
            "no messaging_product",
            [typed_file("image/png", &png), text("type", b"image/png"), end()].concat(),
            graph(
                "(#100) The parameter messaging_product is required.",
                "OAuthException",
                100,
                None,
                None,
            ),
        ),
        (
            "another messaging_product",
            [
                text("messaging_product", b"sms"),
                typed_file("image/png", &png),
                text("type", b"image/png"),
                end(),
            ]
            .concat(),
            graph(
                r#"(#100) Param messaging_product must be one of {WHATSAPP} - got "sms"."#,
                "OAuthException",
                100,
                None,
                None,
            ),
        ),
        (
            "a type Meta does not take",
            wa_form("image/gif", b"GIF89a\x01\x00\x01\x00"),
            graph(
                &format!(
                    "(#100) Param file must be a file with one of the following types: {meta_types}. Received file of type 'image/gif'."
                ),
                "OAuthException",
                100,
                None,
                None,
            ),
        ),
        (
            "no file",
            [
                text("messaging_product", b"whatsapp"),
                text("type", b"image/png"),
                end(),
            ]
            .concat(),
            graph(
                "(#100) The parameter file is required.",
                "OAuthException",
                100,
                None,
                None,
            ),
        ),
        (
            "the file as text",
            [
                text("messaging_product", b"whatsapp"),
                text("type", b"image/png"),
                text("file", b"https://example.com/a.png"),
                end(),
            ]
            .concat(),
            graph(
                "(#100) Param file must be a file upload.",
                "OAuthException",
                100,
                None,
                None,
            ),
        ),
        (
            "content that is not its type",
            wa_form("image/jpeg", &png),
            graph(
                "(#131053) Media upload error",
                "OAuthException",
                131053,
                None,
                Some("The file's content is 'image/png', which does not match its type 'image/jpeg'"),
            ),
        ),
    ];
    for (case, form, body) in cases {
        assert_graph(
            &s.send(upload_call(&app, PHONE, form)).await,
            case,
            StatusCode::BAD_REQUEST,
            &body,
        );
    }
    assert_eq!(s.stored().await, 0);
}

#[tokio::test]
async fn each_type_has_metas_limit_unless_the_app_sets_its_own() {
    let (s, app) = service().await;
    let too_large = |limit: u64| {
        graph(
            "(#131053) Media upload error",
            "OAuthException",
            131053,
            None,
            Some(&format!(
                "The file is larger than {limit} bytes, the most this type may have"
            )),
        )
    };
    // Images: 5 MiB, whichever part tells the type.
    let image = png_bytes(5 * 1024 * 1024 + 1);
    let reply = s
        .send(upload_call(&app, PHONE, wa_form("image/png", &image)))
        .await;
    assert_graph(
        &reply,
        "image over 5 MiB",
        StatusCode::PAYLOAD_TOO_LARGE,
        &too_large(5_242_880),
    );
    let type_last = [
        text("messaging_product", b"whatsapp"),
        typed_file("application/octet-stream", &image),
        text("type", b"image/png"),
        end(),
    ]
    .concat();
    let reply = s.send(upload_call(&app, PHONE, type_last)).await;
    assert_graph(
        &reply,
        "image over 5 MiB, type last",
        StatusCode::PAYLOAD_TOO_LARGE,
        &too_large(5_242_880),
    );
    // The type field decides over the part's Content-Type, after the file
    // as before it: a video sent as `image/png` but declared `video/mp4`
    // has the video's 16 MiB, not the image's 5 MiB.
    let mut video = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom".to_vec();
    video.resize(6 * 1024 * 1024, 0);
    let type_after = [
        text("messaging_product", b"whatsapp"),
        typed_file("image/png", &video),
        text("type", b"video/mp4"),
        end(),
    ]
    .concat();
    let reply = s.send(upload_call(&app, PHONE, type_after)).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "a 6 MiB video, type last: {}",
        reply.text()
    );
    // Stickers: 100 KiB.
    let sticker = vec![0u8; 102_401];
    let reply = s
        .send(upload_call(&app, PHONE, wa_form("image/webp", &sticker)))
        .await;
    assert_graph(
        &reply,
        "sticker over 100 KiB",
        StatusCode::PAYLOAD_TOO_LARGE,
        &too_large(102_400),
    );
    // An animated sticker may be 500 KiB, as Meta takes (and clients check
    // against); a static one in the same extended format may not.
    let webp = |flags: u8, len: usize| {
        let mut file = b"RIFF\x00\x10\x00\x00WEBPVP8X\x0a\x00\x00\x00".to_vec();
        file.extend_from_slice(&[flags, 0, 0, 0, 0x3f, 0, 0, 0x3f, 0, 0]);
        file.extend_from_slice(b"ANIM\x06\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        file.resize(len, 0);
        file
    };
    wa_upload(&s, &app, "image/webp", &webp(0b10, 300 * 1024)).await;
    // The type first: the file is received under the larger limit.
    let type_first = [
        text("messaging_product", b"whatsapp"),
        text("type", b"image/webp"),
        typed_file("image/webp", &webp(0b10, 300 * 1024)),
        end(),
    ]
    .concat();
    let reply = s.send(upload_call(&app, PHONE, type_first)).await;
    assert_eq!(reply.status, StatusCode::OK, "type first: {}", reply.text());
    for (case, flags, len, limit) in [
        ("a static sticker over 100 KiB", 0b0, 300 * 1024, 102_400),
        ("an animated sticker over 500 KiB", 0b10, 500 * 1024 + 1, 512_000),
    ] {
        let reply = s
            .send(upload_call(&app, PHONE, wa_form("image/webp", &webp(flags, len))))
            .await;
        assert_graph(&reply, case, StatusCode::PAYLOAD_TOO_LARGE, &too_large(limit));
    }
    // Exactly 5 MiB is taken.
    wa_upload(&s, &app, "image/png", &png_bytes(5 * 1024 * 1024)).await;

    // The app's own list: PNG up to 1,000 bytes, and nothing else.
    s.vault
        .update_app(
            &AppId::new(&app.id),
            AppUpdate {
                wa_type_limits: Some(Some(vec![TypeLimit {
                    mime_type: "image/png".into(),
                    max_bytes: 1000,
                }])),
                ..AppUpdate::default()
            },
        )
        .await
        .unwrap();
    let reply = s
        .send(upload_call(&app, PHONE, wa_form("image/png", &png_bytes(1001))))
        .await;
    assert_graph(
        &reply,
        "the app's own limit",
        StatusCode::PAYLOAD_TOO_LARGE,
        &too_large(1000),
    );
    let reply = s
        .send(upload_call(
            &app,
            PHONE,
            wa_form("image/jpeg", b"\xff\xd8\xff\xe0"),
        ))
        .await;
    assert_graph(
        &reply,
        "the app's own list",
        StatusCode::BAD_REQUEST,
        &graph(
            "(#100) Param file must be a file with one of the following types: image/png. Received file of type 'image/jpeg'.",
            "OAuthException",
            100,
            None,
            None,
        ),
    );
    wa_upload(&s, &app, "image/png", &png_bytes(1000)).await;
    // The app's own size limit bounds every type.
    s.vault
        .update_app(
            &AppId::new(&app.id),
            AppUpdate {
                wa_type_limits: Some(None),
                max_file_bytes: Some(500),
                ..AppUpdate::default()
            },
        )
        .await
        .unwrap();
    let reply = s
        .send(upload_call(&app, PHONE, wa_form("image/png", &png_bytes(501))))
        .await;
    assert_graph(
        &reply,
        "the app's size limit",
        StatusCode::PAYLOAD_TOO_LARGE,
        &too_large(500),
    );
    assert_eq!(s.stored().await, 5);
}

#[tokio::test]
async fn rate_limits_and_lock_outs_have_metas_codes() {
    let s = Service::with(|state| {
        state.limits = Arc::new(Limits::new(LimitSettings {
            uploads_per_second: NonZeroU32::new(1).unwrap(),
            upload_burst: NonZeroU32::new(1).unwrap(),
            auth_failures_per_hour: 2,
            ..LimitSettings::default()
        }));
    })
    .await;
    let app = phone_app(&s, PHONE).await;
    wa_upload(&s, &app, "image/png", &png_bytes(10)).await;
    let reply = s
        .send(upload_call(&app, PHONE, wa_form("image/png", &png_bytes(10))))
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{}", reply.text());
    assert!(reply.header("retry-after").is_some());
    let json = reply.json();
    assert_eq!(json["error"]["code"], 80007, "{json}");
    assert_eq!(json["error"]["message"], "(#80007) Rate limit hit");

    let wrong = AppKey {
        id: app.id.clone(),
        token: "mv_wrong".into(),
    };
    for _ in 0..2 {
        let reply = s.send(bearer(Call::get("/v23.0/1234567890123456"), &wrong)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    // Locked out: even a right token waits, unless accepted within the hour.
    let unused = AppKey {
        id: app.id.clone(),
        token: s
            .vault
            .issue_token(&mediavault_storage::AppId::new(&app.id), None)
            .await
            .unwrap()
            .token,
    };
    let reply = s.send(bearer(Call::get("/v23.0/1234567890123456"), &app)).await;
    assert_ne!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{}", reply.text());
    let reply = s
        .send(bearer(Call::get("/v23.0/1234567890123456"), &unused))
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{}", reply.text());
    assert_graph(
        &reply,
        "locked out",
        StatusCode::TOO_MANY_REQUESTS,
        &graph(
            "(#4) Application request limit reached",
            "OAuthException",
            4,
            None,
            None,
        ),
    );
}

#[tokio::test]
async fn only_graph_versions_are_graph_routes() {
    let (s, app) = service().await;
    for uri in [
        "/23.0/1234567890123456",
        "/latest/1234567890123456",
        "/v23/1234567890123456",
    ] {
        let reply = s.send(bearer(Call::get(uri), &app)).await;
        reply.assert_error(uri, StatusCode::NOT_FOUND, "Not found");
    }
    let reply = s
        .send(
            bearer(Call::new(Method::POST, "/x1.0/106540352242922/media"), &app)
                .multipart(wa_form("image/png", &png_bytes(10))),
        )
        .await;
    reply.assert_error("POST without a version", StatusCode::NOT_FOUND, "Not found");
}

/// A file part sent without a Content-Type, as Python's requests sends one,
/// is a file by its `filename` parameter even when the name cannot be read
/// (not UTF-8, or only `filename*`); its type is the `type` field's.
#[tokio::test]
async fn a_file_part_is_a_file_by_its_filename_alone() {
    let (s, app) = service().await;
    for filename in [&b"filename=\"ph\xffoto.png\""[..], b"filename*=UTF-8''a.png"] {
        let case = String::from_utf8_lossy(filename).into_owned();
        let headers = [&b"Content-Disposition: form-data; name=\"file\"; "[..], filename].concat();
        let form = [
            text("messaging_product", b"whatsapp"),
            part(&headers, &png_bytes(100)),
            text("type", b"image/png"),
            end(),
        ]
        .concat();
        let reply = s.send(upload_call(&app, PHONE, form)).await;
        assert_eq!(reply.status, StatusCode::OK, "{case}: {}", reply.text());
        let id = reply.json()["id"].as_str().unwrap().to_owned();
        let lookup = s.send(bearer(Call::get(format!("/v23.0/{id}")), &app)).await;
        assert_eq!(lookup.json()["file_size"], "100", "{case}");
    }
    assert_eq!(s.stored().await, 2);
}

/// A Graph route's path that does not read, or a method it does not have,
/// is a Graph error like the route's others (Graph clients read
/// `error.code`): an invalid parameter, or Meta's unsupported request with
/// 405 and `Allow`. A path whose first segment is no version is no Graph
/// route: the service's plain 404, even when it does not read, or its own
/// 405 for a wrong method. Nothing is stored.
#[tokio::test]
async fn a_bad_path_or_method_on_a_graph_route_is_a_graph_error() {
    let (s, app) = service().await;
    let not_utf8 = graph(
        "(#100) Invalid URL: Invalid UTF-8 in `id`",
        "OAuthException",
        100,
        None,
        None,
    );
    for (method, uri) in [
        (Method::GET, "/v23.0/%FF"),
        (Method::DELETE, "/v23.0/%FF%FE"),
        (Method::GET, "/%7623.0/%FF"),
        (Method::PUT, "/v23.0/%FF"),
    ] {
        let reply = s.send(bearer(Call::new(method.clone(), uri), &app)).await;
        assert_graph(
            &reply,
            &format!("{method} {uri}"),
            StatusCode::BAD_REQUEST,
            &not_utf8,
        );
    }
    let reply = s
        .send(upload_call(&app, "%FF", wa_form("image/png", &png_bytes(10))))
        .await;
    assert_graph(
        &reply,
        "POST /v23.0/%FF/media",
        StatusCode::BAD_REQUEST,
        &not_utf8,
    );

    let medium = "1037543291543636";
    for (method, uri, id, allow) in [
        (Method::PUT, format!("/v23.0/{medium}"), medium, "GET,HEAD,DELETE"),
        (
            Method::POST,
            format!("/v23.0/{medium}"),
            medium,
            "GET,HEAD,DELETE",
        ),
        (
            Method::PATCH,
            format!("/v19.0/{medium}"),
            medium,
            "GET,HEAD,DELETE",
        ),
        (Method::GET, format!("/v23.0/{PHONE}/media"), PHONE, "POST"),
        (Method::DELETE, format!("/v23.0/{PHONE}/media"), PHONE, "POST"),
    ] {
        let case = format!("{method} {uri}");
        let reply = s.send(bearer(Call::new(method.clone(), uri), &app)).await;
        let lower = method.as_str().to_ascii_lowercase();
        let body = unknown(&lower, id);
        assert_graph(&reply, &case, StatusCode::METHOD_NOT_ALLOWED, &body);
        assert_eq!(reply.header("allow"), Some(allow), "{case}");
    }

    for (method, uri) in [
        (Method::GET, "/foo/bar"),
        (Method::DELETE, "/foo/bar"),
        (Method::GET, "/%FF/1037543291543636"),
        (Method::GET, "/foo/%FF"),
        (Method::POST, "/x1.0/%FF/media"),
    ] {
        let reply = s.send(bearer(Call::new(method.clone(), uri), &app)).await;
        reply.assert_error(&format!("{method} {uri}"), StatusCode::NOT_FOUND, "Not found");
    }
    let reply = s.send(bearer(Call::new(Method::PUT, "/foo/bar"), &app)).await;
    reply.assert_error(
        "PUT /foo/bar",
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
    );
    assert_eq!(s.stored().await, 0);
}

#[tokio::test]
async fn without_link_keys_the_url_is_the_authenticated_download() {
    let s = Service::with(|state| state.links = None).await;
    let app = phone_app(&s, PHONE).await;
    let png = png_bytes(700);
    let id = wa_upload(&s, &app, "image/png", &png).await;
    let reply = s.send(bearer(Call::get(format!("/v23.0/{id}")), &app)).await;
    let url = reply.json()["url"].as_str().unwrap().to_owned();
    assert_eq!(
        url,
        format!("http://media.test/partner/app/{}/media/{id}", app.id)
    );
    let file = s.send(bearer(Call::get(path_of(&url)), &app)).await;
    assert_eq!(file.status, StatusCode::OK);
    assert!(file.body == png);
    let anonymous = s.send(Call::get(path_of(&url))).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

/// A refused upload still reads a small body to its end (a client that
/// writes its whole body before reading the answer would otherwise see the
/// connection reset, not the refusal), and no more than a mebibyte of a
/// large one.
#[tokio::test]
async fn a_refused_upload_reads_a_small_body_and_at_most_a_mebibyte() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (s, _) = service().await;
    const PIECE: usize = 64 * 1024;
    for (pieces, whole) in [(3, true), (48, false)] {
        let read = Arc::new(AtomicUsize::new(0));
        let counter = read.clone();
        let body =
            futures::stream::iter((0..pieces).map(|_| Bytes::from(vec![b'x'; PIECE]))).map(move |piece| {
                counter.fetch_add(piece.len(), Ordering::Relaxed);
                Ok::<_, Infallible>(piece)
            });
        let request = Request::post(format!("/v23.0/{PHONE}/media"))
            .header("authorization", "Bearer mv_not-a-token")
            .header("content-type", form_content_type())
            .header("content-length", pieces * PIECE)
            .body(Body::from_stream(body))
            .unwrap();
        let reply = s.send_request(request).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
        let read = read.load(Ordering::Relaxed);
        if whole {
            assert_eq!(read, pieces * PIECE, "a small refused body is read whole");
        } else {
            assert!(read <= 1024 * 1024 + PIECE, "{read} bytes of a refused body read");
        }
    }
}
