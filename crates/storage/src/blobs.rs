//! The blob store: where ciphertext lives. One wrapper over `object_store`
//! for every backend (local directory, S3-compatible, memory), which bounds
//! every call by `timeout` and maps "not found" in exactly one place.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    ClientOptions, GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig, WriteMultipart,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::error::StoreError;

/// How to reach the blob store.
#[derive(Debug, Clone)]
pub struct BlobConfig {
    /// A path, `file:///abs/path`, `s3://bucket[/prefix]` or `memory://`.
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub allow_http: bool,
    /// Bound on one store call, retries included.
    pub timeout: Duration,
}

impl BlobConfig {
    /// A blob store in a local directory, with defaults for the rest.
    pub fn local(url: impl Into<String>) -> BlobConfig {
        BlobConfig {
            url: url.into(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            timeout: Duration::from_secs(30),
        }
    }
}

/// S3 parts are at least 5 MiB; larger parts mean fewer requests, smaller
/// ones less memory per upload. A file below this size is one plain PUT.
pub const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts of one upload in flight at once while the next one fills.
const PARTS_IN_FLIGHT: usize = 2;
/// Reads of a local blob: object_store's own 8 KiB reads each take a trip
/// through the blocking pool, which cost most of a download's CPU time;
/// 256 KiB (four segments) makes that trip rare and stays small per download.
const LOCAL_READ_CHUNK: usize = 256 * 1024;

#[derive(Clone)]
pub(crate) struct Blobs {
    store: Arc<dyn ObjectStore>,
    timeout: Duration,
    /// Blob bytes fetched by reads since start.
    bytes_read: Arc<AtomicU64>,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blobs({})", self.store)
    }
}

