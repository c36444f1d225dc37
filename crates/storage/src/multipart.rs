//! Incomplete S3 multipart uploads the service left behind. An upload whose
//! abort failed — the store was down when it was undone, or the process died
//! — keeps its parts, stored and billed but invisible to object listings,
//! until someone aborts it. Correctness must not hang on a bucket lifecycle
//! rule, so the orphan sweep aborts those under the service's key prefix
//! that are older than `reaper.stale_upload_after`.
//!
//! object_store aborts multipart uploads but cannot list them: the listing
//! (ListMultipartUploads) is sent here, as a URL presigned by object_store's
//! own SigV4 signer, with the store's own credentials, endpoint and HTTP
//! client options.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use object_store::MultipartId;
use object_store::aws::AmazonS3;
use object_store::client::{ClientOptions, HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::signer::{SignedUrlOptions, Signer};
use serde::Deserialize;

use crate::blobs::MEDIA_PREFIX;
use crate::error::StoreError;

/// How long a presigned listing URL stays valid: it is used at once.
const SIGNED_FOR: Duration = Duration::from_secs(300);

/// Lists and aborts the multipart uploads under the service's key prefix.
pub(crate) struct MultipartUploads {
    s3: Arc<AmazonS3>,
    client: HttpClient,
    /// The full key prefix: the store's prefix, then `media/`.
    key_prefix: String,
    timeout: Duration,
}

/// One incomplete multipart upload, as listed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listed {
    key: String,
    upload_id: String,
    /// RFC 3339, as S3 writes it.
    initiated: String,
}

/// One page of ListMultipartUploads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListPage {
    #[serde(default, rename = "Upload")]
    uploads: Vec<Listed>,
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
}

fn failure(why: impl Into<String>) -> StoreError {
    StoreError::Blobs(object_store::Error::Generic {
        store: "S3 multipart uploads",
        source: why.into().into(),
    })
}

impl MultipartUploads {
    /// For the bucket `s3` reaches, the uploads whose keys start with
    /// `key_prefix` (the store's prefix and the service's `media/`).
    pub(crate) fn new(
        s3: Arc<AmazonS3>,
        key_prefix: String,
        options: &ClientOptions,
        timeout: Duration,
    ) -> Result<MultipartUploads, StoreError> {
        Ok(MultipartUploads {
            s3,
            client: ReqwestConnector::default().connect(options)?,
            key_prefix,
            timeout,
        })
    }

    /// Aborts the multipart uploads under the key prefix initiated before
    /// `cutoff`, but for those of the blobs `running` names (blob keys, as
    /// rows hold them); returns how many it aborted. A failed listing fails
    /// the call; a failed abort is logged and left for the next sweep.
    pub(crate) async fn abort_initiated_before(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
        running: &HashSet<String>,
    ) -> Result<u64, StoreError> {
        let mut aborted = 0;
        let mut marker = None;
        loop {
            let page = self.list_page(marker.as_ref()).await?;
            for upload in &page.uploads {
                if self.is_stale(upload, cutoff)
                    && !self.is_running(upload, running)
                    && self.abort(upload).await
                {
                    aborted += 1;
                }
            }
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(key), Some(id)) => marker = Some((key, id)),
                _ => return Ok(aborted),
            }
        }
    }

    /// Whether `upload` is the blob of a row in `running`: its key is the
    /// store's prefix, then the blob key.
    fn is_running(&self, upload: &Listed, running: &HashSet<String>) -> bool {
        let store_prefix = self.key_prefix.strip_suffix(&format!("{MEDIA_PREFIX}/"));
        let blob_key = store_prefix.and_then(|prefix| upload.key.strip_prefix(prefix));
        blob_key.is_some_and(|key| running.contains(key))
    }

    fn is_stale(&self, upload: &Listed, cutoff: chrono::DateTime<chrono::Utc>) -> bool {
        let initiated = chrono::DateTime::parse_from_rfc3339(&upload.initiated);
        // The listing was asked for the prefix; a store that ignored that
        // must not lead to anything else being aborted.
        upload.key.starts_with(&self.key_prefix) && initiated.is_ok_and(|at| at < cutoff)
    }

    /// One page of the listing, after `marker` (key and upload id).
    async fn list_page(&self, marker: Option<&(String, String)>) -> Result<ListPage, StoreError> {
        let mut query = vec![("uploads", ""), ("prefix", self.key_prefix.as_str())];
        if let Some((key, id)) = marker {
            query.extend([("key-marker", key.as_str()), ("upload-id-marker", id.as_str())]);
        }
        let options = SignedUrlOptions::default().with_query(query);
        let call = async {
            let url = self
                .s3
                .signed_url_opts(http::Method::GET, &Path::default(), SIGNED_FOR, &options)
                .await?;
            let request = http::Request::get(url.as_str())
                .body(HttpRequestBody::empty())
                .map_err(|e| failure(e.to_string()))?;
            let response = self
                .client
                .execute(request)
                .await
                .map_err(|e| failure(e.to_string()))?;
            let status = response.status();
            let body = response
                .into_body()
                .bytes()
                .await
                .map_err(|e| failure(e.to_string()))?;
            let text = String::from_utf8_lossy(&body);
            if !status.is_success() {
                let detail: String = text.chars().take(300).collect();
                return Err(failure(format!("listing answered {status}: {detail}")));
            }
            quick_xml::de::from_str::<ListPage>(&text)
                .map_err(|e| failure(format!("listing unreadable: {e}")))
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    /// Aborts one upload; `false` if the store refused or did not answer.
    async fn abort(&self, upload: &Listed) -> bool {
        let Ok(path) = Path::parse(&upload.key) else {
            tracing::warn!(key = %upload.key, "multipart upload key is not a valid path; left alone");
            return false;
        };
        let id: MultipartId = upload.upload_id.clone();
        match tokio::time::timeout(self.timeout, self.s3.abort_multipart(&path, &id)).await {
            Ok(Ok(())) => {
                tracing::info!(key = %upload.key, initiated = %upload.initiated, "stale multipart upload aborted");
                true
            }
            Ok(Err(error)) => {
                tracing::warn!(key = %upload.key, %error, "could not abort a stale multipart upload");
                false
            }
            Err(_) => {
                tracing::warn!(key = %upload.key, "aborting a stale multipart upload timed out");
                false
            }
        }
    }
}
