//! The blob store: where ciphertext lives. One wrapper over `object_store`
//! for every backend (local directory, S3-compatible, memory), which bounds
//! every call by `timeout` and maps "not found" in exactly one place. A read
//! is bounded by its progress (the answer, then each silence between chunks
//! while the reader waits), never by its length: a body streams for as long
//! as the client takes to read it.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    ClientOptions, GetOptions, GetRange, GetResultPayload, MultipartUpload, ObjectStore, ObjectStoreExt,
    PutPayload, RetryConfig,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::io::ReaderStream;

use crate::error::StoreError;
use crate::multipart::MultipartUploads;
use crate::part_blocks::{BlockPool, PartBuffer};
use crate::store_room::{RoomTaken, StoreRoom, local_store_error};

/// How to reach the blob store.
#[derive(Debug, Clone)]
pub struct BlobConfig {
    /// A path, `file:///abs/path`, `s3://bucket[/prefix]` or `memory://`.
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    pub allow_http: bool,
    /// Sign S3 requests with `UNSIGNED-PAYLOAD` instead of the body's
    /// SHA-256. `None` chooses by the endpoint: unsigned over HTTPS, where
    /// TLS already guards the bytes in transit, signed over plain HTTP.
    pub unsigned_payload: Option<bool>,
    /// Bound on one store call, retries included; for reads, on the answer
    /// and on each wait for the next chunk of the body.
    pub timeout: Duration,
    /// A local store only: the free space uploads leave on its file system
    /// (see `Blobs::take_room`). Remote stores manage their own capacity.
    pub min_free_bytes: u64,
}

/// `blobs.min_free_bytes` unless configured: room for the database beside
/// the blobs to go on writing, deletes and the reaper's among them.
const DEFAULT_MIN_FREE_BYTES: u64 = 1024 * 1024 * 1024;

impl BlobConfig {
    /// The directory of a local blob store (a path or `file://` URL); `None`
    /// for S3, memory, or a scheme the store does not know.
    pub fn local_dir(&self) -> Option<PathBuf> {
        let url = self.url.trim();
        if let Some(path) = url.strip_prefix("file://") {
            return Some(PathBuf::from(path));
        }
        (!url.contains("://")).then(|| PathBuf::from(url))
    }

