//! Signed links at the router: asking for one (its reply, its ttl, its
//! address), and following one with no other credential, through the same
//! answers as an authenticated download (headers, ranges, HEAD, 304), and
//! the refusals in their order: 403 not a link of ours, 410 expired, 404 the
//! medium is gone.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Utc};
use mediavault_storage::{AppId, MediaId, NewApp, now_millis, token_id_of};

use super::*;
use crate::error::{AUTH_FAILED, INVALID_LINK, LINK_EXPIRED, LINK_REVOKED, LINKS_DISABLED, MEDIA_NOT_FOUND};
use crate::links::{Disposition, LinkKeys, LinkSigner};

const HOST: &str = "media.test";
/// `links.max_ttl` of these tests.
const MAX_TTL: Duration = Duration::from_secs(3600);

fn signer() -> Arc<LinkSigner> {
    Arc::new(LinkSigner::new(
        LinkKeys::parse(&LinkKeys::generate_line("l1")).unwrap(),
        MAX_TTL,
    ))
}

/// A service with links on, and its state changed as `configure` says.
async fn service_with(configure: impl FnOnce(&mut ApiState)) -> Service {
    Service::with(|state| {
        state.links = Some(signer());
        configure(state);
    })
    .await
}

async fn service() -> Service {
    service_with(|_| {}).await
}

/// A request for a link to `media` of the service's app, to `HOST`.
fn ask(s: &Service, media: &str) -> Call {
    Call::media(Method::POST, &s.app, &format!("/{media}/link")).header("host", HOST)
}

/// A link's path (`/l/…`), from a successful link reply.
fn link_path(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let url = reply.json()["url"].as_str().unwrap().to_owned();
    let at = url.find("/l/").unwrap_or_else(|| panic!("{url}"));
    url[at..].to_owned()
}

/// A link to `media` asked for with `call`'s body; its path.
async fn link(s: &Service, call: Call) -> String {
    link_path(&s.send(call).await)
}

/// How far from now a link reply's `expiresAt` is, in seconds, checking
/// that it is a whole second written as replies write times.
fn expires_in(reply: &Reply) -> i64 {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let text = reply.json()["expiresAt"].as_str().unwrap().to_owned();
    assert!(text.ends_with(".000Z"), "{text}");
    let at: DateTime<Utc> = text.parse().unwrap();
    (at.timestamp_millis() - now_millis()) / 1000
}

#[tokio::test]
async fn a_link_downloads_the_file_with_no_other_credential() {
    let s = service().await;
    let file = png_bytes(5000);
    let id = s.upload(&file).await;
    let reply = s.send(ask(&s, &id)).await;
    let path = link_path(&reply);
    let token = path.trim_start_matches("/l/");
    assert_eq!(
        reply.text(),
        format!(
            r#"{{"url":"http://{HOST}/l/{token}","expiresAt":{},"status":"success"}}"#,
            reply.json()["expiresAt"]
        )
    );
    assert!(
        (298..=300).contains(&expires_in(&reply)),
        "five minutes by default"
    );

    // The headers of the authenticated download, the bytes of the file; a
    // token or Authorization header (WhatsApp clients always send one) is
    // not read.
    let direct = s.send(Call::media(Method::GET, &s.app, &format!("/{id}"))).await;
    for extra in [
        None,
        Some(("authorization", "Bearer not-a-token")),
        Some(("token", "not-a-token")),
        Some(("authorization", s.app.token.as_str())),
    ] {
        let mut call = Call::get(&path);
        if let Some((name, value)) = extra {
            call = call.header(name, value);
        }
        let reply = s.send(call).await;
        assert_eq!(reply.status, StatusCode::OK, "{extra:?}: {}", reply.text());
        assert!(reply.body == file, "{extra:?}");
        for name in [
            "content-type",
            "content-length",
            "etag",
            "last-modified",
            "accept-ranges",
            "cache-control",
            "content-disposition",
        ] {
            assert_eq!(reply.header(name), direct.header(name), "{name}");
        }
    }
    assert_eq!(
        direct.header("content-disposition"),
        Some(
            "attachment; filename=\"holiday photo _1_.png\"; filename*=UTF-8''holiday%20photo%20%221%22.png"
        )
    );
}

