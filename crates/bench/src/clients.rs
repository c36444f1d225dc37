//! The two ways a file gets stored and fetched in a run: through mediavault's
//! HTTP API, and straight into the same store with object_store (the
//! baseline). Downloads are checked byte for byte against what was sent, so a
//! fast figure can never come from a wrong answer.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use reqwest::multipart::{Form, Part};

const PNG_HEADER: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

/// `len` bytes that sniff as PNG and do not compress, different for every
/// call. Garage stores blocks by content hash: uploading the same bytes twice
/// would let the raw baseline skip writes that mediavault's ciphertext,
/// always new, never skips.
pub fn png_file(len: usize) -> Bytes {
    let mut state = uuid::Uuid::new_v4().as_u64_pair().0 | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    let n = PNG_HEADER.len().min(len);
    bytes[..n].copy_from_slice(&PNG_HEADER[..n]);
    Bytes::from(bytes)
}

/// `file` with 16 random bytes after its PNG header: a small file of its
/// own for every request, for the reason `png_file` gives.
pub fn stamped(file: &[u8]) -> Bytes {
    let mut bytes = file.to_vec();
    let at = PNG_HEADER.len().min(bytes.len());
    let end = (at + 16).min(bytes.len());
    bytes[at..end].copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..end - at]);
    Bytes::from(bytes)
}

/// Consumes a body stream, failing unless it is exactly `expected`.
async fn expect_body<E: std::error::Error + Send + Sync + 'static>(
    mut body: impl futures::Stream<Item = Result<Bytes, E>> + Unpin,
    expected: &[u8],
) -> anyhow::Result<()> {
    let mut offset = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let end = offset + chunk.len();
        ensure!(
            end <= expected.len() && chunk[..] == expected[offset..end],
            "downloaded bytes differ from the upload at offset {offset}"
        );
        offset = end;
    }
    ensure!(
        offset == expected.len(),
        "download ended at {offset} of {}",
        expected.len()
    );
    Ok(())
}

/// One app of a running mediavault, over HTTP.
#[derive(Clone)]
pub struct MediaClient {
    http: reqwest::Client,
    media_url: Arc<str>,
    token: Arc<str>,
}

impl MediaClient {
    pub fn new(base_url: &str, app_id: &str, token: &str) -> anyhow::Result<MediaClient> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(300))
            .build()?;
        Ok(MediaClient {
            http,
            media_url: format!("{base_url}/partner/app/{app_id}/media").into(),
            token: token.into(),
        })
    }

    /// Uploads `file` as a Gupshup client does; returns the media id.
    pub async fn upload(&self, file: Bytes) -> anyhow::Result<String> {
        let len = file.len() as u64;
        // A streamed part shares the caller's buffer instead of copying it
        // per request; its known length keeps Content-Length on the request.
        let part = Part::stream_with_length(file, len)
            .file_name("bench.png")
            .mime_str("image/png")?;
        let form = Form::new().text("file_type", "image/png").part("file", part);
        self.post_upload(form, "upload").await
    }

    /// Has the server fetch the file at `url` (upload by URL); returns the media id.
    pub async fn upload_by_url(&self, url: &str) -> anyhow::Result<String> {
        let form = Form::new()
            .text("file_type", "image/png")
            .text("file", url.to_owned());
        self.post_upload(form, "upload by URL").await
    }

    /// Sends an upload form; returns the media id of its reply. `what`
    /// names the upload in the error of any other answer.
    async fn post_upload(&self, form: Form, what: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .post(&*self.media_url)
            .header("token", &*self.token)
            .multipart(form)
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{what} answered {status}: {body}");
        }
        Ok(body["mediaId"]
            .as_str()
            .context("mediaId in the reply")?
            .to_owned())
    }

    /// Downloads `media_id` whole and checks it is `expected`.
    pub async fn download(&self, media_id: &str, expected: &[u8]) -> anyhow::Result<()> {
        let response = self
            .http
            .get(format!("{}/{media_id}", self.media_url))
            .header("token", &*self.token)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            bail!("download answered {status}");
        }
        expect_body(response.bytes_stream(), expected).await
    }

    /// Asks for `media_id`'s metadata (`GET …/info`); fails unless it answers 200.
    pub async fn info(&self, media_id: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .get(format!("{}/{media_id}/info", self.media_url))
            .header("token", &*self.token)
            .send()
            .await?;
        let status = response.status();
        response.bytes().await?;
        ensure!(status.is_success(), "info answered {status}");
        Ok(())
    }

    pub async fn delete(&self, media_id: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .delete(format!("{}/{media_id}", self.media_url))
            .header("token", &*self.token)
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "delete answered {}",
            response.status()
        );
        Ok(())
    }
}

/// The same store as the server's, used directly.
#[derive(Clone)]
pub struct RawClient {
    store: Arc<dyn ObjectStore>,
}

impl RawClient {
    pub fn new(store: Arc<dyn ObjectStore>) -> RawClient {
        RawClient { store }
    }

    /// A multipart upload in parts of the server's size
    /// (`mediavault_storage::PART_SIZE`), as many in flight as
    /// `WriteMultipart` sends.
    pub async fn put_multipart(&self, key: &str, file: Bytes) -> anyhow::Result<()> {
        let upload = self.store.put_multipart(&Path::from(key)).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, mediavault_storage::PART_SIZE);
        writer.put(file);
        writer.finish().await?;
        Ok(())
    }

    /// One plain PUT.
    pub async fn put(&self, key: &str, file: Bytes) -> anyhow::Result<()> {
        self.store.put(&Path::from(key), PutPayload::from(file)).await?;
        Ok(())
    }

    /// Fetches `key` whole and checks it is `expected`. A local file is read
    /// in one call: `into_stream` would read it 8 KiB at a time, a cost of
    /// object_store's defaults rather than of the disk, which would flatter
    /// any reader that does better.
    pub async fn get(&self, key: &str, expected: &[u8]) -> anyhow::Result<()> {
        let result = self.store.get(&Path::from(key)).await?;
        match result.payload {
            GetResultPayload::File(..) => {
                let bytes = result.bytes().await?;
                ensure!(bytes[..] == *expected, "read bytes differ from the upload");
                Ok(())
            }
            GetResultPayload::Stream(_) => expect_body(result.into_stream(), expected).await,
        }
    }

    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.store.delete(&Path::from(key)).await?;
        Ok(())
    }
}