    /// A blob store in a local directory, with defaults for the rest.
    pub fn local(url: impl Into<String>) -> BlobConfig {
        BlobConfig {
            url: url.into(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            unsigned_payload: None,
            timeout: Duration::from_secs(30),
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
        }
    }
}

/// S3 parts are at least 5 MiB; larger parts mean fewer requests, smaller
/// ones less memory per upload. A file below this size is one plain PUT.
pub const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts in flight at once across all uploads of the process. Besides these,
/// an upload holds only the part it is filling, so many uploads at once stay
/// bounded by 64 MiB and 8 MiB an upload: sixteen of 100 MiB peaked at
/// 178-190 MiB with 8 here, at about the same aggregate speed (182-207 MiB/s
/// against 193-219), and at 218-236 MiB with 16 (296 MiB with 24; 252 MiB
/// with the former 2 per upload and no shared bound, which let 64 uploads
/// hold 960 MiB); 159-160 MiB with 8 since parts' blocks are reused
/// (`part_blocks`).
const PARTS_IN_FLIGHT_TOTAL: usize = 8;
/// Parts of one upload in flight at once. With the full part waiting for
/// room (nothing more is filled meanwhile), an upload holds at most nine
/// parts (45 MiB) however slowly the store takes them: within the 64 MiB a
/// lone upload may add to the process (with 16, a stalled store let one
/// upload grow the server by 82-87 MiB; `STALL=4 bench/upload-rss.sh s3`).
/// Stores take parallel parts faster: on Garage a 100 MiB upload ran at 0.71
/// of a raw put with 2 in flight, about 0.78 with 8 and 0.80-0.86 with 16.
/// Uploads at once share the process budget in arrival order; with the
/// budget at 8 too, a lone upload may use all of it.
const PARTS_IN_FLIGHT_PER_UPLOAD: usize = 8;
/// Reads of a local blob: object_store's own 8 KiB reads each take a trip
/// through the blocking pool, which cost most of a download's CPU time;
/// 256 KiB (four segments) makes that trip rare and stays small per download.
const LOCAL_READ_CHUNK: usize = 256 * 1024;
/// Chunks of a remote blob that may wait, read, for the download to take
/// them (each at most `READ_AHEAD_UNIT`).
const READ_AHEAD_CHUNKS: usize = 16;
/// Bytes read ahead and not yet taken, across all downloads of the process.
/// A download whose reader waits may always fetch its next chunk, so the
/// budget slows no one who keeps up; it bounds what slow readers hold.
const READ_AHEAD_BUDGET: usize = 4 * 1024 * 1024;
/// The most a chunk read ahead holds, and the share of the budget it takes.
/// hyper's chunks (up to ~400 KiB) are cut to this size, so that a download
/// waiting for its client holds one such chunk, not one of hyper's.
const READ_AHEAD_UNIT: u32 = 64 * 1024;
/// A remote blob is read in windows, one ranged GET each, so that no GET
/// outlives a reader that stops taking. The first window is this size, and
/// each next one twice the last, up to `LAST_WINDOW`, while the reader keeps
/// up: a fast download makes a GET per 16 MiB or so, a slow one's GETs stay
/// small, and what a window it gives up had fetched is little.
const FIRST_WINDOW: u64 = 1024 * 1024;
const LAST_WINDOW: u64 = 16 * 1024 * 1024;
/// Windows fetched ahead of the one being read, each a ranged GET of its own
/// running at once with the others, so that a download is not bound by the
/// latency of one stream: the store answers several while the server
/// decrypts and sends what came before. They are taken in order.
const WINDOWS_AHEAD: usize = 3;
/// The size of a window fetched ahead.
const AHEAD_WINDOW: u64 = 4 * 1024 * 1024;
/// Bytes of windows fetched ahead, across all downloads of the process. A
/// window is fetched ahead only when its whole size fits in what is left,
/// and holds it until read; otherwise the read goes on one window at a
/// time, as fast as before. A read whose reader stalls (`STALL`) gives its
/// windows up, so slow readers hold none of it for long.
const WINDOWS_AHEAD_BUDGET: usize = 48 * 1024 * 1024;
/// How long a remote read waits for its reader to take before it gives up
/// its window's GET. An open GET holds a store connection, and the HTTP
/// client's read buffer for it (up to ~400 KiB, not ours to size), for as
/// long as the client takes. The next chunk the reader wants opens a window where the last one stopped.
const STALL: Duration = Duration::from_secs(1);

/// The service's own key prefix: every blob key starts with it, and listings
/// and sweeps look nowhere else in the bucket or directory.
pub(crate) const MEDIA_PREFIX: &str = "media";

/// The object naming the installation whose blobs the store holds, beside
/// `MEDIA_PREFIX` (see `Vault::claim_blob_store`).
const OWNER_MARKER: &str = "mediavault-installation";

/// Whether `key` is one `new_blob_key` makes, or one of the flat layout
/// before it: the orphan sweep deletes nothing else, such as the blobs of
/// another installation whose prefix is nested in this one's
/// (`s3://b/media` beside `s3://b`: `media/media/<xy>/<hex>`).
pub(crate) fn is_blob_key(key: &str) -> bool {
    let hex = |name: &str| name.len() == 32 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let Some(rest) = key.strip_prefix(MEDIA_PREFIX).and_then(|r| r.strip_prefix('/')) else {
        return false;
    };
    match rest.split_once('/') {
        Some((fan, name)) => hex(name) && name.starts_with(fan) && fan.len() == 2,
        None => hex(rest),
    }
}

/// A fresh blob key: `media/<xy>/<32 hex digits>`, `xy` the first two of
/// them. The fan-out is for the local store, where a key is a path: every
/// create, rename and unlink in one directory queues on that directory's
/// lock, and ext4 without `large_dir` refuses new names in a directory once
/// its index is full (ENOSPC with the disk half empty), at about ten
/// million 32-character names with 4 KiB blocks: a month of uploads at four
/// a second. In 256 directories that is 2.5 billion. Keys of the flat
/// layout before it (`media/<32 hex digits>`) stay valid wherever a row
/// names them; nothing parses a key.
pub(crate) fn new_blob_key() -> String {
    let name = uuid::Uuid::new_v4().simple().to_string();
    format!("{MEDIA_PREFIX}/{}/{name}", &name[..2])
}

#[derive(Clone)]
pub(crate) struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// The directory of a local store, whose staging files the store's own
    /// listings do not show.
    local_dir: Option<PathBuf>,
    /// A local store's room for uploads; other stores manage their own
    /// capacity.
    room: Option<StoreRoom>,
    timeout: Duration,
    /// Blob bytes fetched by reads since start.
    bytes_read: Arc<AtomicU64>,
    /// Permits for parts in flight, shared by all uploads.
    part_budget: Arc<Semaphore>,
    /// The blocks parts are filled in, shared by all uploads.
    part_blocks: Arc<BlockPool>,
    /// S3 only: incomplete multipart uploads, for the sweep.
    multipart: Option<Arc<MultipartUploads>>,
    /// Permits (bytes) for chunks read ahead, shared by all downloads.
    read_ahead_budget: Arc<Semaphore>,
    /// Permits (bytes) for windows fetched ahead, shared by all downloads.
    windows_ahead_budget: Arc<Semaphore>,
    /// Whether reads fetch the blob in windows (remote stores): a local file
    /// is read at the reader's pace without holding anything but the file.
    windowed: bool,
    /// S3 only: the bucket and the service's full key prefix in it, for
    /// `ping`'s listing of at most one key.
    probe: Option<(Arc<dyn PaginatedListStore>, String)>,
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
        let mut multipart = None;
        let mut probe = None;
        let store: Arc<dyn ObjectStore> = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("names no bucket".into()));
            }
            // The signed payload hash costs a second SHA-256 pass over every
            // part, on both ends. Over TLS it guards nothing TLS does not;
            // what is stored is authenticated segment by segment anyway.
            let https = config
                .endpoint
                .as_deref()
                .is_none_or(|e| e.starts_with("https://"));
            // No whole-request timeout: it would also bound a body that
            // streams only as fast as a slow client reads. Every call is
            // bounded here instead (`bounded`, and each chunk of a read).
            let client_options = ClientOptions::new()
                .with_allow_http(config.allow_http)
                .with_timeout_disabled()
                .with_connect_timeout(config.timeout.min(Duration::from_secs(5)));
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_allow_http(config.allow_http)
                .with_unsigned_payload(config.unsigned_payload.unwrap_or(https))
                .with_client_options(client_options.clone())
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
                builder = builder.with_secret_access_key(secret.expose_secret());
            }
            let s3 = Arc::new(builder.build().map_err(|e| bad(e.to_string()))?);
            let prefix = prefix.trim_matches('/');
            // Multipart uploads are listed by their full key in the bucket.
            let media_keys = if prefix.is_empty() {
                format!("{MEDIA_PREFIX}/")
            } else {
                format!("{prefix}/{MEDIA_PREFIX}/")
            };
            multipart = Some(Arc::new(MultipartUploads::new(
                s3.clone(),
                media_keys.clone(),
                &client_options,
                config.timeout,
            )?));
            probe = Some((s3.clone() as Arc<dyn PaginatedListStore>, media_keys));
            if prefix.is_empty() {
                s3
            } else {
                Arc::new(PrefixStore::new(s3, prefix))
            }
        } else if url == "memory://" {
            Arc::new(InMemory::new())
        } else {
            let dir = config
                .local_dir()
                .ok_or_else(|| bad("use a path, file://, s3:// or memory://".into()))?;
            std::fs::create_dir_all(&dir).map_err(|e| bad(e.to_string()))?;
            // A row turns ready only after its blob is complete; with fsync,
            // complete also means on disk (file and directory entry), so a
            // power cut cannot leave a ready row whose blob never landed.
            Arc::new(
                LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| bad(e.to_string()))?
                    .with_fsync(true),
            )
        };
        Ok(Blobs {
            store,
            local_dir: config.local_dir(),
            room: config
                .local_dir()
                .map(|dir| StoreRoom::new(dir, config.min_free_bytes)),
            timeout: config.timeout,
            bytes_read: Arc::default(),
            part_budget: Arc::new(Semaphore::new(PARTS_IN_FLIGHT_TOTAL)),
            part_blocks: Arc::default(),
            multipart,
            read_ahead_budget: Arc::new(Semaphore::new(READ_AHEAD_BUDGET)),
            windows_ahead_budget: Arc::new(Semaphore::new(WINDOWS_AHEAD_BUDGET)),
            windowed: config.local_dir().is_none(),
            probe,
        })
    }

    /// Incomplete multipart uploads, where the store keeps them apart (S3).
    pub(crate) fn multipart(&self) -> Option<&MultipartUploads> {
        self.multipart.as_deref()
    }

    /// Runs one store call within the configured bound.
    async fn bounded<T>(&self, call: impl Future<Output = object_store::Result<T>>) -> Result<T, StoreError> {
        let result = self.uncounted(call).await;
        // "Not found" is an answer, not a failure of the store.
        if let Err(error) = &result
            && !is_not_found(error)
        {
            count_store_error();
        }
        result
    }

    /// `bounded`, leaving it to the caller to tell a failure of the store
    /// from a blob that is not as it should be.
    async fn uncounted<T>(
        &self,
        call: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(StoreError::from),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    /// Takes `bytes` of the room uploads have on a local store, where that
    /// room holds at least `fits` (`bytes` or more); `None` where it is too
    /// small (see `StoreRoom`). Other stores manage their own capacity: all
    /// they are asked is granted.
    pub(crate) async fn take_room(&self, bytes: u64, fits: u64) -> Result<Option<RoomTaken>, StoreError> {
        match &self.room {
            Some(room) => room.take(bytes, fits).await,
            None => Ok(Some(RoomTaken::unbounded())),
        }
    }

    /// An empty part, to be filled in the process's blocks.
    fn new_part(&self) -> PartBuffer {
        PartBuffer::new(&self.part_blocks)
    }

    pub(crate) fn writer(&self, key: &str) -> BlobWriter {
        BlobWriter {
            blobs: self.clone(),
            path: Path::from(key),
            part: self.new_part(),
            state: WriterState::Buffering,
        }
    }

    /// Streams `range` of the blob at `key`. The answer is bounded by the
    /// timeout, and so is each wait of the reader for the next chunk; how
    /// long the reader takes between chunks is its own affair.
    pub(crate) async fn read_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, RangeError> {
        let path = Path::from(key);
        let mut windows = Windows {
            blobs: self.clone(),
            path,
            next: range.start,
            started: range.start,
            end: range.end,
            size: FIRST_WINDOW,
            open: None,
            ahead: VecDeque::new(),
            fetching_ahead: true,
            unsent: VecDeque::new(),
        };
        let first = match self.windowed {
            true => windows.window(),
            false => range.clone(),
        };
        let result = match self.uncounted(windows.get(first.clone())).await {
            Ok(result) => result,
            Err(error) => return Err(self.explain(&windows.path, range.end, error).await),
        };
        let timeout = self.timeout;
        let bytes_read = self.bytes_read.clone();
        let stream = match result.payload {
            GetResultPayload::File(file, path) => local_file_stream(file, path, result.range)
                .map_err(StoreError::from)
                .boxed(),
            GetResultPayload::Stream(stream) => {
                // Windows fetched ahead start where this one ends: none may
                // start past the blob's end, which stores refuse.
                windows.end = windows.end.min(result.meta.size);
                windows.opened(first, result.range.end, stream);
                read_ahead(windows, self.read_ahead_budget.clone())
            }
        };
        Ok(futures::stream::unfold(stream, move |mut stream| {
            let bytes_read = bytes_read.clone();
            async move {
                match tokio::time::timeout(timeout, stream.next()).await {
                    Ok(Some(item)) => {
                        match &item {
                            Ok(chunk) => {
                                bytes_read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            }
                            Err(_) => count_store_error(),
                        }
                        Some((item, stream))
                    }
                    Ok(None) => None,
                    Err(_) => {
                        count_store_error();
                        Some((Err(StoreError::Timeout(timeout)), stream))
                    }
                }
            }
        })
        .boxed())
    }

    /// Why a range up to `end` could not be read: the blob is gone or ends
    /// before `end` (stores refuse a range that starts past the end), or
    /// else the store failed, which alone counts as a store error.
    async fn explain(&self, path: &Path, end: u64, error: StoreError) -> RangeError {
        if is_not_found(&error) {
            return RangeError::Missing;
        }
        match self.uncounted(self.store.head(path)).await {
            Err(head) if is_not_found(&head) => RangeError::Missing,
            Ok(meta) if meta.size < end => RangeError::Short(meta.size),
            _ => {
                count_store_error();
                RangeError::Store(error)
            }
        }
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

    /// Every blob under `MEDIA_PREFIX`, listed as the store lists it: a
    /// page at a time, so that what is held stays bounded by a page however
    /// many blobs the store has. Only under the prefix, so that whatever
    /// else shares the bucket or directory is never a candidate for the
    /// orphan sweep.
    pub(crate) fn listing(&self) -> Listing {
        Listing {
            // Fused: a page that ends with the listing is followed by one
            // more call, and S3's listing must not be polled once done.
            entries: self.store.list(Some(&Path::from(MEDIA_PREFIX))).fuse().boxed(),
            blobs: self.clone(),
        }
    }

    /// Every blob key in the store (under `MEDIA_PREFIX`), all at once.
    pub(crate) async fn list_keys(&self) -> Result<Vec<String>, StoreError> {
        self.bounded(
            self.store
                .list(Some(&Path::from(MEDIA_PREFIX)))
                .map_ok(|meta| meta.location.to_string())
                .try_collect(),
        )
        .await
    }

    /// Deletes the local store's staging files under `MEDIA_PREFIX` last
    /// written before `cutoff`, but for those of the blobs `running` names
    /// (blob keys of uploads still running, which write a 5 MiB part at a
    /// time and may take longer than that between two); returns how many.
    /// The local store writes a blob to `<key>#<n>` and renames it when
    /// complete; a process killed while writing leaves the staging file,
    /// which listings skip. Other stores have none.
    pub(crate) async fn delete_stale_staging(
        &self,
        cutoff: std::time::SystemTime,
        running: HashSet<String>,
    ) -> Result<u64, StoreError> {
        let Some(dir) = &self.local_dir else {
            return Ok(0);
        };
        let root = dir.join(MEDIA_PREFIX);
        tokio::task::spawn_blocking(move || delete_stale_staging_under(&root, cutoff, &running))
            .await
            .map_err(|e| local_store_error(format!("staging sweep: {e}")))?
    }

    /// The installation id the store's owner marker holds (see
    /// `Vault::claim_blob_store`); `None` if it has none.
    pub(crate) async fn owner(&self) -> Result<Option<String>, StoreError> {
        let path = Path::from(OWNER_MARKER);
        let read = async { self.store.get(&path).await?.bytes().await };
        match self.bounded(read).await {
            Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).trim().to_owned())),
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Writes the owner marker: `installation`, in a file of its own beside
    /// the service's prefix, never among the blobs.
    pub(crate) async fn set_owner(&self, installation: &str) -> Result<(), StoreError> {
        let path = Path::from(OWNER_MARKER);
        let body = format!("{installation}\n");
        self.bounded(self.store.put(&path, body.into_bytes().into()))
            .await?;
        Ok(())
    }

    /// Answers whether the store is there to take and serve blobs, without
    /// writing. Not a HEAD of some key: S3 answers one for a bucket that does
    /// not exist with a bare 404, as for a missing key, and a local store
    /// lists a missing directory as empty. So S3 is asked for at most one
    /// key under the service's prefix, which an existing bucket answers
    /// (the prefix empty or not) and a missing one refuses (NoSuchBucket);
    /// the sweeps list that prefix anyway, so the credentials allow it. A
    /// local store's directory must exist and be a directory.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        let result = if let Some((bucket, prefix)) = &self.probe {
            let options = PaginatedListOptions {
                max_keys: Some(1),
                ..PaginatedListOptions::default()
            };
            self.uncounted(bucket.list_paginated(Some(prefix), options))
                .await
                .map(|_| ())
        } else if let Some(dir) = &self.local_dir {
            let missing = |why: String| object_store::Error::Generic {
                store: "LocalFileSystem",
                source: format!("{}: {why}", dir.display()).into(),
            };
            let check = async {
                match tokio::fs::metadata(dir).await {
                    Ok(meta) if meta.is_dir() => Ok(()),
                    Ok(_) => Err(missing("not a directory".into())),
                    Err(e) => Err(missing(e.to_string())),
                }
            };
            self.uncounted(check).await
        } else {
            self.uncounted(
                self.store
                    .list(Some(&Path::from(MEDIA_PREFIX)))
                    .next()
                    .map(Option::transpose),
            )
            .await
            .map(|_| ())
        };
        // Here even "not found" means the store is not there.
        if result.is_err() {
            count_store_error();
        }
        result
    }
}

