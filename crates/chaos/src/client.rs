//! The HTTP client side: a Gupshup-style upload, a download (whole or a
//! range) hashed as it streams, `/info` and delete. Nothing here retries: every call is one
//! attempt, and its outcome is what the caller records.

use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::files::FileSpec;

/// An app and its token.
#[derive(Debug, Clone)]
pub struct App {
    pub id: String,
    pub token: String,
}

/// Why one request did not succeed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The server answered with an unexpected status.
    Status(u16, String),
    /// The connection failed or was cut (a killed server, say).
    Transport(String),
    /// No complete answer within the client's timeout.
    Timeout,
    /// An answer that contradicts what was stored.
    Wrong(String),
}

impl Failure {
    /// A short label to tally failures by.
    pub fn kind(&self) -> String {
        match self {
            Failure::Status(status, _) => format!("HTTP {status}"),
            Failure::Transport(_) => "connection error".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Wrong(_) => "wrong content".into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(status, body) => write!(f, "HTTP {status}: {body}"),
            Failure::Transport(error) => write!(f, "connection error: {error}"),
            Failure::Timeout => write!(f, "timed out"),
            Failure::Wrong(why) => write!(f, "{why}"),
        }
    }
}

impl From<reqwest::Error> for Failure {
    fn from(error: reqwest::Error) -> Failure {
        if error.is_timeout() {
            Failure::Timeout
        } else {
            // The source chain says why (reset, refused, closed early).
            let mut text = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            Failure::Transport(text)
        }
    }
}

/// A client whose every request ends within `timeout`: a loopback request
/// that takes longer is a hang, and is reported as one.
pub fn http(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client")
}

/// A request to `{base}/partner/app/{app}/media{tail}` with the app's token.
fn media_request(
    client: &reqwest::Client,
    method: reqwest::Method,
    base: &str,
    app: &App,
    tail: &str,
) -> reqwest::RequestBuilder {
    client
        .request(method, format!("{base}/partner/app/{}/media{tail}", app.id))
        .header("token", &app.token)
}

/// Sends `request`; any answer but a success is a `Failure::Status`.
async fn send_ok(request: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
    let response = request.send().await?;
    let status = response.status();
    if status.is_success() {
        Ok(response)
    } else {
        let body = response.text().await.unwrap_or_default();
        Err(Failure::Status(status.as_u16(), body))
    }
}

/// Uploads the bytes of `spec`; returns the media id.
pub async fn upload(
    client: &reqwest::Client,
    base: &str,
    app: &App,
    spec: &FileSpec,
    bytes: Vec<u8>,
) -> Result<String, Failure> {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(spec.file_name())
        .mime_str(spec.mime_type())
        .expect("valid MIME type");
    let form = reqwest::multipart::Form::new()
        .text("file_type", spec.mime_type())
        .part("file", part);
    let request = media_request(client, reqwest::Method::POST, base, app, "").multipart(form);
    let reply: serde_json::Value = send_ok(request).await?.json().await?;
    match reply["mediaId"].as_str() {
        Some(id) if reply["status"] == "success" => Ok(id.to_owned()),
        _ => Err(Failure::Wrong(format!(
            "upload answered 200 without a media id: {reply}"
        ))),
    }
}

/// Downloads media `id`, hashing it as it streams; returns (sha256, bytes).
pub async fn download(
    client: &reqwest::Client,
    base: &str,
    app: &App,
    id: &str,
) -> Result<(String, u64), Failure> {
    let request = media_request(client, reqwest::Method::GET, base, app, &format!("/{id}"));
    hash_body(send_ok(request).await?).await
}

/// Downloads bytes `range` of media `id`, which must come as a 206;
/// returns (sha256, bytes) of what came.
pub async fn download_range(
    client: &reqwest::Client,
    base: &str,
    app: &App,
    id: &str,
    range: std::ops::Range<u64>,
) -> Result<(String, u64), Failure> {
    let request = media_request(client, reqwest::Method::GET, base, app, &format!("/{id}"))
        .header("range", format!("bytes={}-{}", range.start, range.end - 1));
    let response = send_ok(request).await?;
    if response.status() != reqwest::StatusCode::PARTIAL_CONTENT {
        return Err(Failure::Wrong(format!(
            "range {range:?} of {id} answered {} instead of 206",
            response.status()
        )));
    }
    hash_body(response).await
}

/// Hashes a body as it streams: (sha256, bytes).
async fn hash_body(mut response: reqwest::Response) -> Result<(String, u64), Failure> {
    let (mut hasher, mut length) = (Sha256::new(), 0u64);
    while let Some(chunk) = response.chunk().await? {
        hasher.update(&chunk);
        length += chunk.len() as u64;
    }
    Ok((hex::encode(hasher.finalize()), length))
}

/// `/info` of media `id`: (sha256, fileSize).
pub async fn info(
    client: &reqwest::Client,
    base: &str,
    app: &App,
    id: &str,
) -> Result<(String, u64), Failure> {
    let request = media_request(client, reqwest::Method::GET, base, app, &format!("/{id}/info"));
    let reply: serde_json::Value = send_ok(request).await?.json().await?;
    match (reply["sha256"].as_str(), reply["fileSize"].as_u64()) {
        (Some(sha256), Some(size)) => Ok((sha256.to_owned(), size)),
        _ => Err(Failure::Wrong(format!(
            "info without sha256 or fileSize: {reply}"
        ))),
    }
}

pub async fn delete(client: &reqwest::Client, base: &str, app: &App, id: &str) -> Result<(), Failure> {
    let request = media_request(client, reqwest::Method::DELETE, base, app, &format!("/{id}"));
    send_ok(request).await.map(drop)
}

/// Downloads and `/info` of media `id` both agree with what was uploaded.
pub async fn verify(
    client: &reqwest::Client,
    base: &str,
    app: &App,
    id: &str,
    sha256: &str,
    size: u64,
) -> Result<(), Failure> {
    let (got_sha, got_size) = download(client, base, app, id).await?;
    if got_sha != sha256 || got_size != size {
        return Err(Failure::Wrong(format!(
            "download of {id}: {got_size} bytes, sha256 {got_sha}; uploaded {size} bytes, sha256 {sha256}"
        )));
    }
    let (info_sha, info_size) = info(client, base, app, id).await?;
    if info_sha != sha256 || info_size != size {
        return Err(Failure::Wrong(format!(
            "info of {id}: {info_size} bytes, sha256 {info_sha}; uploaded {size} bytes, sha256 {sha256}"
        )));
    }
    Ok(())
}
