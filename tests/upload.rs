//! End to end: the real `mediavault` binary on port 0, spoken to over HTTP,
//! against the embedded default (SQLite + files) and production (Postgres +
//! Garage). Every refused upload is checked to leave no row and no blob.

use crate::support;

use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{
    Backends, Fixture, Gate, Server, Stores, app_and_token, blob_key_of, fanned_out_key, png_bytes, png_form,
};

const LIMIT: usize = 104_857_600;

fn file_part(bytes: Vec<u8>, name: &str) -> Part {
    Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str("application/octet-stream")
        .unwrap()
}

fn error(message: &str) -> Value {
    json!({"message": message, "status": "error"})
}

const TYPE_LIST: &str = "audio/aac, audio/mp4, audio/mpeg, audio/amr, audio/ogg, audio/opus, \
    application/vnd.ms-powerpoint, application/msword, \
    application/vnd.openxmlformats-officedocument.wordprocessingml.document, \
    application/vnd.openxmlformats-officedocument.presentationml.presentation, \
    application/vnd.openxmlformats-officedocument.spreadsheetml.sheet, application/pdf, text/plain, \
    application/vnd.ms-excel, image/jpeg, image/png, image/webp, video/mp4, video/3gpp";

fn type_error(received: &str) -> Value {
    error(&format!(
        "Param file must be a file with one of the following types: {TYPE_LIST}. Received file of type '{received}'."
    ))
}

async fn round_trip(backends: Backends) {
    let f = Fixture::new(backends).await;
    for len in [1, 65_480, 65_481, 6 * 1024 * 1024 + 17] {
        // A single byte carries no PNG signature: it goes up as text.
        let (bytes, mime) = if len == 1 {
            (b"x".to_vec(), "text/plain")
        } else {
            (png_bytes(len), "image/png")
        };
        let form = Form::new()
            .text("file_type", mime)
            .part("file", file_part(bytes.clone(), "a.png"));
        let (status, body) = f.post(form).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "success");
        let media_id = body["mediaId"].as_str().unwrap();
        assert_eq!(
            body.as_object().unwrap().len(),
            2,
            "exactly mediaId and status: {body}"
        );

        let response = f.download(media_id).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], mime);
        assert_eq!(response.headers()["content-length"], len.to_string().as_str());
        assert!(
            response.bytes().await.unwrap() == bytes,
            "downloaded bytes differ for {len}"
        );
    }
    f.assert_stored(4).await;
}

#[tokio::test]
async fn upload_and_download_round_trip_on_sqlite_and_files() {
    round_trip(Backends::SqliteFiles).await;
}

#[tokio::test]
async fn upload_and_download_round_trip_on_postgres_and_garage() {
    round_trip(Backends::PostgresS3).await;
}

/// The reference page's sample request, run with curl as written there.
#[tokio::test]
async fn reference_curl_command_works_verbatim() {
    let f = Fixture::new(Backends::PostgresS3).await;
    let path = f.stores.dir().join("file");
    std::fs::write(&path, png_bytes(3000)).unwrap();
    let script = format!(
        "curl --location --request POST '{}' \\\n--header 'token: {}' \\\n--form 'file_type=\"{}\"' \\\n--form 'file=@\"{}\"'",
        f.media_url(),
        f.token,
        "image/png",
        path.display()
    );
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let body: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(body["status"], "success", "{body}");
    let downloaded = f
        .download(body["mediaId"].as_str().unwrap())
        .await
        .bytes()
        .await
        .unwrap();
    assert!(downloaded == png_bytes(3000));
}