/// Whether `name` is a local store's staging file: `<key>#<digits>`.
fn is_staging_file(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .and_then(|name| name.rsplit_once('#'))
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Deletes staging files under `root` (the `MEDIA_PREFIX` directory) last
/// written before `cutoff`, but for those of the blob keys in `running`.
fn delete_stale_staging_under(
    root: &std::path::Path,
    cutoff: std::time::SystemTime,
    running: &HashSet<String>,
) -> Result<u64, StoreError> {
    let failed = |path: &std::path::Path, e: String| local_store_error(format!("{}: {e}", path.display()));
    let mut removed = 0;
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e)
                if e.io_error()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
            {
                continue;
            }
            Err(e) => return Err(failed(root, e.to_string())),
        };
        if !entry.file_type().is_file() || !is_staging_file(entry.file_name()) {
            continue;
        }
        let blob_key = entry
            .path()
            .strip_prefix(root)
            .ok()
            .and_then(|relative| relative.to_str())
            .and_then(|relative| relative.rsplit_once('#'))
            .map(|(key, _)| format!("{MEDIA_PREFIX}/{key}"));
        if blob_key.is_some_and(|key| running.contains(&key)) {
            continue;
        }
        // Completed (renamed) or removed since it was listed: not stale.
        let Some(modified) = entry.metadata().ok().and_then(|m| m.modified().ok()) else {
            continue;
        };
        if modified >= cutoff {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(entry.path(), e.to_string())),
        }
    }
    Ok(removed)
}

