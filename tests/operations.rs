//! End to end: what operators rely on — metrics, request ids in logs, probes,
//! the upload concurrency cap, the idle cut-off and graceful shutdown.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Backends, Fixture, Gate, Stores, app_with_retention, png_bytes, png_form};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The head of a multipart upload whose file part is still open.
fn upload_head(f: &Fixture, content_length: usize) -> String {
    let addr = f.server.base_url.trim_start_matches("http://");
    format!(
        "POST /partner/app/{}/media HTTP/1.1\r\nHost: {addr}\r\ntoken: {}\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {content_length}\r\n\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"file_type\"\r\n\r\nimage/png\r\n--XyZ\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n",
        f.app_id, f.token
    )
}

const TAIL: &str = "\r\n--XyZ--\r\n";

async fn connect(f: &Fixture) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(f.server.base_url.trim_start_matches("http://"))
        .await
        .unwrap()
}

#[tokio::test]
async fn metrics_count_requests_bytes_durations_and_reaping() {
    let stores = Stores::new(Backends::SqliteFiles).await;
    let (app_id, token) = app_with_retention(&stores, "1s");
    let env = [("MEDIAVAULT__REAPER__SCHEDULE", "* * * * * *")];
    let f = Fixture::serve(stores, app_id, token, &env);
    let id = f.upload(&png_bytes(10_000)).await;
    assert_eq!(f.download(&id).await.bytes().await.unwrap().len(), 10_000);
    // A HEAD of a route that answers it with its GET handler: the body the
    // router drops is not a request cut short.
    let head = f.client.head(f.server.url("/livez")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = metrics(&f).await;
        if text.contains("mediavault_reaped_total{reason=\"expired\"} 1") {
            break text;
        }
        assert!(Instant::now() < deadline, "no reaping counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} missing:\n{text}"))
    };
    assert_eq!(value("mediavault_upload_bytes_total"), 10_000.0);
    assert_eq!(value("mediavault_download_bytes_total"), 10_000.0);
    assert_eq!(value("mediavault_upload_duration_seconds_count"), 1.0);
    assert!(
        text.contains("mediavault_upload_duration_seconds_bucket"),
        "histograms have buckets"
    );
    assert!(text.contains("mediavault_reaper_pass_duration_seconds_count"));
    assert!(
        text.contains("mediavault_media_stored "),
        "the stored-media gauge is set by reaper passes"
    );
    let uploads = requests_total(
        &text,
        &["route=\"/partner/app/{app_id}/media\"", "status=\"200\""],
    );
    assert!(uploads.ends_with(" 1"), "{uploads}");
    let head = requests_total(&text, &["route=\"/livez\"", "method=\"HEAD\""]);
    assert!(
        head.contains("outcome=\"complete\"") && head.ends_with(" 1"),
        "{head}"
    );
}

/// With `metrics.token` set, `/metrics` answers only requests bearing it:
/// 401 in the error shape without it or with another, each counted towards
/// the address's lock-out from `/metrics` as a failed authentication.
#[tokio::test]
async fn a_metrics_token_guards_the_metrics() {
    let token = "a-metrics-token-of-at-least-32-characters";
    let f = Fixture::with_env(
        Backends::SqliteFiles,
        &[
            ("MEDIAVAULT__METRICS__TOKEN", token),
            ("MEDIAVAULT__LIMITS__AUTH_FAILURES_PER_HOUR", "3"),
        ],
    )
    .await;
    let scrape = |bearer: Option<&str>| {
        let request = f.client.get(f.server.url("/metrics"));
        let request = match bearer {
            Some(bearer) => request.bearer_auth(bearer),
            None => request,
        };
        async move { request.send().await.unwrap() }
    };
    let refused = scrape(None).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.json::<Value>().await.unwrap(),
        serde_json::json!({"message": "Authentication Failed", "status": "error"})
    );
    assert_eq!(scrape(Some("another-token")).await.status(), 401);
    let scraped = scrape(Some(token)).await;
    assert_eq!(scraped.status(), 200);
    assert!(
        scraped
            .text()
            .await
            .unwrap()
            .contains("mediavault_http_requests_total")
    );
    assert_eq!(scrape(Some("a third")).await.status(), 401);
    assert_eq!(scrape(Some(token)).await.status(), 429, "locked out of /metrics");
    f.upload(&png_bytes(100)).await;
}