/// Common Gupshup client libraries send `file` before `file_type`.
#[tokio::test]
async fn file_before_file_type_is_streamed_and_checked() {
    let f = Fixture::new(Backends::PostgresS3).await;
    let bytes = png_bytes(7 * 1024 * 1024);
    let form = Form::new()
        .part("file", file_part(bytes.clone(), "x.png"))
        .text("file_type", "image/png");
    let (status, body) = f.post(form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let downloaded = f
        .download(body["mediaId"].as_str().unwrap())
        .await
        .bytes()
        .await
        .unwrap();
    assert!(downloaded == bytes);

    // The type arrives after the bytes were streamed: still refused, nothing kept.
    let form = Form::new()
        .part("file", file_part(png_bytes(6 * 1024 * 1024), "x.gif"))
        .text("file_type", "image/gif");
    assert_eq!(
        f.post(form).await,
        (StatusCode::BAD_REQUEST, type_error("image/gif"))
    );
    let form = Form::new().part("file", file_part(png_bytes(100), "x.png"));
    assert_eq!(f.post(form).await, (StatusCode::BAD_REQUEST, type_error("")));
    f.assert_stored(1).await;
}

/// A wrong token answers before a non-CAPI app, and a non-CAPI app before
/// a type not allowed (the whole order is checked at the router, in
/// crates/api/src/contract/errors.rs).
#[tokio::test]
async fn errors_answer_in_the_contract_order() {
    let f = Fixture::new(Backends::SqliteFiles).await;
    let (non_capi, non_capi_token) = app_and_token(&f.stores, false);
    let url = f.server.url(&format!("/partner/app/{non_capi}/media"));
    let bad_type = || {
        Form::new()
            .text("file_type", "image/gif")
            .part("file", file_part(png_bytes(10), "a"))
    };

    let response = f
        .client
        .post(&url)
        .header("token", "nope")
        .multipart(bad_type())
        .send()
        .await
        .unwrap();
    assert_eq!(
        (response.status(), response.json::<Value>().await.unwrap()),
        (StatusCode::UNAUTHORIZED, error("Authentication Failed"))
    );
    let response = f
        .client
        .post(&url)
        .header("token", &non_capi_token)
        .multipart(bad_type())
        .send()
        .await
        .unwrap();
    assert_eq!(
        (response.status(), response.json::<Value>().await.unwrap()),
        (
            StatusCode::BAD_REQUEST,
            error("Only CAPI apps allowed to generate media ID")
        )
    );
    f.assert_stored(0).await;
}

#[tokio::test]
async fn exactly_the_limit_passes_and_one_byte_more_is_413() {
    let f = Fixture::new(Backends::PostgresS3).await;
    let (status, body) = f.post(png_form(LIMIT)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let media_id = body["mediaId"].as_str().unwrap().to_owned();

    let (status, body) = f.post(png_form(LIMIT + 1)).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            error("File size exceeds the maximum limit!")
        )
    );
    f.assert_stored(1).await;

    let response = f.download(&media_id).await;
    assert_eq!(response.headers()["content-length"], LIMIT.to_string().as_str());
    let mut hasher = Sha256::new();
    let mut stream = response.bytes_stream();
    use futures::StreamExt;
    let mut received = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        received += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(received, LIMIT);
    assert_eq!(hasher.finalize()[..], Sha256::digest(png_bytes(LIMIT))[..]);
}

/// Refusals that come after part of a file was stored (a second file part
/// of 6 MiB, a body cut off mid-file) get their clear 400 and leave nothing
/// behind on either backend; every refusal's message is checked at the
/// router, in crates/api/src/contract.
#[tokio::test]
async fn bad_uploads_get_clear_errors_and_leave_nothing() {
    for backends in [Backends::SqliteFiles, Backends::PostgresS3] {
        let f = Fixture::new(backends).await;
        let two_files = Form::new()
            .text("file_type", "image/png")
            .part("file", file_part(png_bytes(10), "a"))
            .part("file", file_part(png_bytes(6 * 1024 * 1024), "b"));
        let (status, body) = f.post(two_files).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            body,
            error("Param file was sent more than once; send exactly one file.")
        );

        // A body cut off in the middle of the file part.
        let mut body =
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file_type\"\r\n\r\nimage/png\r\n--XyZ\r\n\
            Content-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\
            Content-Type: image/png\r\n\r\n"
                .to_vec();
        body.extend(png_bytes(6 * 1024 * 1024));
        let truncated = f
            .client
            .post(f.media_url())
            .header("token", &f.token)
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(truncated.status(), StatusCode::BAD_REQUEST);
        let message = truncated.json::<Value>().await.unwrap()["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.starts_with("Malformed multipart/form-data request"),
            "{message}"
        );
        f.assert_stored(0).await;
    }
}