/// Why a range of a blob could not be read.
#[derive(Debug)]
pub(crate) enum RangeError {
    /// There is no blob under the key.
    Missing,
    /// The blob is this long, shorter than the range.
    Short(u64),
    /// The store failed or did not answer in time.
    Store(StoreError),
}

fn is_not_found(error: &StoreError) -> bool {
    matches!(error, StoreError::Blobs(object_store::Error::NotFound { .. }))
}

fn count_store_error() {
    metrics::counter!("mediavault_blob_store_errors_total").increment(1);
}

/// A chunk read ahead, with the share of the budget it holds until taken.
type AheadChunk = (Result<Bytes, StoreError>, Option<OwnedSemaphorePermit>);

/// A remote read, window by window: the window being read now, the windows
/// fetched ahead of it, and where the rest of the read lies.
struct Windows {
    blobs: Blobs,
    path: Path,
    /// The next byte of the blob to hand out.
    next: u64,
    /// Where the next window starts: the end of the open window or of the
    /// last one fetched ahead.
    started: u64,
    /// Where the read ends (sooner, if the blob turns out shorter).
    end: u64,
    /// The size of the next window read at the reader's pace.
    size: u64,
    /// The window being read.
    open: Option<Open>,
    /// Windows fetched ahead, in the order they follow the open one.
    ahead: VecDeque<Ahead>,
    /// Whether windows may be fetched ahead: not once the reader has
    /// stalled, as its client, not the store, sets its pace.
    fetching_ahead: bool,
    /// Copies of what is left of the body's last chunk, from `next` on, in
    /// pieces of `READ_AHEAD_UNIT`. Copied at once: hyper's chunks are
    /// slices of its read buffer, which it can reuse only once no slice of
    /// it is left; a slice kept while the reader waits would make hyper
    /// take a new buffer (up to ~400 KiB) for every chunk.
    unsent: VecDeque<Bytes>,
}

/// The window being read: a GET read at the reader's pace, or a window
/// fetched ahead.
enum Open {
    Body(BoxStream<'static, object_store::Result<Bytes>>),
    Ahead(Ahead),
}

/// A window fetched on a task of its own, in copies of `READ_AHEAD_UNIT`
/// (see `Windows::unsent`), holding its size of the process's budget until
/// it has been read. Dropping it ends the task.
struct Ahead {
    range: std::ops::Range<u64>,
    pieces: tokio::sync::mpsc::UnboundedReceiver<Result<Bytes, StoreError>>,
    task: tokio::task::JoinHandle<()>,
    _budget: OwnedSemaphorePermit,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Windows {
    /// The range of the next window read at the reader's pace.
    fn window(&self) -> std::ops::Range<u64> {
        self.started..self.end.min(self.started.saturating_add(self.size))
    }

    /// A ranged GET of `range`, unbounded in time.
    fn get(
        &self,
        range: std::ops::Range<u64>,
    ) -> impl Future<Output = object_store::Result<object_store::GetResult>> + use<> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        let store = self.blobs.store.clone();
        let path = self.path.clone();
        async move { store.get_opts(&path, options).await }
    }