/// The text of `/metrics`.
async fn metrics(f: &Fixture) -> String {
    let response = f.client.get(f.server.url("/metrics")).send().await.unwrap();
    response.text().await.unwrap()
}

/// The `mediavault_http_requests_total` line of `text` with all of `labels`.
fn requests_total<'t>(text: &'t str, labels: &[&str]) -> &'t str {
    text.lines()
        .find(|l| {
            l.starts_with("mediavault_http_requests_total") && labels.iter().all(|label| l.contains(label))
        })
        .unwrap_or_else(|| panic!("no request series with {labels:?}:\n{text}"))
}

/// Every request gets an id (or keeps the caller's), returned in
/// `x-request-id` and carried by every log line of the request; no token
/// reaches the log.
#[tokio::test]
async fn request_ids_reach_the_response_and_the_log_and_tokens_never_do() {
    let f = Fixture::new(Backends::SqliteFiles).await;
    let upload = f
        .client
        .post(f.media_url())
        .header("token", &f.token)
        .multipart(png_form(100))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 200);
    let upload_id = upload.headers()["x-request-id"].to_str().unwrap().to_owned();
    let media_id = upload.json::<Value>().await.unwrap()["mediaId"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = f
        .client
        .get(f.media_url_with("/no-such-media"))
        .header("token", &f.token)
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    let made = f.client.get(f.server.url("/livez")).send().await.unwrap();
    let made_id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made_id.len(), 36, "a UUID when none was sent");

    let log = f.server.log();
    // The upload's lines: the handler's, which names the media, and the
    // response line. Each carries the upload's id.
    let uploaded: Vec<&str> = log.lines().filter(|l| l.contains("media uploaded")).collect();
    assert_eq!(uploaded.len(), 1, "{log}");
    let of_the_media: Vec<&str> = log.lines().filter(|l| l.contains(&media_id)).collect();
    assert!(!of_the_media.is_empty(), "{log}");
    for line in uploaded.iter().chain(&of_the_media) {
        assert!(line.contains(&format!("request_id={upload_id}")), "{line}");
    }
    // One response line per request, each with that request's id.
    let mut answered: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("finished processing request"))
        .map(|l| {
            l.split("request_id=")
                .nth(1)
                .and_then(|rest| rest.split(['}', ' ']).next())
                .unwrap_or_else(|| panic!("a response line without a request id: {l}"))
        })
        .collect();
    answered.sort_unstable();
    let mut sent = [upload_id.as_str(), "trace-me-42", made_id.as_str()];
    sent.sort_unstable();
    assert_eq!(answered, sent, "{log}");
    assert!(!log.contains(&f.token), "a token was logged");
}