impl Blobs {
    pub(crate) fn open(config: &BlobConfig) -> Result<Blobs, StoreError> {
        let bad = |why: String| StoreError::Config(format!("blobs.url {:?}: {why}", config.url));
        let url = config.url.trim();
        let store: Arc<dyn ObjectStore> = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("names no bucket".into()));
            }
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_allow_http(config.allow_http)
                .with_client_options(
                    ClientOptions::new()
                        .with_allow_http(config.allow_http)
                        .with_timeout(config.timeout)
                        .with_connect_timeout(config.timeout.min(Duration::from_secs(5))),
                )
                .with_retry(RetryConfig {
                    retry_timeout: config.timeout,
                    max_retries: 3,
                    ..RetryConfig::default()
                });
            if let Some(endpoint) = &config.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(region) = &config.region {
                builder = builder.with_region(region);
            }
            if let Some(id) = &config.access_key_id {
                builder = builder.with_access_key_id(id);
            }
            if let Some(secret) = &config.secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            let s3 = Arc::new(builder.build().map_err(|e| bad(e.to_string()))?);
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                s3
            } else {
                Arc::new(PrefixStore::new(s3, prefix))
            }
        } else if url == "memory://" {
            Arc::new(InMemory::new())
        } else {
            let dir = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
            if url.contains("://") && !url.starts_with("file://") {
                return Err(bad("use a path, file://, s3:// or memory://".into()));
            }
            std::fs::create_dir_all(&dir).map_err(|e| bad(e.to_string()))?;
            Arc::new(LocalFileSystem::new_with_prefix(&dir).map_err(|e| bad(e.to_string()))?)
        };
        Ok(Blobs {
            store,
            timeout: config.timeout,
            bytes_read: Arc::default(),
        })
    }

    /// Runs one store call within the configured bound.
    async fn bounded<T>(&self, call: impl Future<Output = object_store::Result<T>>) -> Result<T, StoreError> {
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(StoreError::from),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        // "Not found" is an answer, not a failure of the store.
        if let Err(error) = &result
            && !matches!(error, StoreError::Blobs(object_store::Error::NotFound { .. }))
        {
            metrics::counter!("mediavault_blob_store_errors_total").increment(1);
        }
        result
    }

    pub(crate) fn writer(&self, key: &str) -> BlobWriter {
        BlobWriter {
            blobs: self.clone(),
            path: Path::from(key),
            state: WriterState::Buffering(Vec::new()),
        }
    }

    /// Streams `range` of the blob at `key`; each chunk is bounded by the timeout.
    pub(crate) async fn read_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        let result = self
            .bounded(self.store.get_opts(&Path::from(key), options))
            .await?;
        let timeout = self.timeout;
        let bytes_read = self.bytes_read.clone();
        let stream = match result.payload {
            GetResultPayload::File(file, path) => local_file_stream(file, path, result.range),
            GetResultPayload::Stream(stream) => stream,
        }
        .map_err(StoreError::from);
        Ok(futures::stream::unfold(stream, move |mut stream| {
            let bytes_read = bytes_read.clone();
            async move {
                match tokio::time::timeout(timeout, stream.next()).await {
                    Ok(Some(item)) => {
                        if let Ok(chunk) = &item {
                            bytes_read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        }
                        Some((item, stream))
                    }
                    Ok(None) => None,
                    Err(_) => Some((Err(StoreError::Timeout(timeout)), stream)),
                }
            }
        })
        .boxed())
    }

    pub(crate) fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Deletes one blob; a blob that is already gone counts as deleted.
    pub(crate) async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.bounded(self.store.delete(&Path::from(key))).await {
            Err(StoreError::Blobs(object_store::Error::NotFound { .. })) => Ok(()),
            other => other,
        }
    }

    /// Deletes many blobs; returns the keys that could not be deleted (a blob
    /// already gone counts as deleted). On S3 this is bulk DeleteObjects (up
    /// to 1,000 keys a request); a key the bulk call does not confirm gets a
    /// single delete of its own, which knows "not found" for what it is.
    pub(crate) async fn delete_many(&self, keys: Vec<String>) -> Vec<String> {
        if keys.is_empty() {
            return Vec::new();
        }
        let paths = futures::stream::iter(keys.clone().into_iter().map(|k| Ok(Path::from(k)))).boxed();
        let confirmed: HashSet<String> =
            match tokio::time::timeout(self.timeout, self.store.delete_stream(paths).collect::<Vec<_>>())
                .await
            {
                Ok(results) => results
                    .into_iter()
                    .filter_map(|r| r.ok())
                    .map(|p| p.to_string())
                    .collect(),
                Err(_) => HashSet::new(),
            };
        let unconfirmed = keys.into_iter().filter(|k| !confirmed.contains(k));
        let retried = futures::stream::iter(unconfirmed)
            .map(|key| async move {
                let result = self.delete(&key).await;
                (key, result)
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        retried
            .into_iter()
            .filter_map(|(key, result)| {
                let error = result.err()?;
                tracing::warn!(blob_key = %key, %error, "blob delete failed");
                Some(key)
            })
            .collect()
    }

    /// Every blob with its last-modified time, for the orphan sweep.
    pub(crate) async fn list_with_times(
        &self,
    ) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>)>, StoreError> {
        self.bounded(
            self.store
                .list(None)
                .map_ok(|meta| (meta.location.to_string(), meta.last_modified))
                .try_collect(),
        )
        .await
    }

    /// Every blob key in the store (under its prefix).
    pub(crate) async fn list_keys(&self) -> Result<Vec<String>, StoreError> {
        self.bounded(
            self.store
                .list(None)
                .map_ok(|meta| meta.location.to_string())
                .try_collect(),
        )
        .await
    }

    /// Answers whether the store is reachable, without writing.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        match self
            .bounded(self.store.head(&Path::from("readiness-probe")))
            .await
        {
            Ok(_) | Err(StoreError::Blobs(object_store::Error::NotFound { .. })) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// `range` of a local blob file, in `LOCAL_READ_CHUNK` pieces.
fn local_file_stream(
    file: std::fs::File,
    path: PathBuf,
    range: std::ops::Range<u64>,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    let opened = async move {
        let mut file = tokio::fs::File::from_std(file);
        file.seek(std::io::SeekFrom::Start(range.start)).await?;
        std::io::Result::Ok(ReaderStream::with_capacity(
            file.take(range.end - range.start),
            LOCAL_READ_CHUNK,
        ))
    };
    futures::stream::once(opened)
        .try_flatten()
        .map_err(move |source| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: format!("reading {}: {source}", path.display()).into(),
        })
        .boxed()
}

enum WriterState {
    /// Small files never leave this state: one PUT when finished.
    Buffering(Vec<u8>),
    /// Past one part's size: a multipart upload with bounded parts in flight.
    Multipart(WriteMultipart),
    Closed,
}

/// Writes one blob: buffers up to one part, then switches to a multipart
/// upload. Memory per upload stays near `PART_SIZE * (1 + PARTS_IN_FLIGHT)`.
pub(crate) struct BlobWriter {
    blobs: Blobs,
    path: Path,
    state: WriterState,
}

impl BlobWriter {
    pub(crate) async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        match &mut self.state {
            WriterState::Buffering(buffer) => {
                buffer.extend_from_slice(data);
                if buffer.len() >= PART_SIZE {
                    let buffer = std::mem::take(buffer);
                    let upload = self
                        .blobs
                        .bounded(self.blobs.store.put_multipart(&self.path))
                        .await?;
                    let mut multipart = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                    multipart.put(Bytes::from(buffer));
                    self.state = WriterState::Multipart(multipart);
                }
            }
            WriterState::Multipart(multipart) => {
                self.blobs
                    .bounded(multipart.wait_for_capacity(PARTS_IN_FLIGHT))
                    .await?;
                multipart.write(data);
            }
            WriterState::Closed => unreachable!("write after close"),
        }
        Ok(())
    }

    /// Completes the blob; only then is it visible under its key.
    pub(crate) async fn finish(&mut self) -> Result<(), StoreError> {
        match std::mem::replace(&mut self.state, WriterState::Closed) {
            WriterState::Buffering(buffer) => {
                let payload = PutPayload::from(Bytes::from(buffer));
                self.blobs
                    .bounded(self.blobs.store.put(&self.path, payload))
                    .await?;
            }
            WriterState::Multipart(multipart) => {
                self.blobs.bounded(multipart.finish()).await?;
            }
            WriterState::Closed => {}
        }
        Ok(())
    }

    /// Abandons the blob: aborts a multipart upload and removes a blob that
    /// was already completed. Safe to call in any state.
    pub(crate) async fn abort(&mut self) -> Result<(), StoreError> {
        match std::mem::replace(&mut self.state, WriterState::Closed) {
            WriterState::Buffering(_) => Ok(()),
            WriterState::Multipart(multipart) => self.blobs.bounded(multipart.abort()).await,
            WriterState::Closed => self.blobs.delete(self.path.as_ref()).await,
        }
    }
}