    /// Takes the body of the window `asked`, which the store answered up to
    /// `until` (sooner than asked where the blob ends), and grows the next.
    fn opened(
        &mut self,
        asked: std::ops::Range<u64>,
        until: u64,
        body: BoxStream<'static, object_store::Result<Bytes>>,
    ) {
        if until < asked.end {
            self.end = until;
        }
        self.started = until.min(asked.end);
        self.size = (self.size * 2).min(LAST_WINDOW);
        self.open = Some(Open::Body(body));
    }

    /// Starts fetching windows after the last one started, up to
    /// `WINDOWS_AHEAD` of them, while the process's budget has room for
    /// each whole window.
    fn fetch_ahead(&mut self) {
        while self.fetching_ahead && self.ahead.len() < WINDOWS_AHEAD && self.started < self.end {
            let range = self.started..self.end.min(self.started + AHEAD_WINDOW);
            let Ok(budget) = self
                .blobs
                .windows_ahead_budget
                .clone()
                .try_acquire_many_owned((range.end - range.start) as u32)
            else {
                return;
            };
            let (sender, pieces) = tokio::sync::mpsc::unbounded_channel();
            let blobs = self.blobs.clone();
            let timeout = blobs.timeout;
            let get = self.get(range.clone());
            let task = tokio::spawn(async move {
                let body = match blobs.uncounted(get).await {
                    Ok(result) => match result.payload {
                        GetResultPayload::Stream(body) => body,
                        GetResultPayload::File(..) => {
                            unreachable!("windows are read from remote stores only")
                        }
                    },
                    Err(error) => {
                        let _ = sender.send(Err(error));
                        return;
                    }
                };
                let mut body = std::pin::pin!(body);
                loop {
                    let error = match tokio::time::timeout(timeout, body.next()).await {
                        Ok(Some(Ok(chunk))) => {
                            for piece in chunk.chunks(READ_AHEAD_UNIT as usize) {
                                if sender.send(Ok(Bytes::copy_from_slice(piece))).is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                        Ok(None) => return,
                        Ok(Some(Err(error))) => error.into(),
                        Err(_) => StoreError::Timeout(timeout),
                    };
                    let _ = sender.send(Err(error));
                    return;
                }
            });
            self.started = range.end;
            self.ahead.push_back(Ahead {
                range,
                pieces,
                task,
                _budget: budget,
            });
        }
    }

    /// The next (up to) `READ_AHEAD_UNIT` bytes of the read, from the open
    /// window or the next one; `None` at the end of the read or where the
    /// blob ends.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, StoreError>> {
        while self.unsent.is_empty() {
            if self.open.is_none() {
                if let Some(ahead) = self.ahead.pop_front() {
                    self.open = Some(Open::Ahead(ahead));
                } else {
                    if self.next >= self.end {
                        return None;
                    }
                    let window = self.window();
                    let result = match self.blobs.uncounted(self.get(window.clone())).await {
                        Ok(result) => result,
                        Err(error) => return Some(Err(error)),
                    };
                    let GetResultPayload::Stream(body) = result.payload else {
                        unreachable!("windows are read from remote stores only")
                    };
                    self.opened(window, result.range.end, body);
                }
            }
            self.fetch_ahead();
            match self.open.as_mut()? {
                Open::Body(body) => match body.next().await {
                    Some(Ok(chunk)) => self
                        .unsent
                        .extend(chunk.chunks(READ_AHEAD_UNIT as usize).map(Bytes::copy_from_slice)),
                    Some(Err(error)) => return Some(Err(error.into())),
                    None => self.open = None,
                },
                Open::Ahead(ahead) => match ahead.pieces.recv().await {
                    Some(Ok(piece)) => self.unsent.push_back(piece),
                    Some(Err(error)) => return Some(Err(error)),
                    None => {
                        // A window that ends short ends the read there.
                        if self.next < ahead.range.end {
                            self.end = self.next;
                            self.ahead.clear();
                        }
                        self.open = None;
                    }
                },
            }
        }
        let piece = self.unsent.pop_front()?;
        self.next += piece.len() as u64;
        Some(Ok(piece))
    }

    /// Gives up the open window's GET (its connection, and the rest of its
    /// last chunk) and the windows fetched ahead; the next chunk opens a
    /// window from `next`, small again, and none ahead, as the reader that
    /// let it stall is slow.
    fn pause(&mut self) {
        self.unsent.clear();
        self.ahead.clear();
        self.fetching_ahead = false;
        if self.open.take().is_some() {
            self.size = FIRST_WINDOW;
        }
        self.started = self.next;
    }
}

/// Waits for `wait`; if that takes longer than `STALL`, gives up the open
/// window of `windows` meanwhile.
async fn unless_stalled<T>(windows: &mut Windows, wait: impl Future<Output = T>) -> T {
    let mut wait = std::pin::pin!(wait);
    match tokio::time::timeout(STALL, &mut wait).await {
        Ok(done) => done,
        Err(_) => {
            windows.pause();
            wait.await
        }
    }
}

/// Pulls a remote blob on its own task, up to `READ_AHEAD_CHUNKS` chunks
/// ahead of the reader, so that the store keeps streaming while the download
/// decrypts and sends what came before. Each chunk read ahead takes its size
/// from `budget`; when it is spent, a reader that waits (`starving`) still
/// gets its next chunk, so slow readers hold little and no reader stalls. A
/// read that waits `STALL` for its reader gives up its window's GET. A
/// reader that goes away ends the task, even while the store is silent.
fn read_ahead(mut windows: Windows, budget: Arc<Semaphore>) -> BoxStream<'static, Result<Bytes, StoreError>> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<AheadChunk>(READ_AHEAD_CHUNKS);
    let starving = Arc::new(tokio::sync::Notify::new());
    let wanted = starving.clone();
    tokio::spawn(async move {
        loop {
            // Leave to read one more chunk: room in the channel, and a share
            // of the budget, taken before the chunk is, or a reader that
            // waits for it.
            let room = async {
                let slot = sender.reserve().await.ok()?;
                tokio::select! {
                    permit = budget.clone().acquire_many_owned(READ_AHEAD_UNIT) => Some((slot, permit.ok())),
                    () = wanted.notified() => Some((slot, None)),
                    () = sender.closed() => None,
                }
            };
            let Some((slot, permit)) = unless_stalled(&mut windows, room).await else {
                break;
            };
            let item = tokio::select! {
                item = windows.next_chunk() => item,
                () = sender.closed() => break,
            };
            let Some(item) = item else { break };
            let failed = item.is_err();
            slot.send((item, permit));
            if failed {
                break;
            }
        }
    });
    futures::stream::unfold(receiver, move |mut receiver| {
        let starving = starving.clone();
        async move {
            let (item, permit) = match receiver.try_recv() {
                Ok(next) => next,
                Err(_) => {
                    starving.notify_one();
                    receiver.recv().await?
                }
            };
            drop::<Option<OwnedSemaphorePermit>>(permit);
            Some((item, receiver))
        }
    })
    .boxed()
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
    /// Not a part's worth yet. Small files never leave this state: one PUT
    /// when finished.
    Buffering,
    /// Past one part's size: a multipart upload, its parts in flight.
    Multipart(Parts),
    /// Every part stored and the complete sent, but not confirmed: it failed,
    /// timed out or was cut short. The store may have completed it anyway, so
    /// the blob may exist, or the upload may still hold every part.
    Completing(Box<dyn MultipartUpload>),
    /// Sent whole (one PUT, or a complete the store confirmed): nothing is
    /// left but the blob under its key, if it landed.
    Closed,
}

/// The blobs of a listing not yet taken; see [`Blobs::listing`].
pub(crate) struct Listing {
    entries: BoxStream<'static, object_store::Result<object_store::ObjectMeta>>,
    blobs: Blobs,
}

impl Listing {
    /// The keys of up to `size` more blobs last modified before `cutoff`;
    /// `None` once the listing is done. Each step of the listing (a request
    /// to the store where it lists in pages) is bounded by the timeout.
    pub(crate) async fn next_page(
        &mut self,
        cutoff: chrono::DateTime<chrono::Utc>,
        size: usize,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let mut keys = Vec::new();
        // A page of none would never end the listing.
        while keys.len() < size.max(1) {
            let next = self
                .blobs
                .bounded(self.entries.next().map(Option::transpose))
                .await?;
            let Some(meta) = next else {
                return Ok((!keys.is_empty()).then_some(keys));
            };
            let key = meta.location.to_string();
            if meta.last_modified < cutoff && is_blob_key(&key) {
                keys.push(key);
            }
        }
        Ok(Some(keys))
    }
}

/// A multipart upload and its parts in flight, each holding a permit of the
/// process-wide budget until the store has it.
struct Parts {
    upload: Box<dyn MultipartUpload>,
    in_flight: JoinSet<object_store::Result<()>>,
}

/// Writes one blob: buffers up to one part, then switches to a multipart
/// upload of `PART_SIZE` parts (the last one shorter; some stores want all
/// others the same size).
pub(crate) struct BlobWriter {
    blobs: Blobs,
    path: Path,
    /// The part being filled.
    part: PartBuffer,
    state: WriterState,
}

impl BlobWriter {
    /// The part filled so far, leaving an empty one in its place.
    fn take_part(&mut self) -> PartBuffer {
        std::mem::replace(&mut self.part, self.blobs.new_part())
    }