/// A client that goes away mid-upload leaves nothing, and the server logs it
/// as an abort rather than an error.
#[tokio::test]
async fn client_disconnect_mid_upload_leaves_nothing() {
    use tokio::io::AsyncWriteExt;
    let f = Fixture::new(Backends::PostgresS3).await;
    let addr = f.server.base_url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /partner/app/{}/media HTTP/1.1\r\nHost: {addr}\r\ntoken: {}\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 50000000\r\n\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"file_type\"\r\n\r\nimage/png\r\n--XyZ\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n",
        f.app_id, f.token
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&png_bytes(12 * 1024 * 1024)).await.unwrap();
    socket.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(socket);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (rows, blobs) = f.stores.inventory().await;
        if rows.is_empty() && blobs.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: rows {rows:?} blobs {blobs:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = f.server.log();
    assert!(!log.contains("ERROR"), "a disconnect is not an error:\n{log}");
}

/// With a blob store that accepts connections and never answers, the
/// service still starts; an upload fails with 500 once the configured bound
/// is spent (not a second bound more, waiting on the hung store to clean
/// up); what it leaves is exactly one row, its key already shredded, which
/// the first reaper pass removes; once the store answers, uploads succeed.
#[tokio::test]
async fn blob_store_outage_fails_fast_and_recovers() {
    const BOUND: Duration = Duration::from_secs(2);
    let mut stores = Stores::new(Backends::PostgresS3).await;
    let garage_endpoint = stores.blobs.endpoint.clone().unwrap();
    let gate = Gate::silent(garage_endpoint.trim_start_matches("http://")).await;
    stores.blobs.endpoint = Some(format!("http://{}", gate.addr));

    let (app_id, token) = app_and_token(&stores, true);
    let env = [
        ("MEDIAVAULT__BLOBS__TIMEOUT", "2s"),
        ("MEDIAVAULT__REAPER__ENABLED", "false"),
    ];
    let server = Server::start_with(&stores, &env);
    let client = Client::new();
    let url = server.url(&format!("/partner/app/{app_id}/media"));
    // The test's own checks go to the store direct.
    let mut direct = Stores::new(Backends::PostgresS3).await;
    direct.database_url = stores.database_url.clone();
    direct.blobs.url = stores.blobs.url.clone();
    direct.keys = stores.keys.clone();

    let started = Instant::now();
    let response = client
        .post(&url)
        .header("token", &token)
        .multipart(png_form(1000))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        (response.status(), response.json::<Value>().await.unwrap()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            error("Unable to upload requested Media")
        )
    );
    assert!(took >= BOUND, "the store was waited on for its bound: {took:?}");
    assert!(
        took < BOUND + Duration::from_millis(1500),
        "a storage failure must answer within its bound, took {took:?}"
    );

    // Left behind: the row alone, no key in it to read anything with.
    let (rows, blobs) = direct.inventory().await;
    assert_eq!((rows.len(), blobs.len()), (1, 0), "rows {rows:?} blobs {blobs:?}");
    let vault = direct.vault().await;
    assert!(
        vault.key_use().await.unwrap().is_empty(),
        "the upload's data key is shredded"
    );
    vault.close().await;
    // Due at once, not after reaper.stale_upload_after (an hour here).
    let (ok, out, err) = support::cli(&direct, &["reap", "--once"]);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"expired": 0, "deleted": 1, "abandoned": 0})
    );
    assert_eq!(direct.inventory().await, (vec![], vec![]));

    gate.open();
    let response = client
        .post(&url)
        .header("token", &token)
        .multipart(png_form(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (rows, blobs) = direct.inventory().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows, blobs);
    // Clean-up runs after this runtime stops serving the gate: go direct.
    stores.blobs.endpoint = Some(garage_endpoint);
}

