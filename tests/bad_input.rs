//! End to end: malformed requests against the real binary. Every case of
//! each group is checked at the router, with its exact answer, in
//! crates/api/src/contract; here are what needs a real process (raw
//! framing, huge heads, bodies that stall or never end) and a few cases of
//! each group, showing that the binary, over a socket and on real backends,
//! answers the same, stays up, and stores nothing refused.
//!
//! Requests reqwest cannot produce go over a raw TCP connection. Failed
//! authentications are spread over several apps, at most 15 per app and
//! server, to stay clear of the per-client failure limit.

use crate::support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use support::{Backends, Fixture, app_and_token, png_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every server here cuts a silent upload body after this long.
const IDLE: &str = "1s";

async fn fixture(backends: Backends) -> Fixture {
    Fixture::with_env(backends, &[("MEDIAVAULT__SERVER__IDLE_TIMEOUT", IDLE)]).await
}

/// Fails unless `body` is `{"message": "<non-empty>", "status": "error"}`
/// and, when `hints` are given, the message names one of them.
fn assert_error(case: &str, status: u16, expected: u16, body: &[u8], hints: &[&str]) {
    let text = String::from_utf8_lossy(body);
    assert_eq!(status, expected, "{case}: {text}");
    let json: Value = serde_json::from_slice(body).unwrap_or_else(|_| panic!("{case}: not JSON: {text:?}"));
    let object = json.as_object().unwrap_or_else(|| panic!("{case}: {json}"));
    assert_eq!(object.len(), 2, "{case}: exactly message and status: {json}");
    assert_eq!(json["status"], "error", "{case}: {json}");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(!message.trim().is_empty(), "{case}: empty message");
    let lower = message.to_lowercase();
    assert!(
        hints.is_empty() || hints.iter().any(|h| lower.contains(&h.to_lowercase())),
        "{case}: message {message:?} names none of {hints:?}"
    );
}

/// A valid upload still works and the process is alive.
async fn assert_still_serving(f: &mut Fixture) {
    assert!(f.server.is_running(), "the server died:\n{}", f.server.log());
    f.upload(&png_bytes(1000)).await;
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 over TCP.

/// A response read off a raw connection.
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// `METHOD target HTTP/1.1` with Host and `Connection: close`, the `extra`
/// header lines as given (each ending in CRLF), then `body`, framed by its
/// true length unless `extra` frames it.
fn http(method: &str, target: &str, extra: &[u8], body: &[u8]) -> Vec<u8> {
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: mediavault\r\nConnection: close\r\n").into_bytes();
    request.extend_from_slice(extra);
    let lower = String::from_utf8_lossy(extra).to_lowercase();
    if !lower.contains("content-length:") && !lower.contains("transfer-encoding:") {
        request.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    request
}

/// Writes `request` on a new connection (then half-closes it when `close`)
/// while reading until the server closes; `None` when the server closed
/// without answering. A server that neither answers nor closes fails the test.
async fn exchange(f: &Fixture, request: Vec<u8>, close: bool) -> Option<Reply> {
    let addr = f.server.base_url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // The writer half lives until the reply is read: dropping it would end
    // the request early.
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        if close {
            let _ = writer.shutdown().await;
        }
        writer
    });
    let mut received = Vec::new();
    let read = async {
        let mut buffer = vec![0; 64 * 1024];
        // A reset after the reply keeps what was read.
        while let Ok(n) = reader.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the server neither answered nor closed the connection");
    drop(writing);
    let split = received.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&received[..split]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let mut body = received[split + 4..].to_vec();
    // Only the first reply counts; bytes the server read as a second
    // request may have a reply of their own.
    if let Some(length) = header(&head, "content-length").and_then(|v| v.parse().ok()) {
        body.truncate(length);
    }
    Some(Reply { status, head, body })
}

async fn raw(f: &Fixture, request: Vec<u8>) -> Reply {
    exchange(f, request, false)
        .await
        .expect("the server closed the connection without a reply")
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

// ---------------------------------------------------------------------------
// Multipart bodies.

const BOUNDARY: &str = "XyZ";

fn form_content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// One part: its header lines (no trailing CRLF) and its content.
fn part(headers: &[u8], content: &[u8]) -> Vec<u8> {
    let mut bytes = format!("--{BOUNDARY}\r\n").into_bytes();
    bytes.extend_from_slice(headers);
    bytes.extend_from_slice(b"\r\n\r\n");
    bytes.extend_from_slice(content);
    bytes.extend_from_slice(b"\r\n");
    bytes
}

fn text(name: &str, value: &[u8]) -> Vec<u8> {
    part(
        format!("Content-Disposition: form-data; name=\"{name}\"").as_bytes(),
        value,
    )
}

fn file(content: &[u8]) -> Vec<u8> {
    part(
        b"Content-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nContent-Type: image/png",
        content,
    )
}

fn end() -> Vec<u8> {
    format!("--{BOUNDARY}--\r\n").into_bytes()
}

fn body(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// A valid upload body, for cases that break only what is around it.
fn valid_body() -> Vec<u8> {
    body(&[text("file_type", b"image/png"), file(&png_bytes(5000)), end()])
}

/// Posts `body` with `content_type` and the app's token, over a raw
/// connection: the reply is read while the body is still being written, as
/// the server may answer before it has read it all.
async fn post_raw_body(f: &Fixture, content_type: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let extra = format!("token: {}\r\nContent-Type: {content_type}\r\n", f.token);
    let target = format!("/partner/app/{}/media", f.app_id);
    let reply = raw(f, http("POST", &target, extra.as_bytes(), &body)).await;
    (reply.status, reply.body)
}

/// Broken multipart framing, a file cut short and a file whose content
/// contradicts its type (each undone after some of it was stored): each
/// a clear 400.
async fn malformed_multipart_bodies(f: &mut Fixture) {
    let ct = form_content_type();
    let mut nested_png = b"--in\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n\r\n--in--\r\n".to_vec();
    nested_png.extend(png_bytes(1000));
    let cases: Vec<(&str, String, Vec<u8>, &[&str])> = vec![
        (
            "no boundary parameter",
            "multipart/form-data".into(),
            valid_body(),
            &["boundary"],
        ),
        (
            "nested multipart/mixed as the file",
            ct.clone(),
            body(&[
                text("file_type", b"image/png"),
                part(
                    b"Content-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nContent-Type: multipart/mixed; boundary=in",
                    &nested_png,
                ),
                end(),
            ]),
            &["does not match"],
        ),
        (
            "file content cut before the closing delimiter",
            ct.clone(),
            {
                let mut b = body(&[text("file_type", b"image/png"), file(&png_bytes(200_000))]);
                b.truncate(150_000);
                b
            },
            &["multipart"],
        ),
    ];
    for (case, content_type, bytes, hints) in cases {
        let (status, reply) = post_raw_body(f, &content_type, bytes).await;
        assert_error(case, status, 400, &reply, hints);
    }
}

/// Invalid UTF-8 in the filename is no reason to refuse a file: it is
/// stored, and downloads carry a valid Content-Disposition or none. The file
/// is deleted again, so that this group stores nothing.
async fn invalid_utf8_filename_is_dropped(f: &Fixture) {
    let bytes = body(&[
        text("file_type", b"image/png"),
        part(
            b"Content-Disposition: form-data; name=\"file\"; filename=\"ph\xffo\xc3to.png\"\r\nContent-Type: image/png",
            &png_bytes(100),
        ),
        end(),
    ]);
    let (status, reply) = post_raw_body(f, &form_content_type(), bytes).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    let id = serde_json::from_slice::<Value>(&reply).unwrap()["mediaId"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = f.download(&id).await;
    assert_eq!(response.status(), StatusCode::OK);
    if let Some(disposition) = response.headers().get("content-disposition") {
        let value = disposition.to_str().expect("an ASCII header");
        assert!(value.starts_with("attachment"), "{value}");
    }
    assert!(response.bytes().await.unwrap() == png_bytes(100));
    let deleted = f.request(reqwest::Method::DELETE, &format!("/{id}"), &[]).await;
    assert_eq!(deleted.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_multipart_is_refused_on_sqlite_and_files() {
    let mut f = fixture(Backends::SqliteFiles).await;
    malformed_multipart_bodies(&mut f).await;
    invalid_utf8_filename_is_dropped(&f).await;
    f.assert_stored(0).await;
    assert_still_serving(&mut f).await;
    f.assert_stored(1).await;
}

#[tokio::test]
async fn malformed_multipart_is_refused_on_postgres_and_garage() {
    let mut f = fixture(Backends::PostgresS3).await;
    malformed_multipart_bodies(&mut f).await;
    invalid_utf8_filename_is_dropped(&f).await;
    f.assert_stored(0).await;
    assert_still_serving(&mut f).await;
    f.assert_stored(1).await;
}

// ---------------------------------------------------------------------------
// Media ids: path tricks never reach another file, and never a 500.

/// Requests with tricky ids, sent byte for byte: each is a 404 (or a 400 for
/// a path that is not UTF-8), and the real file is untouched. The path
/// reaches the router as sent: nothing on the way resolves a dot segment.
async fn path_tricks(f: &Fixture) {
    let id = f.upload(&png_bytes(3000)).await;
    let app = &f.app_id;
    let token = format!("token: {}\r\n", f.token);
    let base = format!("/partner/app/{app}/media");
    let cases: Vec<(&str, &str, String, u16, &[&str])> = vec![
        (
            "dot dot to the file",
            "GET",
            format!("{base}/../media/{id}"),
            404,
            &["Not found"],
        ),
        (
            "NUL in the id",
            "GET",
            format!("{base}/{id}%00"),
            404,
            &["Media not found"],
        ),
        ("not UTF-8", "GET", format!("{base}/%FF%FE"), 400, &[]),
        (
            "DELETE of encoded traversal",
            "DELETE",
            format!("{base}/..%2F..%2F{id}"),
            404,
            &["Media not found"],
        ),
    ];
    for (case, method, target, status, hints) in cases {
        let reply = raw(f, http(method, &target, token.as_bytes(), b"")).await;
        assert_error(case, reply.status, status, &reply.body, hints);
    }
    // The file is still there, whole.
    let response = f.download(&id).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap() == png_bytes(3000));
}

#[tokio::test]
async fn tricky_media_ids_are_404_on_sqlite_and_files() {
    let mut f = fixture(Backends::SqliteFiles).await;
    path_tricks(&f).await;
    f.assert_stored(1).await;
    assert_still_serving(&mut f).await;
    f.assert_stored(2).await;
}

#[tokio::test]
async fn tricky_media_ids_are_404_on_postgres_and_garage() {
    let mut f = fixture(Backends::PostgresS3).await;
    path_tricks(&f).await;
    f.assert_stored(1).await;
    assert_still_serving(&mut f).await;
    f.assert_stored(2).await;
}

// ---------------------------------------------------------------------------
// Range headers.

/// What a `Range` header gets: the whole file (a header the server does not
/// understand is ignored, RFC 9110 §14.2), one range, or 416.
#[derive(Debug, Clone, Copy)]
enum Served {
    Whole,
    Part(usize, usize),
    Refused,
}

async fn bad_ranges(f: &Fixture) {
    const SIZE: usize = 150_000;
    let bytes = png_bytes(SIZE);
    let id = f.upload(&bytes).await;
    let target = format!("/partner/app/{}/media/{id}", f.app_id);
    let huge = "9".repeat(100 * 1024);
    let cases: Vec<(&str, Vec<u8>, Served)> = vec![
        ("end before start", b"bytes=5-2".to_vec(), Served::Whole),
        (
            "end past u64",
            b"bytes=10-18446744073709551616".to_vec(),
            Served::Part(10, SIZE),
        ),
        (
            "start at the size",
            format!("bytes={SIZE}-").into_bytes(),
            Served::Refused,
        ),
        (
            "100 KiB of digits",
            format!("bytes=0-{huge}").into_bytes(),
            Served::Part(0, SIZE),
        ),
    ];
    let token = format!("token: {}\r\n", f.token);
    for (case, value, served) in cases {
        let mut extra = token.clone().into_bytes();
        extra.extend_from_slice(b"Range: ");
        extra.extend_from_slice(&value);
        extra.extend_from_slice(b"\r\n");
        let reply = raw(f, http("GET", &target, &extra, b"")).await;
        match served {
            Served::Whole => {
                assert_eq!(reply.status, 200, "{case}: {}", reply.head);
                assert!(reply.body == bytes, "{case}: the whole file");
            }
            Served::Part(start, end) => {
                assert_eq!(reply.status, 206, "{case}: {}", reply.head);
                assert_eq!(
                    header(&reply.head, "content-range"),
                    Some(format!("bytes {start}-{}/{SIZE}", end - 1).as_str()),
                    "{case}"
                );
                assert!(reply.body == bytes[start..end], "{case}");
            }
            Served::Refused => {
                assert_error(case, reply.status, 416, &reply.body, &["range"]);
                assert_eq!(
                    header(&reply.head, "content-range"),
                    Some(format!("bytes */{SIZE}").as_str()),
                    "{case}"
                );
            }
        }
    }
}

#[tokio::test]
async fn bad_ranges_get_the_whole_file_or_416_on_sqlite_and_files() {
    let mut f = fixture(Backends::SqliteFiles).await;
    bad_ranges(&f).await;
    f.assert_stored(1).await;
    assert_still_serving(&mut f).await;
}

#[tokio::test]
async fn bad_ranges_get_the_whole_file_or_416_on_postgres_and_garage() {
    let mut f = fixture(Backends::PostgresS3).await;
    bad_ranges(&f).await;
    assert_still_serving(&mut f).await;
    f.assert_stored(2).await;
}

// ---------------------------------------------------------------------------
// Authentication headers.

/// Wrong tokens as only the wire carries them (repeated lines, bytes that
/// are not ASCII, a 100 KiB value) and another app's are 401
/// `Authentication Failed` on uploads and reads alike, and right ones,
/// however spaced, work.
#[tokio::test]
async fn wrong_token_headers_are_401() {
    let mut f = fixture(Backends::SqliteFiles).await;
    let id = f.upload(&png_bytes(100)).await;
    let token = f.token.clone();
    let (_, other_token) = app_and_token(&f.stores, true);
    let huge = "t".repeat(100 * 1024);
    let variants: Vec<(&str, Vec<u8>)> = vec![
        (
            "wrong token, then the right one",
            format!("token: mv_wrong\r\ntoken: {token}\r\n").into_bytes(),
        ),
        (
            "token of another app",
            format!("token: {other_token}\r\n").into_bytes(),
        ),
        (
            "token with non-ASCII bytes",
            [b"token: ".as_slice(), token.as_bytes(), b"\xc3\xa9\xff\r\n"].concat(),
        ),
        ("token of 100 KiB", format!("token: {huge}\r\n").into_bytes()),
    ];
    // Uploads on this app, reads on two more: at most 15 failures each.
    let (read_app, read_token) = app_and_token(&f.stores, true);
    let (info_app, info_token) = app_and_token(&f.stores, true);
    assert!(variants.len() <= 15);
    let mut body = text("file_type", b"image/png");
    body.extend(file(&png_bytes(500)));
    body.extend(end());
    let upload_type = format!("Content-Type: {}\r\n", form_content_type());
    for (case, extra) in &variants {
        let target = format!("/partner/app/{}/media", f.app_id);
        let reply = raw(
            &f,
            http("POST", &target, &[upload_type.as_bytes(), extra].concat(), &body),
        )
        .await;
        assert_error(case, reply.status, 401, &reply.body, &["Authentication Failed"]);
    }
    for (app, own, tail) in [
        (&read_app, &read_token, "/x"),
        (&info_app, &info_token, "/x/info"),
    ] {
        for (case, extra) in &variants {
            // Each read variant with the other apps' own token where the
            // variant used this app's.
            let extra = String::from_utf8_lossy(extra).replace(&token, own);
            let extra = if case.contains("non-ASCII") {
                [b"token: ".as_slice(), own.as_bytes(), b"\xc3\xa9\xff\r\n"].concat()
            } else {
                extra.into_bytes()
            };
            let target = format!("/partner/app/{app}/media{tail}");
            let reply = raw(&f, http("GET", &target, &extra, b"")).await;
            assert_error(case, reply.status, 401, &reply.body, &["Authentication Failed"]);
        }
    }
    // Forms that are right, however written, work; the first file is
    // still served.
    for (case, extra) in [
        ("lower-case bearer", format!("Authorization: bearer {token}\r\n")),
        ("spaces around the token", format!("token:    {token}   \r\n")),
    ] {
        let target = format!("/partner/app/{}/media/{id}", f.app_id);
        let reply = raw(&f, http("GET", &target, extra.as_bytes(), b"")).await;
        assert_eq!(
            reply.status,
            200,
            "{case}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    f.assert_stored(1).await;
    assert_still_serving(&mut f).await;
    f.assert_stored(2).await;
}

// ---------------------------------------------------------------------------
// HTTP framing: lengths, encodings, header sizes.

#[tokio::test]
async fn broken_framing_and_huge_headers_are_refused() {
    let mut f = fixture(Backends::SqliteFiles).await;
    let target = format!("/partner/app/{}/media", f.app_id);
    let auth = format!("token: {}\r\nContent-Type: {}\r\n", f.token, form_content_type());
    let valid = valid_body();

    // Declared longer than sent, then the client closes its side: the
    // server still answers, 400, and keeps nothing.
    let extra = format!("{auth}Content-Length: {}\r\n", valid.len() + 100_000);
    let reply = exchange(
        &f,
        http("POST", &target, extra.as_bytes(), &valid[..valid.len() - 20]),
        true,
    )
    .await
    .expect("a reply to a half-closed request");
    assert_error(
        "declared longer, then closed",
        reply.status,
        400,
        &reply.body,
        &["multipart"],
    );

    // Declared shorter than sent: the body ends early, mid file part.
    let extra = format!("{auth}Content-Length: {}\r\n", valid.len() - 100);
    let reply = raw(&f, http("POST", &target, extra.as_bytes(), &valid)).await;
    assert_error("declared shorter", reply.status, 400, &reply.body, &["multipart"]);

    // Declared shorter, cutting the first part's headers.
    let extra = format!("{auth}Content-Length: 30\r\n");
    let reply = raw(&f, http("POST", &target, extra.as_bytes(), &valid)).await;
    assert_error(
        "declared shorter, inside headers",
        reply.status,
        400,
        &reply.body,
        &["multipart"],
    );

    // Chunked with a bad chunk size inside the file part.
    let mut chunked = format!("{:x}\r\n", 300).into_bytes();
    chunked.extend_from_slice(&valid[..300]);
    chunked.extend_from_slice(b"\r\nzz\r\nnot hex\r\n0\r\n\r\n");
    let extra = format!("{auth}Transfer-Encoding: chunked\r\n");
    let reply = raw(&f, http("POST", &target, extra.as_bytes(), &chunked)).await;
    assert_error("bad chunk size", reply.status, 400, &reply.body, &["multipart"]);

    // A 100 KiB header value, and no token: 401 all the same.
    let extra = format!(
        "Content-Type: {}\r\nX-Padding: {}\r\n",
        form_content_type(),
        "p".repeat(100 * 1024)
    );
    let reply = raw(&f, http("POST", &target, extra.as_bytes(), &valid)).await;
    assert_error(
        "100 KiB header value",
        reply.status,
        401,
        &reply.body,
        &["Authentication"],
    );

    // Many headers (under the HTTP server's limit of 100) and no token: 401.
    let many: String = (0..90).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let reply = raw(&f, http("POST", &target, many.as_bytes(), &valid)).await;
    assert_error(
        "90 headers, no token",
        reply.status,
        401,
        &reply.body,
        &["Authentication"],
    );

    // Past the HTTP server's limits: answered by the HTTP layer itself,
    // 431 with no body, before any handler runs.
    let many: String = (0..200).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let reply = raw(
        &f,
        http(
            "POST",
            &target,
            [auth.as_str(), &many].concat().as_bytes(),
            &valid,
        ),
    )
    .await;
    assert_eq!(reply.status, 431, "200 headers: {}", reply.head);
    let extra = format!("{auth}X-Padding: {}\r\n", "p".repeat(1024 * 1024));
    let reply = raw(&f, http("POST", &target, extra.as_bytes(), &valid)).await;
    assert_eq!(reply.status, 431, "a 1 MiB header: {}", reply.head);

    // A request line or header the HTTP layer cannot parse.
    for (case, request) in [
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec()),
        (
            "header without a colon",
            format!("POST {target} HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n").into_bytes(),
        ),
        (
            "two different lengths",
            format!(
                "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
            )
            .into_bytes(),
        ),
        (
            "length not a number",
            format!("POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n").into_bytes(),
        ),
    ] {
        let reply = raw(&f, request).await;
        assert!((400..500).contains(&reply.status), "{case}: {}", reply.head);
    }

    // An unknown method on the media route.
    let reply = raw(&f, http("BREW", &target, auth.as_bytes(), b"")).await;
    assert_error("unknown method", reply.status, 405, &reply.body, &["not allowed"]);

    f.assert_stored(0).await;
    assert_still_serving(&mut f).await;
    f.assert_stored(1).await;
}

// ---------------------------------------------------------------------------
// Bodies that stop arriving, framing that never ends, and a slow client.

/// The head of an upload request with room for `length` body bytes.
fn upload_head(f: &Fixture, length: usize) -> Vec<u8> {
    let extra = format!(
        "token: {}\r\nContent-Type: {}\r\nContent-Length: {length}\r\n",
        f.token,
        form_content_type()
    );
    http(
        "POST",
        &format!("/partner/app/{}/media", f.app_id),
        extra.as_bytes(),
        b"",
    )
}

/// Sends an upload's head and `sent`, then nothing more, keeping the
/// connection open: the server must answer 400 on its own (after its idle
/// timeout, or at once past the framing limit), with `hint` in the message.
async fn stall(f: &Fixture, case: &str, sent: &[u8], hint: &str) {
    let mut request = upload_head(f, sent.len() + 10_000_000);
    request.extend_from_slice(sent);
    let reply = raw(f, request).await;
    assert_error(case, reply.status, 400, &reply.body, &[hint]);
}

#[tokio::test]
async fn silent_and_endless_bodies_are_cut() {
    let mut f = fixture(Backends::SqliteFiles).await;
    let mut cut_in_file = text("file_type", b"image/png");
    cut_in_file.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n")
            .as_bytes(),
    );
    cut_in_file.extend(png_bytes(300_000));
    // Part headers or a preamble that never end are refused once they pass
    // the framing limit, not buffered on: the answer comes while the client
    // is still connected and the declared body is far from complete.
    let mut endless_headers =
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; X-Pad: ").into_bytes();
    endless_headers.extend(std::iter::repeat_n(b'p', 6 * 1024 * 1024));
    let mut endless_preamble = b"garbage before any boundary ".to_vec();
    endless_preamble.extend(std::iter::repeat_n(b'g', 6 * 1024 * 1024));
    let silent = "no data received";
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("silent before any body byte", Vec::new(), silent),
        (
            "silent in the preamble",
            b"preamble without a boundary".to_vec(),
            silent,
        ),
        (
            "silent after the first boundary",
            format!("--{BOUNDARY}\r\n").into_bytes(),
            silent,
        ),
        (
            "silent inside file_type",
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file_type\"\r\n\r\nima")
                .into_bytes(),
            silent,
        ),
        (
            "silent inside the part headers",
            format!("--{BOUNDARY}\r\nContent-Disposition: form-da").into_bytes(),
            silent,
        ),
        ("silent after 300 kB of the file", cut_in_file, silent),
        ("endless part headers", endless_headers, "part headers"),
        ("endless preamble", endless_preamble, "preamble"),
    ];
    // All at once, each on its own connection.
    futures::future::join_all(cases.iter().map(|(case, sent, hint)| stall(&f, case, sent, hint))).await;

    // Headers trickled a few bytes at a time, then a body trickled in small
    // pieces: the idle timeout is about silence, not speed, so the upload
    // goes through.
    let file_bytes = png_bytes(2000);
    let body = body(&[text("file_type", b"image/png"), file(&file_bytes), end()]);
    let mut request = upload_head(&f, body.len());
    request.extend_from_slice(&body);
    let addr = f.server.base_url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    for piece in request.chunks(request.len() / 20 + 1) {
        socket.write_all(piece).await.unwrap();
        socket.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut reply))
        .await
        .expect("a reply")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    f.assert_stored(1).await;
    assert_still_serving(&mut f).await;
    f.assert_stored(2).await;
}