    pub(crate) async fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        while !data.is_empty() {
            if self.part.len() == PART_SIZE {
                let full = self.take_part();
                self.send_part(full.freeze()).await?;
            }
            let n = (PART_SIZE - self.part.len()).min(data.len());
            self.part.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        Ok(())
    }

    /// Starts the multipart upload if need be, waits for room (this upload's
    /// own and the process's), then sends `part` on its way.
    async fn send_part(&mut self, part: PutPayload) -> Result<(), StoreError> {
        if let WriterState::Buffering = self.state {
            let upload = self
                .blobs
                .bounded(self.blobs.store.put_multipart(&self.path))
                .await?;
            self.state = WriterState::Multipart(Parts {
                upload,
                in_flight: JoinSet::new(),
            });
        }
        let WriterState::Multipart(parts) = &mut self.state else {
            unreachable!("write after close")
        };
        while parts.in_flight.len() >= PARTS_IN_FLIGHT_PER_UPLOAD {
            self.blobs.bounded(parts.join_one()).await?;
        }
        let permit = self.blobs.bounded(self.blobs.acquire_part_permit()).await?;
        // put_part numbers the part when called, so parts keep their order
        // however their requests finish.
        let request = parts.upload.put_part(part);
        parts.in_flight.spawn(async move {
            let result = request.await;
            drop::<OwnedSemaphorePermit>(permit);
            result
        });
        Ok(())
    }

    /// Completes the blob; only then is it visible under its key.
    pub(crate) async fn finish(&mut self) -> Result<(), StoreError> {
        let last = self.take_part();
        if let WriterState::Buffering = self.state {
            self.state = WriterState::Closed;
            return self
                .blobs
                .bounded(self.blobs.store.put(&self.path, last.freeze()))
                .await
                .map(drop);
        }
        if !last.is_empty() {
            self.send_part(last.freeze()).await?;
        }
        // Until every part is stored, a failure leaves the upload for
        // `abort` to abort.
        if let WriterState::Multipart(parts) = &mut self.state {
            while !parts.in_flight.is_empty() {
                self.blobs.bounded(parts.join_one()).await?;
            }
        }
        if let WriterState::Multipart(parts) = std::mem::replace(&mut self.state, WriterState::Closed) {
            self.state = WriterState::Completing(parts.upload);
        }
        let WriterState::Completing(upload) = &mut self.state else {
            return Ok(());
        };
        // The upload stays at hand until the store confirms the complete:
        // whatever the answer (or none), `abort` must still be able to abort it.
        self.blobs.bounded(upload.complete()).await?;
        self.state = WriterState::Closed;
        Ok(())
    }

    /// Abandons the blob: aborts a multipart upload and removes a blob that
    /// was, or may have been, completed. Safe to call in any state.
    pub(crate) async fn abort(&mut self) -> Result<(), StoreError> {
        drop(self.take_part());
        match std::mem::replace(&mut self.state, WriterState::Closed) {
            WriterState::Buffering => Ok(()),
            WriterState::Multipart(mut parts) => {
                parts.in_flight.shutdown().await;
                self.blobs.bounded(parts.upload.abort()).await
            }
            WriterState::Completing(mut upload) => {
                // Not knowing which way the complete went, undo both: the
                // parts (billed until aborted) and the blob. Each attempt is
                // made whatever became of the other.
                let aborted = self.blobs.abort_completed(&mut *upload).await;
                let deleted = self.blobs.delete(self.path.as_ref()).await;
                aborted.and(deleted)
            }
            WriterState::Closed => self.blobs.delete(self.path.as_ref()).await,
        }
    }
}

impl Blobs {
    /// Aborts an upload that may have been completed meanwhile, which the
    /// store then no longer knows (S3: NoSuchUpload, a "not found").
    async fn abort_completed(&self, upload: &mut dyn MultipartUpload) -> Result<(), StoreError> {
        // A local upload's complete takes its staging file, whatever comes of
        // it: its abort can only fail. A staging file left behind is the
        // staging sweep's (`delete_stale_staging`).
        if self.local_dir.is_some() {
            return Ok(());
        }
        match self.bounded(upload.abort()).await {
            Err(error) if is_not_found(&error) => Ok(()),
            other => other,
        }
    }

