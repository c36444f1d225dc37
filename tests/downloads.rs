//! End to end: downloads under pressure and against damaged state — what is
//! counted when stored media is not what its row says, what a client sees
//! when a file fails verification late, slow and stalled readers, the cap on
//! downloads at once, and deletes while a download streams.

use crate::support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use support::{Backends, Fixture, Server, Stores, app_and_token, cli, png_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const SEGMENT: usize = 65_536;
const HEADER: usize = 40;
const MIB: usize = 1024 * 1024;

/// The value of one series in `/metrics` (0 when absent).
async fn metric(server: &Server, series: &str) -> f64 {
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Asserts a 500 in the service's error shape.
async fn assert_clean_500(case: &str, response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR, "{case}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "error", "{case}: {body}");
    assert_eq!(
        body["message"], "Unable to fetch requested Media",
        "{case}: {body}"
    );
}

/// A blob deleted, a blob cut short (before the range read starts, too), a
/// blob altered and a wrapped key altered in the database: each is a clean
/// 500, counted under its own kind of integrity failure with an error line
/// naming the media, and none counts as a failure of the store.
#[tokio::test]
async fn integrity_failures_are_counted_by_kind() {
    let f = Fixture::new(Backends::PostgresS3).await;
    let len = 5 * SEGMENT;
    let mut media = Vec::new();
    for _ in 0..4 {
        media.push(f.upload_keyed(&png_bytes(len)).await);
    }
    let kind = |k: &str| format!("mediavault_integrity_failures_total{{kind=\"{k}\"}}");

    let (missing, missing_key) = &media[0];
    f.stores.delete_blob(missing_key).await;
    assert_clean_500("missing blob", f.download(missing).await).await;
    assert_eq!(metric(&f.server, &kind("missing_blob")).await, 1.0);

    let (short, short_key) = &media[1];
    let blob = f.stores.read_blob(short_key).await;
    f.stores.write_blob(short_key, blob[..SEGMENT].to_vec()).await;
    let range = [("range", "bytes=200000-200100")];
    let after_the_end = f
        .request(reqwest::Method::GET, &format!("/{short}"), &range)
        .await;
    assert_clean_500("truncated before the range", after_the_end).await;
    assert_clean_500("truncated", f.download(short).await).await;
    assert_eq!(metric(&f.server, &kind("truncated")).await, 2.0);

    let (tampered, tampered_key) = &media[2];
    let mut blob = f.stores.read_blob(tampered_key).await;
    blob[HEADER + 100] ^= 1;
    f.stores.write_blob(tampered_key, blob).await;
    assert_clean_500("tampered", f.download(tampered).await).await;
    assert_eq!(metric(&f.server, &kind("tampered")).await, 1.0);

    let (unwrappable, _) = &media[3];
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&f.stores.database_url)
        .await
        .unwrap();
    sqlx::query("UPDATE media_keys SET wrapped_dek = set_byte(wrapped_dek, 20, get_byte(wrapped_dek, 20) # 1) WHERE media_id = $1")
        .bind(unwrappable)
        .execute(&mut db)
        .await
        .unwrap();
    assert_clean_500("wrapped key altered", f.download(unwrappable).await).await;
    assert_eq!(metric(&f.server, &kind("key_unwrap")).await, 1.0);

    assert_eq!(
        metric(&f.server, "mediavault_blob_store_errors_total").await,
        0.0,
        "damaged media is not a failure of the store"
    );
    let log = f.server.log();
    for ((id, _), kind) in media
        .iter()
        .zip(["missing_blob", "truncated", "tampered", "key_unwrap"])
    {
        assert!(
            log.lines()
                .any(|l| l.contains("failed verification") && l.contains(id) && l.contains(kind)),
            "no error line for {id} ({kind}):\n{log}"
        );
    }
}

/// A file of a few segments whose last segment was altered: the status has
/// not gone out before everything verified, so the client gets a clean 500,
/// not a connection closed after a 200.
#[tokio::test]
async fn a_small_file_altered_late_is_a_clean_500() {
    let f = Fixture::new(Backends::PostgresS3).await;
    let len = 260_000;
    let (id, key) = f.upload_keyed(&png_bytes(len)).await;
    let mut blob = f.stores.read_blob(&key).await;
    blob[3 * SEGMENT + 10] ^= 1;
    f.stores.write_blob(&key, blob).await;
    assert_clean_500("whole file", f.download(&id).await).await;
    let range = [("range", "bytes=1000-")];
    let part = f.request(reqwest::Method::GET, &format!("/{id}"), &range).await;
    assert_clean_500("range to the end", part).await;
    let series = "mediavault_http_requests_total{route=\"/partner/app/{app_id}/media/{media_id}\",method=\"GET\",status=\"500\",outcome=\"complete\"}";
    assert_eq!(metric(&f.server, series).await, 2.0);
}

/// A download the client reads to its end counts as `complete`, small or
/// too large to verify whole before the status: hyper stops polling a body
/// once it has written its Content-Length, and a streamed download never
/// said it had ended, so every one was counted as `aborted`. A request to
/// no route is counted too, as `unmatched`.
#[tokio::test]
async fn downloads_read_to_their_end_and_unmatched_requests_are_counted() {
    let f = Fixture::new(Backends::SqliteFiles).await;
    let request = |outcome: &str| {
        format!(
            "mediavault_http_requests_total{{route=\"/partner/app/{{app_id}}/media/{{media_id}}\",\
             method=\"GET\",status=\"200\",outcome=\"{outcome}\"}}"
        )
    };
    for (n, len) in [1000, 2 * MIB].into_iter().enumerate() {
        let bytes = png_bytes(len);
        let id = f.upload(&bytes).await;
        let response = f.download(&id).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.bytes().await.unwrap() == bytes[..]);
        let complete = n as f64 + 1.0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while metric(&f.server, &request("complete")).await < complete {
            assert!(
                std::time::Instant::now() < deadline,
                "download {n} not counted as complete"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    assert_eq!(metric(&f.server, &request("aborted")).await, 0.0);

    let missing = f.client.get(f.server.url("/no/such/route")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let unmatched = "mediavault_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\",outcome=\"complete\"}";
    assert_eq!(metric(&f.server, unmatched).await, 1.0);
}

/// A file too large to verify whole before the status: a segment altered
/// far in cuts the body short of its Content-Length after only verified
/// bytes, and the download is counted and logged as cut, not as a plain 200.
#[tokio::test]
async fn a_large_file_altered_late_is_cut_and_counted() {
    let f = Fixture::new(Backends::PostgresS3).await;
    let len = 2 * MIB;
    let bytes = png_bytes(len);
    let (id, key) = f.upload_keyed(&bytes).await;
    let mut blob = f.stores.read_blob(&key).await;
    blob[20 * SEGMENT + 10] ^= 1;
    f.stores.write_blob(&key, blob).await;
    let response = f.download(&id).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (received, failed) = support::body_until_error(response).await;
    assert!(failed, "the body must end in an error");
    let verified = (SEGMENT - HEADER - 16) + 19 * (SEGMENT - 16);
    assert!(
        received.len() <= verified,
        "{} bytes, {verified} verified",
        received.len()
    );
    assert!(received == bytes[..received.len()], "only the file's own bytes");
    let cut = "mediavault_downloads_cut_total{reason=\"integrity\"}";
    assert_eq!(metric(&f.server, cut).await, 1.0);
    let request = |outcome: &str| {
        format!(
            "mediavault_http_requests_total{{route=\"/partner/app/{{app_id}}/media/{{media_id}}\",\
             method=\"GET\",status=\"200\",outcome=\"{outcome}\"}}"
        )
    };
    assert_eq!(
        metric(&f.server, &request("cut")).await,
        1.0,
        "the request counts as cut"
    );
    assert_eq!(
        metric(&f.server, &request("complete")).await,
        0.0,
        "not as a plain 200"
    );
    let log = f.server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("download cut short") && l.contains(&id)),
        "{log}"
    );
}

/// A download over a raw connection with a small receive buffer, read at a
/// pace the test sets, so that what the client has not read stays on the
/// server's side rather than in a large client buffer.
struct RawDownload {
    stream: TcpStream,
    status: u16,
    content_length: usize,
    received: usize,
    /// Body bytes as received (kept only when asked for).
    body: Option<Vec<u8>>,
    /// The connection ended (EOF or reset).
    ended: bool,
}

impl RawDownload {
    async fn start(server: &Server, app_id: &str, token: &str, media_id: &str, keep: bool) -> RawDownload {
        let path = format!("/partner/app/{app_id}/media/{media_id}");
        RawDownload::start_get(server, &path, &format!("token: {token}\r\n"), keep).await
    }

    /// A GET of `path` with `headers` (each line ending in CRLF).
    async fn start_get(server: &Server, path: &str, headers: &str, keep: bool) -> RawDownload {
        let addr: std::net::SocketAddr = server.base_url.trim_start_matches("http://").parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(64 * 1024).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "the head ended early");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let status = head[9..12].parse().unwrap();
        let content_length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        RawDownload {
            stream,
            status,
            content_length,
            received: 0,
            body: keep.then(Vec::new),
            ended: false,
        }
    }

    fn complete(&self) -> bool {
        self.received == self.content_length
    }

    /// Asserts that the whole body came (kept), and that it is `bytes`.
    fn assert_body(self, bytes: &[u8]) {
        assert!(self.complete(), "{} of {} bytes", self.received, bytes.len());
        assert!(self.body.unwrap() == bytes, "byte for byte");
    }

    /// Reads at `rate` bytes a second until `until` body bytes have come,
    /// the body is complete, or the connection ends.
    async fn read_at(&mut self, rate: usize, until: usize) {
        let started = Instant::now();
        let from = self.received;
        let mut buf = vec![0u8; 16 * 1024];
        while !self.ended && !self.complete() && self.received < until {
            match self.stream.read(&mut buf).await {
                Ok(0) | Err(_) => self.ended = true,
                Ok(n) => {
                    self.received += n;
                    if let Some(body) = &mut self.body {
                        body.extend_from_slice(&buf[..n]);
                    }
                }
            }
            let due = Duration::from_secs_f64((self.received - from) as f64 / rate as f64);
            tokio::time::sleep_until(started + due).await;
        }
    }

    /// Reads whatever else comes, as fast as it comes.
    async fn drain(&mut self) {
        self.read_at(usize::MAX / 2, usize::MAX).await
    }
}

/// With a store timeout of 2 s, a download read at 2 MiB/s for about 8 s
/// (far longer than the timeout, and far more than the socket buffers
/// hold) completes byte for byte: the timeout bounds the store's silences,
/// not the time the client takes.
#[tokio::test]
async fn a_slow_reader_outlasts_the_store_timeout() {
    let f = Fixture::with_env(Backends::PostgresS3, &[("MEDIAVAULT__BLOBS__TIMEOUT", "2s")]).await;
    let bytes = png_bytes(16 * MIB);
    let id = f.upload(&bytes).await;
    let mut download = RawDownload::start(&f.server, &f.app_id, &f.token, &id, true).await;
    assert_eq!(download.status, 200);
    download.read_at(2 * MIB, usize::MAX).await;
    download.assert_body(&bytes);
}

/// A download whose client stops reading gives up its read of the blob
/// store (and the connection it held) once it has waited a while, and picks
/// up where it stopped when the client reads again: whole, byte for byte.
#[tokio::test]
async fn a_stalled_download_gives_up_its_store_read_and_resumes() {
    let f = Fixture::new(Backends::PostgresS3).await;
    let bytes = png_bytes(24 * MIB);
    let id = f.upload(&bytes).await;
    let mut download = RawDownload::start(&f.server, &f.app_id, &f.token, &id, true).await;
    assert_eq!(download.status, 200);
    download.read_at(8 * MIB, MIB).await;
    // The buffers fill, then the download waits for its client.
    let port = store_port();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reading = store_reads_in_progress(f.server.pid(), port);
        if reading == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a stalled download still reads the store on {reading} connection(s)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    download.drain().await;
    download.assert_body(&bytes);
}

/// The port of the test blob store.
fn store_port() -> u16 {
    let endpoint = support::s3_blob_config().endpoint.expect("an S3 endpoint");
    endpoint
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Connections of process `pid` to local TCP `port` with bytes received and
/// not yet read: responses of the store in progress, as opposed to idle
/// connections kept for reuse.
fn store_reads_in_progress(pid: u32, port: u16) -> usize {
    let sockets: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|link| {
            Some(
                link.to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap();
    // sl local remote st tx_queue:rx_queue tr:when retrnsmt uid timeout inode
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| {
            let remote_port = fields[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let unread = fields[4]
                .split(':')
                .nth(1)
                .and_then(|q| u64::from_str_radix(q, 16).ok());
            remote_port == Some(port) && unread.is_some_and(|n| n > 0) && sockets.contains(fields[9])
        })
        .count()
}

/// A client that stops reading is cut once the server could send it
/// nothing for `server.send_timeout`: what it reads afterwards ends short.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut() {
    let f = Fixture::with_env(
        Backends::PostgresS3,
        &[("MEDIAVAULT__SERVER__SEND_TIMEOUT", "2s")],
    )
    .await;
    let id = f.upload(&png_bytes(16 * MIB)).await;
    let mut download = RawDownload::start(&f.server, &f.app_id, &f.token, &id, false).await;
    assert_eq!(download.status, 200);
    // Buffers fill, then nothing more can be sent for longer than the limit.
    tokio::time::sleep(Duration::from_secs(6)).await;
    download.drain().await;
    assert!(
        download.ended && !download.complete(),
        "{} bytes",
        download.received
    );
    assert_eq!(metric(&f.server, "mediavault_send_timeouts_total").await, 1.0);
    assert!(f.server.log().contains("connection cut"));
}

/// A client that takes a download slower than `server.min_download_rate`
/// over `server.min_download_rate_window` of its own time is cut, and its
/// slot given back: a client reading a large file a little at a time no
/// longer holds a slot for as long as it likes. At full speed the same
/// file is served whole under the same settings.
#[tokio::test]
async fn a_client_reading_below_the_minimum_rate_is_cut() {
    let f = Fixture::with_env(
        Backends::PostgresS3,
        &[
            ("MEDIAVAULT__SERVER__MIN_DOWNLOAD_RATE", "4194304"),
            ("MEDIAVAULT__SERVER__MIN_DOWNLOAD_RATE_WINDOW", "1s"),
            ("MEDIAVAULT__SERVER__MAX_CONCURRENT_DOWNLOADS", "1"),
            ("MEDIAVAULT__SERVER__MAX_CONCURRENT_DOWNLOADS_PER_APP", "1"),
        ],
    )
    .await;
    let file = png_bytes(32 * MIB);
    let id = f.upload(&file).await;
    let mut slow = RawDownload::start(&f.server, &f.app_id, &f.token, &id, false).await;
    assert_eq!(slow.status, 200);
    // A quarter of the minimum: cut after a second of its own time, then
    // it reads what the socket buffers still held.
    slow.read_at(MIB, usize::MAX).await;
    assert!(
        slow.ended && !slow.complete(),
        "{} of {} bytes",
        slow.received,
        slow.content_length
    );
    assert_eq!(
        metric(&f.server, "mediavault_downloads_cut_total{reason=\"slow\"}").await,
        1.0
    );

    let whole = f.download(&id).await;
    assert_eq!(whole.status(), StatusCode::OK, "the slot is back");
    assert!(whole.bytes().await.unwrap() == file, "byte for byte");
}

/// Past `server.max_concurrent_downloads` a download answers 503 with
/// Retry-After in the error shape; once a download ends, there is room.
/// (The one app here may hold every slot: its share is set to all of them.)
#[tokio::test]
async fn downloads_past_the_cap_are_503() {
    let f = Fixture::with_env(
        Backends::PostgresS3,
        &[
            ("MEDIAVAULT__SERVER__MAX_CONCURRENT_DOWNLOADS", "2"),
            ("MEDIAVAULT__SERVER__MAX_CONCURRENT_DOWNLOADS_PER_APP", "2"),
        ],
    )
    .await;
    let id = f.upload(&png_bytes(16 * MIB)).await;
    let first = RawDownload::start(&f.server, &f.app_id, &f.token, &id, false).await;
    let second = RawDownload::start(&f.server, &f.app_id, &f.token, &id, false).await;
    assert_eq!((first.status, second.status), (200, 200));
    let refused = f.download(&id).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["status"], "error", "{body}");
    let head = f.request(reqwest::Method::HEAD, &format!("/{id}"), &[]).await;
    assert_eq!(
        head.status(),
        StatusCode::OK,
        "HEAD sends no body and takes no slot"
    );

    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = f.download(&id).await;
        if response.status() == StatusCode::OK {
            assert_eq!(response.bytes().await.unwrap().len(), 16 * MIB);
            break;
        }
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            Instant::now() < deadline,
            "the slot of a closed download was never freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(second);
}

/// Bytes a client may still receive after a delete has answered: what sat
/// in buffers by then (the server's socket buffer of at most 4 MiB, hyper's
/// and the client's), far less than the rest of the file.
const AFTER_DELETE_BOUND: usize = 8 * MIB;

/// A download read slowly, and the media deleted through the same server
/// half way: the body stops short soon after the delete has answered.
#[tokio::test]
async fn a_delete_stops_a_download_in_progress() {
    let f = Fixture::new(Backends::PostgresS3).await;
    let id = f.upload(&png_bytes(50 * MIB)).await;
    let mut download = RawDownload::start(&f.server, &f.app_id, &f.token, &id, false).await;
    assert_eq!(download.status, 200);
    download.read_at(8 * MIB, 10 * MIB).await;
    let deleted = f.request(reqwest::Method::DELETE, &format!("/{id}"), &[]).await;
    assert_eq!(deleted.status(), StatusCode::OK);
    let at_delete = download.received;
    download.drain().await;
    assert!(download.ended && !download.complete());
    let after = download.received - at_delete;
    assert!(after < AFTER_DELETE_BOUND, "{after} bytes after the delete");
}

/// A link's download read slowly, and the token the link was made with
/// revoked half way, through the CLI: the body stops soon after, as for a
/// delete, as the link itself is refused from then on.
#[tokio::test]
async fn revoking_a_links_token_stops_its_download_in_progress() {
    let links_keys = mediavault_api::LinkKeys::generate_line("d1");
    let f = Fixture::with_env(Backends::PostgresS3, &[("MEDIAVAULT__LINKS__KEYS", &links_keys)]).await;
    let id = f.upload(&png_bytes(50 * MIB)).await;
    let asked = f
        .client
        .post(f.media_url_with(&format!("/{id}/link")))
        .header("token", &f.token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), StatusCode::OK);
    let url = asked.json::<Value>().await.unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = &url[url.find("/l/").unwrap()..];
    let mut download = RawDownload::start_get(&f.server, path, "", false).await;
    assert_eq!(download.status, 200);
    download.read_at(2 * MIB, 6 * MIB).await;
    let token_id = mediavault_storage::token_id_of(&f.token);
    let (ok, out, err) = cli(
        &f.stores,
        &[
            "tokens",
            "revoke",
            "--app",
            &f.app_id,
            "--token",
            token_id.as_str(),
        ],
    );
    assert!(ok, "{out} {err}");
    let at_revocation = download.received;
    // Still reading at the same pace: one second's worth beyond the buffers.
    download.read_at(2 * MIB, usize::MAX).await;
    assert!(download.ended && !download.complete());
    let after = download.received - at_revocation;
    assert!(
        after < AFTER_DELETE_BOUND + 2 * MIB,
        "{after} bytes after the revocation"
    );
}

/// Two replicas on one Postgres and Garage: a delete through one stops a
/// download streaming from the other, which re-reads its row every second.
#[tokio::test]
async fn a_delete_through_one_replica_stops_a_download_on_another() {
    let stores = Stores::new(Backends::PostgresS3).await;
    let (app_id, token) = app_and_token(&stores, true);
    let f = Fixture::serve(stores, app_id, token, &[]);
    let other = Server::start(&f.stores);
    let id = f.upload(&png_bytes(50 * MIB)).await;
    let mut download = RawDownload::start(&other, &f.app_id, &f.token, &id, false).await;
    assert_eq!(download.status, 200);
    download.read_at(2 * MIB, 6 * MIB).await;
    let deleted = f.request(reqwest::Method::DELETE, &format!("/{id}"), &[]).await;
    assert_eq!(deleted.status(), StatusCode::OK);
    let at_delete = download.received;
    // Still reading at the same pace: one second's worth beyond the buffers.
    download.read_at(2 * MIB, usize::MAX).await;
    assert!(download.ended && !download.complete());
    let after = download.received - at_delete;
    assert!(
        after < AFTER_DELETE_BOUND + 2 * MIB,
        "{after} bytes after the delete"
    );
}