/// `blobs.unsigned_payload` decides what S3 uploads carry as their payload
/// hash: unset over plain http, the body's SHA-256; set, `UNSIGNED-PAYLOAD`.
/// Garage takes the upload either way.
#[tokio::test]
async fn s3_payload_signing_follows_blobs_unsigned_payload() {
    for unsigned in [false, true] {
        let mut stores = Stores::new(Backends::SqliteS3).await;
        let garage = stores.blobs.endpoint.clone().unwrap();
        let gate = Gate::recording(garage.trim_start_matches("http://")).await;
        stores.blobs.endpoint = Some(format!("http://{}", gate.addr));
        let (app_id, token) = app_and_token(&stores, true);
        let env: &[(&str, &str)] = if unsigned {
            &[("MEDIAVAULT__BLOBS__UNSIGNED_PAYLOAD", "true")]
        } else {
            &[]
        };
        let mut f = Fixture::serve(stores, app_id, token, env);
        // Only the server goes through the gate; the test's own checks and
        // clean-up go direct, even after a failed assertion.
        f.stores.blobs.endpoint = Some(garage);
        // Past one 5 MiB part: a multipart upload, parts and all.
        let file = png_bytes(6 << 20);
        let id = f.upload(&file).await;
        let body = f.download(&id).await.bytes().await.unwrap();
        assert!(body == file, "the file reads back byte for byte");

        let sent = gate.sent().to_ascii_lowercase();
        let puts = put_request_heads(&sent);
        assert!(
            puts.len() >= 2,
            "expected a multipart upload, saw {} PUTs",
            puts.len()
        );
        for head in puts {
            let hash = head
                .lines()
                .find_map(|line| line.strip_prefix("x-amz-content-sha256: "))
                .unwrap_or_else(|| panic!("a PUT without a payload hash: {head}"));
            if unsigned {
                assert_eq!(hash, "unsigned-payload", "{head}");
            } else {
                assert!(
                    hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
                    "over http the body's SHA-256 is signed: {head}"
                );
            }
        }
    }
}

/// The request line and headers of every PUT in `sent`.
fn put_request_heads(sent: &str) -> Vec<&str> {
    sent.match_indices("put /")
        .filter_map(|(at, _)| {
            let rest = &sent[at..];
            rest.find("\r\n\r\n").map(|end| &rest[..end])
        })
        .collect()
}

/// The head of an upload that waits for `100 Continue` before its body.
fn upload_head_expecting_continue(addr: &str, app_id: &str, token: &str) -> String {
    format!(
        "POST /partner/app/{app_id}/media HTTP/1.1\r\nHost: {addr}\r\ntoken: {token}\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 50000000\r\n\
         Expect: 100-continue\r\n\r\n"
    )
}

/// Reads one response from `reader` — the interim `100 Continue` too — as
/// its head and its body (by Content-Length), within 30 s.
async fn read_response(reader: &mut (impl tokio::io::AsyncRead + Unpin)) -> (String, String) {
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                if bytes.len() >= end + 4 + length {
                    let body = String::from_utf8_lossy(&bytes[end + 4..end + 4 + length]).into_owned();
                    return (head, body);
                }
            }
            match reader.read(&mut buf).await {
                Ok(n @ 1..) => bytes.extend_from_slice(&buf[..n]),
                _ => panic!(
                    "connection ended before a whole response: {:?}",
                    String::from_utf8_lossy(&bytes)
                ),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("a response in time")
}

/// One app's slow uploads hold at most its share of the upload slots: with
/// four slots and a share of two, app A's two hanging uploads take its
/// share, its third is refused with 429 and Retry-After, and app B still
/// uploads.
#[tokio::test]
async fn one_apps_slow_uploads_leave_slots_for_other_apps() {
    use tokio::io::AsyncWriteExt;
    let env = [
        ("MEDIAVAULT__SERVER__MAX_CONCURRENT_UPLOADS", "4"),
        ("MEDIAVAULT__SERVER__MAX_CONCURRENT_UPLOADS_PER_APP", "2"),
    ];
    let f = Fixture::with_env(Backends::SqliteFiles, &env).await;
    let addr = f.server.base_url.trim_start_matches("http://").to_owned();
    let head = upload_head_expecting_continue(&addr, &f.app_id, &f.token);
    let mut hanging = Vec::new();
    for _ in 0..2 {
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        socket.write_all(head.as_bytes()).await.unwrap();
        // `100 Continue` comes once the upload holds its slot and reads.
        let (answer, _) = read_response(&mut socket).await;
        assert!(answer.starts_with("HTTP/1.1 100"), "{answer}");
        hanging.push(socket);
    }
    let mut third = tokio::net::TcpStream::connect(&addr).await.unwrap();
    third.write_all(head.as_bytes()).await.unwrap();
    let (answer, body) = read_response(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "error");
    assert!(
        body["message"].as_str().unwrap().contains("uploads in progress"),
        "{body}"
    );

    let (b_app, b_token) = app_and_token(&f.stores, true);
    let response = f
        .client
        .post(f.server.url(&format!("/partner/app/{b_app}/media")))
        .header("token", &b_token)
        .multipart(png_form(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "app B still uploads");
    drop(hanging);
}

/// An upload that slows to a trickle below `server.min_upload_rate` is cut
/// at the end of a window with 408 in the error shape — even after a fast
/// start that sent a part to the store — and leaves no row and no blob.
#[tokio::test]
async fn an_upload_below_the_minimum_rate_is_cut_and_leaves_nothing() {
    use tokio::io::AsyncWriteExt;
    let env = [
        ("MEDIAVAULT__SERVER__MIN_UPLOAD_RATE", "10000"),
        ("MEDIAVAULT__SERVER__MIN_UPLOAD_RATE_WINDOW", "1s"),
    ];
    let f = Fixture::with_env(Backends::PostgresS3, &env).await;
    let addr = f.server.base_url.trim_start_matches("http://").to_owned();
    let socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut reader, mut writer) = socket.into_split();
    let head = format!(
        "POST /partner/app/{}/media HTTP/1.1\r\nHost: {addr}\r\ntoken: {}\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 50000000\r\n\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"file_type\"\r\n\r\nimage/png\r\n--XyZ\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n",
        f.app_id, f.token
    );
    let sender = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await.unwrap();
        writer.write_all(&png_bytes(6 * 1024 * 1024)).await.unwrap();
        // Then ten bytes a second, a thousandth of the minimum, until cut.
        while writer.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (answer, body) = read_response(&mut reader).await;
    sender.abort();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        error("Upload too slow: less than 10000 bytes/s over 1s; the request was cut")
    );
    f.assert_stored(0).await;
}