    async fn acquire_part_permit(&self) -> object_store::Result<OwnedSemaphorePermit> {
        self.part_budget
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "parts in flight",
                source: Box::new(e),
            })
    }
}

impl Parts {
    /// Waits for one part in flight to be stored.
    async fn join_one(&mut self) -> object_store::Result<()> {
        match self.in_flight.join_next().await {
            Some(Ok(result)) => result,
            Some(Err(join)) => Err(object_store::Error::Generic {
                store: "multipart upload",
                source: Box::new(join),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use mediavault_test_support::services::test_env;

    use super::*;

    /// The sweep takes only keys the service makes: not another
    /// installation's under a nested prefix, nor anything else put there.
    #[test]
    fn blob_keys_are_those_the_service_makes() {
        let key = new_blob_key();
        assert!(is_blob_key(&key), "{key}");
        let name = &key[key.len() - 32..];
        assert!(is_blob_key(&format!("media/{name}")), "the flat layout");
        for other in [
            format!("media/media/{}/{name}", &name[..2]),
            format!("media/ff/{name}"),
            format!("media/{}/{name}.bak", &name[..2]),
            format!("media/{}/{}", &name[..2], name.to_uppercase()),
            format!("other/{}/{name}", &name[..2]),
            "media/notes.txt".to_owned(),
            "mediavault-installation".to_owned(),
        ] {
            assert!(!is_blob_key(&other), "{other}");
        }
    }

    /// Blobs under a fresh prefix of the Garage test bucket.
    fn garage() -> Blobs {
        garage_bucket(&test_env("MEDIAVAULT_TEST_S3_BUCKET"))
    }

    /// Blobs under a fresh prefix of `bucket` on the test Garage.
    fn garage_bucket(bucket: &str) -> Blobs {
        Blobs::open(&BlobConfig {
            url: format!("s3://{bucket}/test-{}", uuid::Uuid::new_v4().simple()),
            endpoint: Some(test_env("MEDIAVAULT_TEST_S3_ENDPOINT")),
            region: Some("garage".into()),
            access_key_id: Some(test_env("MEDIAVAULT_TEST_S3_ACCESS_KEY_ID")),
            secret_access_key: Some(test_env("MEDIAVAULT_TEST_S3_SECRET_ACCESS_KEY").into()),
            allow_http: true,
            unsigned_payload: None,
            timeout: Duration::from_secs(10),
            min_free_bytes: 0,
        })
        .unwrap()
    }

    async fn read(blobs: &Blobs, key: &str, range: std::ops::Range<u64>) -> Vec<u8> {
        let Ok(stream) = blobs.read_range(key, range).await else {
            panic!("read refused")
        };
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        chunks.concat()
    }

    fn spare(blobs: &Blobs) -> usize {
        blobs.windows_ahead_budget.available_permits()
    }

    /// An in-memory store whose multipart uploads store their parts but
    /// fail to complete, having (`lands`) or not having stored the blob
    /// first, and which notes whether an upload was aborted.
    #[derive(Debug)]
    struct FailingComplete {
        inner: InMemory,
        lands: bool,
        aborted: Arc<std::sync::atomic::AtomicBool>,
    }

    #[derive(Debug)]
    struct FailingCompleteUpload {
        inner: Box<dyn MultipartUpload>,
        lands: bool,
        completed: bool,
        aborted: Arc<std::sync::atomic::AtomicBool>,
    }

    impl std::fmt::Display for FailingComplete {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "FailingComplete({})", self.inner)
        }
    }

    // What `async_trait` would generate, written out (the crate does not
    // depend on it): the inner store's own futures pass through as they are.
    impl ObjectStore for FailingComplete {
        fn put_opts<'a, 'b, 'c>(
            &'a self,
            location: &'b Path,
            payload: PutPayload,
            opts: object_store::PutOptions,
        ) -> futures::future::BoxFuture<'c, object_store::Result<object_store::PutResult>>
        where
            'a: 'c,
            'b: 'c,
            Self: 'c,
        {
            self.inner.put_opts(location, payload, opts)
        }

        fn put_multipart_opts<'a, 'b, 'c>(
            &'a self,
            location: &'b Path,
            opts: object_store::PutMultipartOptions,
        ) -> futures::future::BoxFuture<'c, object_store::Result<Box<dyn MultipartUpload>>>
        where
            'a: 'c,
            'b: 'c,
            Self: 'c,
        {
            Box::pin(async move {
                let upload: Box<dyn MultipartUpload> = Box::new(FailingCompleteUpload {
                    inner: self.inner.put_multipart_opts(location, opts).await?,
                    lands: self.lands,
                    completed: false,
                    aborted: self.aborted.clone(),
                });
                Ok(upload)
            })
        }

        fn get_opts<'a, 'b, 'c>(
            &'a self,
            location: &'b Path,
            options: GetOptions,
        ) -> futures::future::BoxFuture<'c, object_store::Result<object_store::GetResult>>
        where
            'a: 'c,
            'b: 'c,
            Self: 'c,
        {
            self.inner.get_opts(location, options)
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
            self.inner.list(prefix)
        }