/// A caller's request id that is long, or holds anything but letters,
/// digits and `-._:`, is replaced by a fresh one: it is not echoed, and
/// cannot forge or flood log lines.
#[tokio::test]
async fn unacceptable_request_ids_are_replaced() {
    let f = Fixture::new(Backends::SqliteFiles).await;
    let forged = "x} ERROR mediavault_api::error: stored media failed verification why=\"forged\"";
    let long = "L".repeat(30_000);
    let obs_text = reqwest::header::HeaderValue::from_bytes(b"id\tforged\xff").unwrap();
    for id in [
        reqwest::header::HeaderValue::from_str(forged).unwrap(),
        reqwest::header::HeaderValue::from_str(&long).unwrap(),
        reqwest::header::HeaderValue::from_str(&"a".repeat(129)).unwrap(),
        obs_text,
    ] {
        let response = f
            .client
            .get(f.server.url("/livez"))
            .header("x-request-id", id.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let echoed = &response.headers()["x-request-id"];
        assert_ne!(echoed, &id);
        assert_eq!(echoed.len(), 36, "a fresh UUID instead");
    }
    let log = f.server.log();
    assert!(!log.contains("stored media failed verification"), "{log}");
    assert!(!log.contains("LLLLLLLL"), "the long id was logged");
    assert!(!log.contains(&"a".repeat(129)), "the long id was logged");
    assert!(!log.contains("forged"), "{log}");
}

/// Methods a client invents are named `other` in metrics and logs: however
/// many and however long, they add no metric series and no log text.
#[tokio::test]
async fn invented_methods_add_no_metric_series() {
    let f = Fixture::new(Backends::SqliteFiles).await;
    let urls = [f.server.url("/livez"), f.media_url_with("/some-media")];
    let invent = |n: usize| {
        let name = format!("INVENTED{n}X{}", "Q".repeat(4096));
        reqwest::Method::from_bytes(name.as_bytes()).unwrap()
    };
    // Every series the run will have exists after one round.
    for url in &urls {
        let response = f.client.request(invent(0), url).send().await.unwrap();
        assert_eq!(response.status(), 405);
    }
    metrics(&f).await;
    let before = metrics(&f).await;
    for n in 1..=100 {
        for url in &urls {
            let response = f.client.request(invent(n), url).send().await.unwrap();
            assert_eq!(response.status(), 405);
        }
    }
    let after = metrics(&f).await;
    assert!(!after.contains("INVENTED"), "an invented method became a label");
    let other = requests_total(&after, &["route=\"/livez\"", "method=\"other\""]);
    assert!(other.ends_with(" 101"), "{other}");
    assert!(
        after.len() < before.len() + 2048,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(
        !f.server.log().contains("INVENTED"),
        "an invented method was logged"
    );
}

/// `/readyz` once the last probe's answer, which stands for a second, is
/// over: the stores are asked again.
async fn probe_anew(f: &Fixture) -> reqwest::Response {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.client.get(f.server.url("/readyz")).send().await.unwrap()
}

#[tokio::test]
async fn readiness_names_the_store_that_does_not_answer() {
    let mut stores = Stores::new(Backends::SqliteS3).await;
    let garage = stores.blobs.endpoint.clone().unwrap();
    let gate = Gate::new(garage.trim_start_matches("http://"), true).await;
    stores.blobs.endpoint = Some(format!("http://{}", gate.addr));
    let (app_id, token) = app_with_retention(&stores, "30d");
    let mut f = Fixture::serve(stores, app_id, token, &[("MEDIAVAULT__BLOBS__TIMEOUT", "2s")]);
    let ready = f.client.get(f.server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    gate.close();
    let live = f.client.get(f.server.url("/livez")).send().await.unwrap();
    assert_eq!(live.status(), 200, "liveness asks no dependency");
    let ready = probe_anew(&f).await;
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert_eq!(body["checks"]["blobs"], "unavailable");
    assert_eq!(body["checks"]["metadata"], "ok");
    gate.open();
    // Clean-up runs after this runtime stops serving the gate: go direct.
    f.stores.blobs.endpoint = Some(garage);
}

/// A bucket that does not exist (a typo, or deleted) fails every upload and
/// download, so the probe must fail too; S3 answers a HEAD of any key in it
/// with the same bare 404 as a missing key in a bucket that is there.
#[tokio::test]
async fn readiness_fails_for_a_bucket_that_does_not_exist() {
    let mut stores = Stores::new(Backends::SqliteS3).await;
    let (app_id, token) = app_with_retention(&stores, "30d");
    let there = stores.blobs.url.clone();
    let missing = format!("s3://no-such-bucket-{}/media", uuid::Uuid::new_v4().simple());
    stores.blobs.url = missing;
    let mut f = Fixture::serve(stores, app_id, token, &[]);
    let ready = f.client.get(f.server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["blobs"], "unavailable");
    assert_eq!(body["checks"]["metadata"], "ok");
    f.stores.blobs.url = there;
}

/// A local store's directory that is gone (deleted, or a volume that is
/// not mounted) fails the probe; the empty one the service starts with
/// does not.
#[tokio::test]
async fn readiness_fails_without_the_blob_directory() {
    let stores = Stores::new(Backends::SqliteFiles).await;
    let (app_id, token) = app_with_retention(&stores, "30d");
    let f = Fixture::serve(stores, app_id, token, &[]);
    let ready = f.client.get(f.server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "an empty blob directory is ready");
    let root = std::path::PathBuf::from(&f.stores.blobs.url);
    let aside = root.with_extension("aside");
    std::fs::rename(&root, &aside).unwrap();
    let ready = probe_anew(&f).await;
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["blobs"], "unavailable");
    assert_eq!(body["checks"]["metadata"], "ok");
    std::fs::rename(&aside, &root).unwrap();
    let ready = probe_anew(&f).await;
    assert_eq!(ready.status(), 200);
}

/// A connection from `source` (a loopback address): the stream once it
/// has answered a request (kept alive), or the refusal the server sent
/// unasked before closing it.
async fn connect_from(f: &Fixture, source: &str) -> Result<tokio::net::TcpStream, String> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let server = f.server.base_url.trim_start_matches("http://").parse().unwrap();
    let mut stream = socket.connect(server).await.unwrap();
    let mut refusal = Vec::new();
    let unasked = tokio::time::timeout(Duration::from_millis(300), stream.read_to_end(&mut refusal)).await;
    if unasked.is_ok() {
        return Err(String::from_utf8_lossy(&refusal).into_owned());
    }
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 1024];
    let n = stream.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    Ok(stream)
}