/// On the file backend, blobs spread over 256 directories named by the
/// first two hex digits of their own name (`media/<xy>/<name>`), none
/// directly under `media/`: in one directory every create and rename queues
/// on that directory's lock, and ext4 refuses new names once a directory's
/// index is full (about ten million of these with 4 KiB blocks).
#[tokio::test]
async fn blob_files_fan_out_over_directories_named_by_their_first_digits() {
    let f = Fixture::new(Backends::SqliteFiles).await;
    let media_dir = std::path::Path::new(&f.stores.blobs.url).join("media");
    let mut directories = std::collections::HashSet::new();
    for n in 0..24 {
        let id = f.upload(&png_bytes(300 + n)).await;
        let key = blob_key_of(&f.stores, &id).await.expect("a stored row");
        let (fan_out, name) = fanned_out_key(&key);
        assert!(
            name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key}"
        );
        assert!(media_dir.join(fan_out).join(name).is_file(), "{key}");
        directories.insert(fan_out.to_owned());
    }
    for entry in std::fs::read_dir(&media_dir).unwrap() {
        let entry = entry.unwrap();
        assert!(
            entry.file_type().unwrap().is_dir(),
            "{:?} directly under media/",
            entry.path()
        );
    }
    // 24 random names all in one of 256 directories: 256^-23.
    assert!(directories.len() > 1, "{directories:?}");
}

/// A local blob directory down to its reserve of free space
/// (`blobs.min_free_bytes`, here more than any disk holds) refuses uploads
/// on both surfaces, 507 with Retry-After, and stores nothing.
#[tokio::test]
async fn a_disk_down_to_its_reserve_refuses_uploads_and_stores_nothing() {
    const PHONE: &str = "106540352242922";
    let reserve = u64::MAX.to_string();
    let f = Fixture::with_env(
        Backends::SqliteFiles,
        &[("MEDIAVAULT__BLOBS__MIN_FREE_BYTES", &reserve)],
    )
    .await;
    let response = f.post_response(png_form(100)).await;
    assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(response.headers()["retry-after"], "60");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        error("The server is out of storage space; retry later")
    );

    f.map_phone_number_id(PHONE);
    let form = Form::new()
        .text("messaging_product", "whatsapp")
        .part(
            "file",
            file_part(png_bytes(100), "pic.png")
                .mime_str("image/png")
                .unwrap(),
        )
        .text("type", "image/png");
    let response = f
        .client
        .post(f.server.url(&format!("/v23.0/{PHONE}/media")))
        .bearer_auth(&f.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(response.headers()["retry-after"], "60");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], 131053, "{body}");
    assert!(body.to_string().contains("out of storage space"), "{body}");
    f.assert_stored(0).await;
}