        fn list_with_delimiter<'a, 'b, 'c>(
            &'a self,
            prefix: Option<&'b Path>,
        ) -> futures::future::BoxFuture<'c, object_store::Result<object_store::ListResult>>
        where
            'a: 'c,
            'b: 'c,
            Self: 'c,
        {
            self.inner.list_with_delimiter(prefix)
        }

        fn copy_opts<'a, 'b, 'c, 'd>(
            &'a self,
            from: &'b Path,
            to: &'c Path,
            options: object_store::CopyOptions,
        ) -> futures::future::BoxFuture<'d, object_store::Result<()>>
        where
            'a: 'd,
            'b: 'd,
            'c: 'd,
            Self: 'd,
        {
            self.inner.copy_opts(from, to, options)
        }
    }

    impl MultipartUpload for FailingCompleteUpload {
        fn put_part(&mut self, data: PutPayload) -> object_store::UploadPart {
            self.inner.put_part(data)
        }

        fn complete<'a, 'b>(
            &'a mut self,
        ) -> futures::future::BoxFuture<'b, object_store::Result<object_store::PutResult>>
        where
            'a: 'b,
            Self: 'b,
        {
            Box::pin(async move {
                if self.lands {
                    self.inner.complete().await?;
                    self.completed = true;
                }
                Err(object_store::Error::Generic {
                    store: "FailingComplete",
                    source: "CompleteMultipartUpload failed".into(),
                })
            })
        }

        fn abort<'a, 'b>(&'a mut self) -> futures::future::BoxFuture<'b, object_store::Result<()>>
        where
            'a: 'b,
            Self: 'b,
        {
            Box::pin(async move {
                self.aborted.store(true, Ordering::SeqCst);
                // As S3 answers for an upload it completed: NoSuchUpload.
                if self.completed {
                    return Err(object_store::Error::NotFound {
                        path: "upload".into(),
                        source: "NoSuchUpload".into(),
                    });
                }
                self.inner.abort().await
            })
        }
    }

    /// A multipart upload whose complete fails is still aborted, whichever
    /// way the complete went at the store: its parts are not left stored,
    /// and neither is a blob it completed after all.
    #[tokio::test]
    async fn aborting_after_a_failed_complete_aborts_the_upload_and_deletes_the_blob() {
        for lands in [false, true] {
            let aborted = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let store = Arc::new(FailingComplete {
                inner: InMemory::new(),
                lands,
                aborted: aborted.clone(),
            });
            let blobs = Blobs {
                store: store.clone(),
                ..Blobs::open(&BlobConfig::local("memory://")).unwrap()
            };
            let key = "media/failed-complete";
            let mut writer = blobs.writer(key);
            writer.write(&vec![7u8; 2 * PART_SIZE + 1]).await.unwrap();
            assert!(writer.finish().await.is_err(), "complete fails (lands: {lands})");
            assert_eq!(
                store.inner.head(&Path::from(key)).await.is_ok(),
                lands,
                "the blob is there only if the complete landed"
            );

            writer.abort().await.unwrap();
            assert!(
                aborted.load(Ordering::SeqCst),
                "the multipart upload is aborted (lands: {lands})"
            );
            assert!(
                matches!(
                    store.inner.head(&Path::from(key)).await,
                    Err(object_store::Error::NotFound { .. })
                ),
                "no blob is left (lands: {lands})"
            );
        }
    }

    /// A remote blob is fetched in several windows at once, handed out in
    /// order byte for byte (whole and by ranges across windows), holding
    /// the process's budget only while read; with the budget spent, the
    /// read goes on one window at a time, as whole.
    #[tokio::test]
    async fn remote_reads_fetch_windows_ahead_in_order_within_the_budget() {
        let blobs = garage();
        let key = "media/ahead";
        let len = 19 * 1024 * 1024 + 12_345;
        let mut bytes = vec![0u8; len];
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for b in &mut bytes {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let mut writer = blobs.writer(key);
        writer.write(&bytes).await.unwrap();
        writer.finish().await.unwrap();

        let Ok(mut stream) = blobs.read_range(key, 0..len as u64).await else {
            panic!("read refused")
        };
        let mut got = stream.next().await.unwrap().unwrap().to_vec();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let held = WINDOWS_AHEAD_BUDGET - spare(&blobs);
        // The open window's share is held too, once it is one fetched ahead.
        assert!(
            held >= 2 * AHEAD_WINDOW as usize && held <= (WINDOWS_AHEAD + 1) * AHEAD_WINDOW as usize,
            "windows fetched ahead: {held} bytes"
        );
        while let Some(chunk) = stream.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert!(got == bytes, "whole blob byte for byte");
        drop(stream);
        assert_eq!(spare(&blobs), WINDOWS_AHEAD_BUDGET, "budget given back");

        for range in [1..len as u64, 999_999..9_000_001, 5_242_880..len as u64 - 1, 7..8] {
            let got = read(&blobs, key, range.clone()).await;
            let want = &bytes[range.start as usize..range.end as usize];
            assert!(got == want, "range {range:?} byte for byte");
        }
        assert_eq!(spare(&blobs), WINDOWS_AHEAD_BUDGET);

        let all = blobs
            .windows_ahead_budget
            .clone()
            .acquire_many_owned(WINDOWS_AHEAD_BUDGET as u32)
            .await
            .unwrap();
        assert!(read(&blobs, key, 0..len as u64).await == bytes, "without budget");
        drop(all);

        // A reader that stalls gives its windows up.
        let Ok(mut stream) = blobs.read_range(key, 0..len as u64).await else {
            panic!("read refused")
        };
        stream.next().await.unwrap().unwrap();
        tokio::time::sleep(STALL + Duration::from_millis(700)).await;
        assert_eq!(
            spare(&blobs),
            WINDOWS_AHEAD_BUDGET,
            "a stalled reader holds no windows"
        );
        drop(stream);
        blobs.delete(key).await.unwrap();
    }

    /// The probe answers for a bucket that is there, however empty the
    /// service's prefix, and fails for one that is not: S3 answers a HEAD
    /// of any key in a missing bucket with the same 404 as a missing key.
    #[tokio::test]
    async fn ping_fails_for_a_bucket_that_does_not_exist() {
        garage()
            .ping()
            .await
            .expect("an empty prefix of the bucket answers");
        let missing = format!("no-such-bucket-{}", uuid::Uuid::new_v4().simple());
        let Err(error) = garage_bucket(&missing).ping().await else {
            panic!("a missing bucket probed ok");
        };
        assert!(format!("{error:?}").contains("NoSuchBucket"), "{error:?}");
    }

    /// The probe fails once the local store's directory is gone (deleted,
    /// or a volume that is not mounted) or is not a directory; an empty
    /// one answers.
    #[tokio::test]
    async fn ping_fails_without_the_local_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("blobs");
        let blobs = Blobs::open(&BlobConfig::local(root.display().to_string())).unwrap();
        blobs.ping().await.expect("an empty directory answers");
        std::fs::remove_dir(&root).unwrap();
        assert!(blobs.ping().await.is_err(), "a missing directory probed ok");
        std::fs::write(&root, b"").unwrap();
        assert!(blobs.ping().await.is_err(), "a file probed ok");
    }

    /// A store other than a local directory manages its own capacity.
    #[tokio::test]
    async fn a_remote_store_grants_all_room() {
        let elsewhere = Blobs::open(&BlobConfig::local("memory://")).unwrap();
        assert!(elsewhere.take_room(u64::MAX, 0).await.unwrap().is_some());
    }
}