/// One client holding connections open leaves the others theirs: past its
/// share its new connections are answered 429 and closed, while another
/// client's requests go on; past the total, anyone's are answered 503. (Left
/// unbounded, one client's connections took every descriptor the process
/// had, and everyone else's connections failed.)
#[tokio::test]
async fn one_client_holding_connections_leaves_the_others_theirs() {
    let f = Fixture::with_env(
        Backends::SqliteFiles,
        &[
            ("MEDIAVAULT__SERVER__MAX_CONNECTIONS", "5"),
            ("MEDIAVAULT__SERVER__MAX_CONNECTIONS_PER_CLIENT", "3"),
        ],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(&f, "127.0.0.2").await.expect("within its share"));
    }
    let refusal = connect_from(&f, "127.0.0.2").await.expect_err("past its share");
    assert!(refusal.starts_with("HTTP/1.1 429"), "{refusal}");
    assert!(
        refusal.ends_with(r#"{"status":"error","message":"Too many connections from this client"}"#),
        "{refusal}"
    );
    let other = f.client.get(f.server.url("/livez")).send().await.unwrap();
    assert_eq!(other.status(), 200, "another client goes on");
    // 127.0.0.1 holds a connection or more now; the total has room for at
    // most one more, whoever opens it.
    let mut third = Vec::new();
    let refusal = loop {
        match connect_from(&f, "127.0.0.3").await {
            Ok(stream) => third.push(stream),
            Err(refusal) => break refusal,
        }
        assert!(third.len() <= 1, "past the total");
    };
    assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal}");
    // Closed, a connection stops counting.
    drop(held);
    drop(third);
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(refusal) = connect_from(&f, "127.0.0.2").await {
        assert!(Instant::now() < deadline, "still refused: {refusal}");
    }
    let metrics = metrics(&f).await;
    for reason in ["client", "total"] {
        let line = format!("mediavault_connections_refused_total{{reason=\"{reason}\"}}");
        assert!(metrics.contains(&line), "{line}:\n{metrics}");
    }
}