#[tokio::test]
async fn ranges_head_and_the_cache_work_through_a_link() {
    let s = service().await;
    let file = png_bytes(5000);
    let id = s.upload(&file).await;
    let path = link(&s, ask(&s, &id)).await;
    let etag = format!("\"{}\"", sha256_hex(&file));

    let reply = s.send(Call::get(&path).header("range", "bytes=10-19")).await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(reply.header("content-range"), Some("bytes 10-19/5000"));
    assert_eq!(reply.header("content-length"), Some("10"));
    assert!(reply.body == file[10..20]);

    let reply = s.send(Call::new(Method::HEAD, &path)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-length"), Some("5000"));
    assert_eq!(reply.header("etag"), Some(etag.as_str()));
    assert!(reply.body.is_empty());

    let reply = s
        .send(Call::new(Method::HEAD, &path).header("range", "bytes=-5"))
        .await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(reply.header("content-range"), Some("bytes 4995-4999/5000"));

    for method in [Method::GET, Method::HEAD] {
        let reply = s
            .send(Call::new(method.clone(), &path).header("if-none-match", &etag))
            .await;
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED, "{method}");
        assert!(reply.body.is_empty(), "{method}");
    }

    let reply = s.send(Call::get(&path).header("range", "bytes=6000-")).await;
    reply.assert_error(
        "past the end",
        StatusCode::RANGE_NOT_SATISFIABLE,
        "Requested range not satisfiable",
    );
    assert_eq!(reply.header("content-range"), Some("bytes */5000"));
}

