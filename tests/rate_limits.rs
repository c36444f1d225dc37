//! End to end: per-app upload rates, and the lock-out of a client address
//! that keeps failing to authenticate.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::{Backends, Fixture, png_form};

#[tokio::test]
async fn uploads_past_the_app_rate_get_429_and_leave_nothing() {
    let f = Fixture::with_env(
        Backends::SqliteFiles,
        &[
            ("MEDIAVAULT__LIMITS__UPLOADS_PER_SECOND", "1"),
            ("MEDIAVAULT__LIMITS__UPLOAD_BURST", "2"),
        ],
    )
    .await;
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..3 {
        let response = f
            .client
            .post(f.media_url())
            .header("token", &f.token)
            .multipart(png_form(1_000))
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry_after: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            refused = Some((retry_after, response.json::<Value>().await.unwrap()));
        }
    }
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]
    );
    let (retry_after, body) = refused.unwrap();
    assert_eq!(retry_after, 1);
    assert_eq!(body["status"], "error");
    assert!(
        body["message"].as_str().unwrap().contains("Too many uploads"),
        "{body}"
    );
    f.assert_stored(2).await;

    // The allowance comes back at the sustained rate.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let (status, _) = f.post(png_form(10)).await;
    assert_eq!(status, StatusCode::OK);
}

/// A request to the app's info route from `client_ip` (via X-Forwarded-For)
/// with `token`.
async fn info_as(f: &Fixture, client_ip: &str, token: &str) -> reqwest::Response {
    f.client
        .request(Method::GET, f.media_url_with("/unknown/info"))
        .header("token", token)
        .header("x-forwarded-for", client_ip)
        .send()
        .await
        .unwrap()
}

/// A small upload to the app from `client_ip` (via X-Forwarded-For) with
/// `token`.
async fn upload_as(f: &Fixture, client_ip: &str, token: &str) -> reqwest::Response {
    f.client
        .post(f.media_url())
        .header("token", token)
        .header("x-forwarded-for", client_ip)
        .multipart(png_form(10))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn failed_authentications_lock_out_that_client_for_that_app() {
    let f = Fixture::with_env(
        Backends::SqliteFiles,
        &[
            ("MEDIAVAULT__LIMITS__AUTH_FAILURES_PER_HOUR", "3"),
            ("MEDIAVAULT__SERVER__TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
        ],
    )
    .await;
    let attacker = "203.0.113.7";
    for _ in 0..3 {
        let response = info_as(&f, attacker, "mv_guess").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // Now even the right token is refused for that client and that app...
    let response = info_as(&f, attacker, &f.token).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3500..=3600).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "error");
    // ...uploads included...
    let response = upload_as(&f, attacker, &f.token).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    // ...while another client with a valid token is served as before.
    assert_eq!(
        info_as(&f, "203.0.113.8", &f.token).await.status(),
        StatusCode::NOT_FOUND
    );
    f.assert_stored(0).await;
    // A token accepted since is no guess: a client sharing the locked-out
    // address (a NAT) is served with it, while guesses are still refused.
    assert_eq!(
        info_as(&f, attacker, &f.token).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(upload_as(&f, attacker, &f.token).await.status(), StatusCode::OK);
    assert_eq!(
        info_as(&f, attacker, "mv_guess").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    f.assert_stored(1).await;
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let f = Fixture::with_env(
        Backends::SqliteFiles,
        &[("MEDIAVAULT__LIMITS__AUTH_FAILURES_PER_HOUR", "2")],
    )
    .await;
    // Each failure claims another address; the peer (127.0.0.1) is what counts.
    for client in ["198.51.100.1", "198.51.100.2"] {
        assert_eq!(
            info_as(&f, client, "mv_guess").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        info_as(&f, "198.51.100.3", &f.token).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn failed_admin_authentications_lock_out_too() {
    let admin_token = "admin-0123456789abcdef0123456789abcdef";
    let f = Fixture::with_env(
        Backends::SqliteFiles,
        &[
            ("MEDIAVAULT__ADMIN__TOKEN", admin_token),
            ("MEDIAVAULT__LIMITS__AUTH_FAILURES_PER_HOUR", "2"),
        ],
    )
    .await;
    let list = |token: &'static str| {
        f.client
            .get(f.server.url("/admin/apps"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(list("wrong").await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(list("wrong").await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        list(admin_token).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // App traffic from the same address is a different scope.
    assert_eq!(
        f.request(Method::GET, "/unknown/info", &[]).await.status(),
        StatusCode::NOT_FOUND
    );
}

/// A request to the info route with `token`, carrying each of `lines` as
/// an `X-Forwarded-For` line of its own, in order.
async fn info_forwarded(f: &Fixture, lines: &[&str], token: &str) -> StatusCode {
    let mut request = f
        .client
        .get(f.media_url_with("/unknown/info"))
        .header("token", token);
    for line in lines {
        request = request.header("x-forwarded-for", *line);
    }
    request.send().await.unwrap().status()
}

/// Behind a proxy that appends an `X-Forwarded-For` line of its own (as
/// HAProxy does), with the client's address and port, the client's own
/// line names nobody: its failures count against the address the proxy
/// wrote, so it neither escapes the lock-out nor locks out whom it names.
#[tokio::test]
async fn a_forwarded_for_line_appended_by_the_proxy_is_the_one_believed() {
    let f = Fixture::with_env(
        Backends::SqliteFiles,
        &[
            ("MEDIAVAULT__LIMITS__AUTH_FAILURES_PER_HOUR", "3"),
            ("MEDIAVAULT__SERVER__TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
        ],
    )
    .await;
    for (named, seen) in [
        ("198.51.100.1", "203.0.113.7:40001"),
        ("198.51.100.2", "203.0.113.7:40002"),
        ("198.51.100.3", "203.0.113.7:40003"),
    ] {
        assert_eq!(
            info_forwarded(&f, &[named, seen], "mv_guess").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        info_forwarded(&f, &["198.51.100.9", "203.0.113.7:40004"], &f.token).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the client is locked out whatever its own line says"
    );
    assert_eq!(
        info_forwarded(&f, &["198.51.100.1"], &f.token).await,
        StatusCode::NOT_FOUND,
        "an address the client named is not"
    );
}