#[tokio::test]
async fn uploads_past_the_cap_get_503_with_retry_after() {
    let f = Fixture::with_env(
        Backends::SqliteFiles,
        &[("MEDIAVAULT__SERVER__MAX_CONCURRENT_UPLOADS", "1")],
    )
    .await;
    let mut slow = connect(&f).await;
    slow.write_all(upload_head(&f, 10_000_000).as_bytes())
        .await
        .unwrap();
    slow.write_all(&png_bytes(100_000)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let form = png_form(100);
    let refused = f
        .client
        .post(f.media_url())
        .header("token", &f.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.json::<Value>().await.unwrap()["status"], "error");
    drop(slow);
    // The slot comes back once the first upload has gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = f.post(png_form(100)).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A body that stops arriving is cut after `server.idle_timeout`, and leaves
/// nothing behind.
#[tokio::test]
async fn a_trickling_body_is_cut_after_the_idle_timeout() {
    let f = Fixture::with_env(
        Backends::SqliteFiles,
        &[("MEDIAVAULT__SERVER__IDLE_TIMEOUT", "1s")],
    )
    .await;
    let mut socket = connect(&f).await;
    socket
        .write_all(upload_head(&f, 10_000_000).as_bytes())
        .await
        .unwrap();
    socket.write_all(&png_bytes(1000)).await.unwrap();
    let started = Instant::now();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut reply)).await;
    assert!(read.is_ok(), "the server never cut the idle upload");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("no data received"), "{reply}");
    f.assert_stored(0).await;
}

/// The small bodies read whole (an admin change, a link request) are cut
/// after `server.idle_timeout` too, with a 408 in the service's error shape:
/// a client holding a token cannot keep a request open by never sending
/// the body it announced.
#[tokio::test]
async fn a_small_body_that_never_arrives_is_cut_after_the_idle_timeout() {
    let admin = "admin-0123456789abcdef0123456789abcdef";
    let links = mediavault_api::LinkKeys::generate_line("l1");
    let env = [
        ("MEDIAVAULT__SERVER__IDLE_TIMEOUT", "1s"),
        ("MEDIAVAULT__ADMIN__TOKEN", admin),
        ("MEDIAVAULT__LINKS__KEYS", links.as_str()),
    ];
    let f = Fixture::with_env(Backends::SqliteFiles, &env).await;
    let id = f.upload(&png_bytes(1000)).await;
    let addr = f.server.base_url.trim_start_matches("http://");
    let heads = [
        format!("POST /admin/apps HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin}\r\n"),
        format!(
            "POST /admin/apps/{}/tokens HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin}\r\n",
            f.app_id
        ),
        format!(
            "POST /partner/app/{}/media/{id}/link HTTP/1.1\r\nHost: {addr}\r\ntoken: {}\r\n",
            f.app_id, f.token
        ),
    ];
    for head in heads {
        let mut socket = connect(&f).await;
        let head = format!("{head}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{");
        socket.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let reply = reply_within(&mut socket, 10).await;
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(5), "{head}: cut after {elapsed:?}");
        assert!(reply.starts_with("HTTP/1.1 408"), "{head}: {reply}");
        assert!(reply.contains(r#""status":"error""#), "{head}: {reply}");
        assert!(reply.contains("did not arrive within 1s"), "{head}: {reply}");
    }
    let apps = f
        .client
        .get(f.server.url("/admin/apps"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    let apps: Value = apps.json().await.unwrap();
    assert_eq!(
        apps["apps"].as_array().map(Vec::len),
        Some(1),
        "no app made: {apps}"
    );
}

fn sigterm(f: &Fixture) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &f.server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Everything the server sends until it closes, within `secs` seconds.
async fn reply_within(socket: &mut tokio::net::TcpStream, secs: u64) -> String {
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(secs), socket.read_to_end(&mut reply))
        .await
        .expect("the server closes the connection in time")
        .unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

/// A request head that stops half way is cut after the idle timeout, like
/// a silent body: it holds no connection for ever.
#[tokio::test]
async fn a_stalled_request_head_is_cut_after_the_idle_timeout() {
    let f = Fixture::with_env(
        Backends::SqliteFiles,
        &[("MEDIAVAULT__SERVER__IDLE_TIMEOUT", "1s")],
    )
    .await;
    let mut socket = connect(&f).await;
    socket
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut reply)).await;
    assert!(closed.is_ok(), "the connection is still open after 10 s");
    assert!(
        !String::from_utf8_lossy(&reply).contains("200 OK"),
        "no half request is served"
    );
    // The server is unharmed.
    let live = f.client.get(f.server.url("/livez")).send().await.unwrap();
    assert_eq!(live.status(), reqwest::StatusCode::OK);
}

/// Waits until the server has begun storing an upload (its intent row is
/// written), so that a signal sent next finds the request in flight rather
/// than an idle connection whose head is still unread.
async fn until_an_upload_is_in_flight(f: &Fixture) {
    for _ in 0..200 {
        if !f.inventory().await.0.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no upload started within 5 s");
}

/// SIGTERM lets an upload in flight finish, then the process exits 0.
#[tokio::test]
async fn sigterm_drains_in_flight_uploads_then_exits_cleanly() {
    let mut f = Fixture::new(Backends::SqliteFiles).await;
    let file = png_bytes(2_000_000);
    let head = upload_head(&f, 0);
    let body_len = head
        .split("\r\n\r\n")
        .skip(1)
        .collect::<Vec<_>>()
        .join("\r\n\r\n")
        .len()
        + file.len()
        + TAIL.len();
    let head = upload_head(&f, body_len);
    let mut socket = connect(&f).await;
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&file[..1_000_000]).await.unwrap();
    until_an_upload_is_in_flight(&f).await;

    sigterm(&f);
    tokio::time::sleep(Duration::from_millis(500)).await;
    socket.write_all(&file[1_000_000..]).await.unwrap();
    socket.write_all(TAIL.as_bytes()).await.unwrap();
    let reply = reply_within(&mut socket, 10).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"mediaId\""), "{reply}");
    let status = f.server.wait();
    assert!(status.success(), "exit status {status:?}");
    f.assert_stored(1).await;
}