#[tokio::test]
async fn a_link_shows_the_file_inline_or_as_an_attachment() {
    let s = service().await;
    let id = s.upload(&png_bytes(100)).await;
    let disposition = |reply: Reply| reply.header("content-disposition").map(str::to_owned);
    let inline = link(
        &s,
        ask(&s, &id).body("application/json", br#"{"disposition":"inline"}"#.to_vec()),
    )
    .await;
    assert_eq!(
        disposition(s.send(Call::get(&inline)).await).as_deref(),
        Some("inline; filename=\"holiday photo _1_.png\"; filename*=UTF-8''holiday%20photo%20%221%22.png")
    );
    let attachment = link(
        &s,
        ask(&s, &id).body("application/json", br#"{"disposition":"attachment"}"#.to_vec()),
    )
    .await;
    assert_eq!(
        disposition(s.send(Call::get(&attachment)).await).as_deref(),
        Some(
            "attachment; filename=\"holiday photo _1_.png\"; filename*=UTF-8''holiday%20photo%20%221%22.png"
        )
    );

    // Stored without a filename: a bare `inline` or `attachment`.
    let app = s.vault.app_for_token(&s.app.token).await.unwrap().unwrap();
    let mut upload = s.vault.begin_upload(&app, None).await.unwrap();
    upload.write(b"plain text").await.unwrap();
    let unnamed = upload.finish("text/plain").await.unwrap().into_string();
    let inline = link(
        &s,
        ask(&s, &unnamed).body(
            "application/x-www-form-urlencoded",
            b"disposition=inline".to_vec(),
        ),
    )
    .await;
    assert_eq!(
        disposition(s.send(Call::get(&inline)).await).as_deref(),
        Some("inline")
    );
    let attachment = link(&s, ask(&s, &unnamed)).await;
    assert_eq!(
        disposition(s.send(Call::get(&attachment)).await).as_deref(),
        Some("attachment")
    );
}

/// A file is never taken for a page of this service's origin: an HTML file
/// shown inline by a link comes with `nosniff` and a sandboxing policy, as
/// every download does, and no copy is used again without asking (before:
/// served as `text/html` with neither, its scripts running on the origin,
/// and an unnamed attachment with no Content-Disposition at all).
#[tokio::test]
async fn a_file_is_never_run_as_a_page_of_the_service() {
    let s = service().await;
    let app = s
        .app(NewApp {
            name: "pages".into(),
            capi: true,
            allowed_types: Some(vec!["text/html".into()]),
            ..NewApp::default()
        })
        .await;
    let page = b"<html><script>alert(document.cookie)</script></html>";
    let form = [
        text("file_type", b"text/html"),
        part(
            b"Content-Disposition: form-data; name=\"file\"\r\nContent-Type: text/html",
            page,
        ),
        end(),
    ]
    .concat();
    let reply = s.send(Call::upload(&app).multipart(form)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let id = reply.json()["mediaId"].as_str().unwrap().to_owned();
    let inline = link(
        &s,
        Call::media(Method::POST, &app, &format!("/{id}/link"))
            .header("host", HOST)
            .body(
                "application/x-www-form-urlencoded",
                b"disposition=inline".to_vec(),
            ),
    )
    .await;
    let calls = [
        ("link", Call::get(&inline)),
        ("link, HEAD", Call::new(Method::HEAD, &inline)),
        ("link, a range", Call::get(&inline).header("range", "bytes=0-5")),
        ("token", Call::media(Method::GET, &app, &format!("/{id}"))),
    ];
    for (case, call) in calls {
        let reply = s.send(call).await;
        assert!(reply.status.is_success(), "{case}: {}", reply.status);
        assert_eq!(reply.header("content-type"), Some("text/html"), "{case}");
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"), "{case}");
        let policy = reply.header("content-security-policy").unwrap_or_default();
        assert!(
            policy.split(';').any(|d| d.trim() == "sandbox") && policy.contains("default-src 'none'"),
            "{case}: {policy}"
        );
        let cache = reply.header("cache-control").unwrap_or_default();
        assert!(
            cache.contains("private") && cache.contains("no-cache"),
            "{case}: {cache}"
        );
    }
}

/// A link lives no longer than the API token it was made with: revoking
/// the token ends its links on the spot (403, GET and HEAD alike), while
/// links made with another live token of the app still work (before, a
/// link outlived its token's revocation until its own expiry).
#[tokio::test]
async fn revoking_a_token_ends_the_links_made_with_it() {
    let s = service().await;
    let id = s.upload(&png_bytes(100)).await;
    let app_id = AppId::new(&s.app.id);
    let second = s.vault.issue_token(&app_id, None).await.unwrap();
    let made_with_first = link(&s, ask(&s, &id)).await;
    let made_with_second = link(&s, ask(&s, &id).without("token").token(&second.token)).await;
    assert_eq!(s.send(Call::get(&made_with_first)).await.status, StatusCode::OK);

    s.vault
        .revoke_token(&app_id, &token_id_of(&s.app.token))
        .await
        .unwrap();
    s.send(Call::get(&made_with_first))
        .await
        .assert_error("revoked", StatusCode::FORBIDDEN, LINK_REVOKED);
    let head = s.send(Call::new(Method::HEAD, &made_with_first)).await;
    assert_eq!(head.status, StatusCode::FORBIDDEN);
    let reply = s.send(Call::get(&made_with_second)).await;
    assert_eq!(reply.status, StatusCode::OK, "another token's link lives on");
    assert!(reply.body == png_bytes(100));
}

/// Each refusal of a link, with its body: 403 for anything not signed by a
/// configured key, 410 for a genuine link past its time, 404 once the
/// medium is not there; HEAD answers the same statuses.
#[tokio::test]
async fn refused_links_have_their_bodies() {
    let s = service().await;
    let id = s.upload(&png_bytes(100)).await;
    let path = link(&s, ask(&s, &id)).await;
    let signer = s.state.links.clone().unwrap();
    let app = AppId::new(&s.app.id);
    let later = now_millis() + 60_000;
    let mut flipped = path.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let stranger = LinkSigner::new(LinkKeys::parse(&LinkKeys::generate_line("l1")).unwrap(), MAX_TTL);
    let token = |signer: &LinkSigner, media: &str, expires_at| {
        format!(
            "/l/{}",
            signer.token(
                &app,
                &MediaId::new(media),
                &token_id_of(&s.app.token),
                expires_at,
                Disposition::Inline,
            )
        )
    };
    let cases = [
        (
            "not a token",
            "/l/not-a-token".to_owned(),
            StatusCode::FORBIDDEN,
            INVALID_LINK,
        ),
        (
            "an altered tag",
            String::from_utf8(flipped).unwrap(),
            StatusCode::FORBIDDEN,
            INVALID_LINK,
        ),
        (
            "another service's key",
            token(&stranger, &id, later),
            StatusCode::FORBIDDEN,
            INVALID_LINK,
        ),
        ("padded", format!("{path}="), StatusCode::FORBIDDEN, INVALID_LINK),
        (
            "expired",
            token(&signer, &id, now_millis() - 1000),
            StatusCode::GONE,
            LINK_EXPIRED,
        ),
        (
            "an unknown medium",
            token(&signer, "no-such-media", later),
            StatusCode::NOT_FOUND,
            MEDIA_NOT_FOUND,
        ),
    ];
    for (case, path, status, message) in cases {
        let reply = s.send(Call::get(&path).header("token", &s.app.token)).await;
        reply.assert_error(case, status, message);
        assert_eq!(
            s.send(Call::new(Method::HEAD, &path)).await.status,
            status,
            "HEAD: {case}"
        );
    }
    assert_eq!(
        s.send(Call::get(&path)).await.status,
        StatusCode::OK,
        "the link itself works"
    );
}

#[tokio::test]
async fn deleting_the_medium_ends_every_link_to_it() {
    let s = service().await;
    let id = s.upload(&png_bytes(100)).await;
    let links = [
        link(&s, ask(&s, &id)).await,
        link(
            &s,
            ask(&s, &id).body(
                "application/json",
                br#"{"ttl":"1h","disposition":"inline"}"#.to_vec(),
            ),
        )
        .await,
    ];
    for path in &links {
        assert_eq!(s.send(Call::get(path)).await.status, StatusCode::OK);
    }
    let deleted = s
        .send(Call::media(Method::DELETE, &s.app, &format!("/{id}")))
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    for path in &links {
        s.send(Call::get(path))
            .await
            .assert_error("deleted", StatusCode::NOT_FOUND, MEDIA_NOT_FOUND);
        assert_eq!(
            s.send(Call::new(Method::HEAD, path)).await.status,
            StatusCode::NOT_FOUND
        );
    }
    s.send(ask(&s, &id)).await.assert_error(
        "a link to deleted media",
        StatusCode::NOT_FOUND,
        MEDIA_NOT_FOUND,
    );
}

#[tokio::test]
async fn the_ttl_comes_from_json_a_form_or_the_query_and_is_bounded() {
    let s = service().await;
    let id = s.upload(&png_bytes(100)).await;
    let json = |body: &str| ask(&s, &id).body("application/json", body.as_bytes().to_vec());
    let accepted = [
        ("JSON seconds", json(r#"{"ttl": 600}"#), 600),
        ("JSON duration", json(r#"{"ttl": "10m"}"#), 600),
        (
            "JSON labelled as a form",
            ask(&s, &id).body("application/x-www-form-urlencoded", br#"{"ttl":120}"#.to_vec()),
            120,
        ),
        (
            "form",
            ask(&s, &id).body(
                "application/x-www-form-urlencoded",
                b"ttl=2m&disposition=inline".to_vec(),
            ),
            120,
        ),
        (
            "query",
            Call::media(Method::POST, &s.app, &format!("/{id}/link?ttl=90")).header("host", HOST),
            90,
        ),
        (
            "the body over the query",
            Call::media(Method::POST, &s.app, &format!("/{id}/link?ttl=90"))
                .header("host", HOST)
                .body("application/json", br#"{"ttl":"30s"}"#.to_vec()),
            30,
        ),
        ("exactly links.max_ttl", json(r#"{"ttl": "1h"}"#), 3600),
        ("an empty JSON object", json("{}"), 300),
        ("a blank body", json(" \n"), 300),
    ];
    for (case, call, seconds) in accepted {
        let reply = s.send(call).await;
        let left = expires_in(&reply);
        assert!((seconds - 2..=seconds).contains(&left), "{case}: {left} s");
    }

    let refused = [
        (
            "over links.max_ttl",
            json(r#"{"ttl": 3601}"#),
            "Param ttl must be at most 1h",
        ),
        (
            "over links.max_ttl, as text",
            json(r#"{"ttl": "2h"}"#),
            "Param ttl must be at most 1h",
        ),
        ("zero", json(r#"{"ttl": 0}"#), "Param ttl must be at least 1s"),
        (
            "under a second",
            json(r#"{"ttl": "500ms"}"#),
            "Param ttl must be at least 1s",
        ),
        (
            "not a duration",
            json(r#"{"ttl": "soon"}"#),
            "Param ttl must be a number of seconds or a duration such as \"10m\"",
        ),
    ];
    for (case, call, message) in refused {
        s.send(call)
            .await
            .assert_error(case, StatusCode::BAD_REQUEST, message);
    }
    for (case, call, hint) in [
        ("negative", json(r#"{"ttl": -5}"#), "ttl"),
        ("a fraction", json(r#"{"ttl": 1.5}"#), "ttl"),
        (
            "an unknown disposition",
            json(r#"{"disposition": "download"}"#),
            "inline",
        ),
        ("an unknown field", json(r#"{"tll": 60}"#), "tll"),
        ("not JSON", json("{ttl"), ""),
        (
            "an unknown query parameter",
            Call::media(Method::POST, &s.app, &format!("/{id}/link?expires=9")).header("host", HOST),
            "expires",
        ),
        (
            "a body too large",
            ask(&s, &id).body("application/json", vec![b' '; 5000]),
            "4096",
        ),
    ] {
        s.send(call)
            .await
            .assert_error_naming(case, StatusCode::BAD_REQUEST, "", &[hint]);
    }
}

/// However long a link is asked for, it ends when its medium does.
#[tokio::test]
async fn a_link_never_outlives_its_medium() {
    let s = service().await;
    let short = s
        .app(NewApp {
            name: "short".into(),
            capi: true,
            retention: Some(Duration::from_secs(60)),
            ..NewApp::default()
        })
        .await;
    let reply = s.send(Call::upload(&short).multipart(valid_form())).await;
    let id = reply.json()["mediaId"].as_str().unwrap().to_owned();
    let info = s
        .send(Call::media(Method::GET, &short, &format!("/{id}/info")))
        .await;
    let medium_expires: DateTime<Utc> = info.json()["expiresAt"].as_str().unwrap().parse().unwrap();
    let call = Call::media(Method::POST, &short, &format!("/{id}/link"))
        .header("host", HOST)
        .body("application/json", br#"{"ttl":"1h"}"#.to_vec());
    let reply = s.send(call).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let expected = medium_expires.timestamp() * 1000;
    assert_eq!(
        reply.json()["expiresAt"],
        crate::reply::rfc3339(expected),
        "the medium's expiry, rounded down to the second"
    );
    assert!(expires_in(&reply) < 61);
}

#[tokio::test]
async fn a_link_is_asked_for_as_a_download_is_authenticated() {
    let s = service().await;
    let id = s.upload(&png_bytes(100)).await;
    let other = s.capi_app().await;
    s.send(ask(&s, &id).without("token")).await.assert_error(
        "no token",
        StatusCode::UNAUTHORIZED,
        AUTH_FAILED,
    );
    s.send(ask(&s, &id).without("token").token(&other.token))
        .await
        .assert_error("another app's token", StatusCode::UNAUTHORIZED, AUTH_FAILED);
    let bearer = ask(&s, &id)
        .without("token")
        .header("authorization", format!("Bearer {}", s.app.token));
    assert_eq!(s.send(bearer).await.status, StatusCode::OK);
    let call = Call::media(Method::POST, &other, &format!("/{id}/link")).header("host", HOST);
    s.send(call)
        .await
        .assert_error("another app's medium", StatusCode::NOT_FOUND, MEDIA_NOT_FOUND);
    s.send(ask(&s, "no-such-media"))
        .await
        .assert_error("unknown", StatusCode::NOT_FOUND, MEDIA_NOT_FOUND);
}

#[tokio::test]
async fn without_link_keys_there_are_no_links() {
    let s = Service::new().await;
    let id = s.upload(&png_bytes(100)).await;
    s.send(ask(&s, &id))
        .await
        .assert_error("asking", StatusCode::NOT_FOUND, LINKS_DISABLED);
    let token = signer().token(
        &AppId::new(&s.app.id),
        &MediaId::new(&id),
        &token_id_of(&s.app.token),
        now_millis() + 60_000,
        Disposition::Inline,
    );
    s.send(Call::get(format!("/l/{token}"))).await.assert_error(
        "following",
        StatusCode::NOT_FOUND,
        LINKS_DISABLED,
    );
}

/// Where links point: `links.public_base_url`; else the request's own
/// address, from its Host, or from a trusted proxy's X-Forwarded-Host and
/// -Proto (anyone else's are ignored).
#[tokio::test]
async fn links_start_with_the_public_address() {
    let proxy: IpAddr = "10.0.0.7".parse().unwrap();
    let s = service_with(|state| {
        state.limits = Arc::new(Limits::new(LimitSettings {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            ..LimitSettings::default()
        }));
    })
    .await;
    let id = s.upload(&png_bytes(100)).await;
    let forwarded = |call: Call| {
        call.header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "Public.Example.com, inner.local")
    };
    let url = |reply: Reply| {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()["url"].as_str().unwrap().to_owned()
    };
    let cases = [
        (
            "the Host",
            ask(&s, &id).header("x-forwarded-host", "evil.test"),
            "http://media.test/l/",
        ),
        (
            "a port",
            ask(&s, &id).without("host").header("host", "media.test:8080"),
            "http://media.test:8080/l/",
        ),
        (
            "a client's forwarding",
            forwarded(ask(&s, &id)),
            "http://media.test/l/",
        ),
        (
            "a trusted proxy's forwarding",
            forwarded(ask(&s, &id)).from(proxy),
            "https://public.example.com/l/",
        ),
    ];
    for (case, call, start) in cases {
        let url = url(s.send(call).await);
        assert!(url.starts_with(start), "{case}: {url}");
    }
    s.send(ask(&s, &id).without("host")).await.assert_error(
        "no Host",
        StatusCode::BAD_REQUEST,
        "Cannot tell this service's address for the link: send a Host header, or configure links.public_base_url",
    );
    s.send(ask(&s, &id).without("host").header("host", "a/b@c"))
        .await
        .assert_error_naming(
            "a Host that is not a host",
            StatusCode::BAD_REQUEST,
            "Cannot tell",
            &[],
        );

    let s = service_with(|state| state.public_base_url = Some("https://cdn.example.com/mv".into())).await;
    let id = s.upload(&png_bytes(100)).await;
    let url = url(s.send(ask(&s, &id).without("host")).await);
    assert!(url.starts_with("https://cdn.example.com/mv/l/"), "{url}");
    let path = &url["https://cdn.example.com/mv".len()..];
    assert_eq!(s.send(Call::get(path)).await.status, StatusCode::OK);
}