/// A download still running when the drain time is over (its client reads
/// nothing more) is cut, and the process exits 0 at once, where it waited
/// out the 10 s given to interrupted uploads, past a compose or Kubernetes
/// grace period sized to the drain time.
#[tokio::test]
async fn downloads_outliving_the_drain_time_are_cut_and_the_process_exits() {
    let mut f = Fixture::with_env(
        Backends::SqliteFiles,
        &[("MEDIAVAULT__SERVER__SHUTDOWN_TIMEOUT", "1s")],
    )
    .await;
    // Far more than the socket buffers on either side take.
    let id = f.upload(&png_bytes(48 * 1024 * 1024)).await;
    let addr = f.server.base_url.trim_start_matches("http://").to_owned();
    let mut socket = connect(&f).await;
    socket
        .write_all(
            format!(
                "GET /partner/app/{}/media/{id} HTTP/1.1\r\nHost: {addr}\r\ntoken: {}\r\n\r\n",
                f.app_id, f.token
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = [0u8; 4096];
    let read = socket.read(&mut head).await.unwrap();
    assert!(
        head[..read].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head[..read])
    );

    let signalled = std::time::Instant::now();
    sigterm(&f);
    let status = f.server.wait();
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(6), "exited {took:?} after SIGTERM");
    drop(socket);
}

/// An upload still running when the drain time is over is undone and
/// answered 503; the process exits 0 and leaves nothing behind.
#[tokio::test]
async fn uploads_outliving_the_drain_time_are_undone_before_exit() {
    let mut f = Fixture::with_env(
        Backends::SqliteFiles,
        &[("MEDIAVAULT__SERVER__SHUTDOWN_TIMEOUT", "1s")],
    )
    .await;
    let mut socket = connect(&f).await;
    socket
        .write_all(upload_head(&f, 50_000_000).as_bytes())
        .await
        .unwrap();
    socket.write_all(&png_bytes(6 * 1024 * 1024)).await.unwrap();
    until_an_upload_is_in_flight(&f).await;

    sigterm(&f);
    let reply = reply_within(&mut socket, 15).await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("restarting"), "{reply}");
    let status = f.server.wait();
    assert!(status.success(), "exit status {status:?}");
    f.assert_stored(0).await;
}
