//! `POST /partner/app/{appId}/media`: the Gupshup upload. The multipart body
//! is read part by part; the `file` part streams straight into the vault
//! (after its first 256 KiB, read before its quota is reserved), in
//! whichever order the parts come. A `file` part that is a plain text value
//! is a URL: once the form is read and its type accepted, the file is
//! fetched from there into the same kind of upload (`by_url`). Checks
//! answer in the contract's order: 401, 400 non-CAPI, 429, 400
//! `file_type`/`file`, 403 quota (a sent file's after its first 256 KiB, a
//! URL's before it is fetched, and either while it streams), 413, 400 fetch
//! failure or content, 500.

use axum::Json;
use axum::body::Body;
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{FromRequest, Multipart, Request, State};
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use bytes::Bytes;
use mediavault_fetch::{clean_filename, names_a_file};
use mediavault_storage::{App, Upload, UploadError};
use serde::Serialize;

use crate::ApiState;
use crate::auth::authenticate;
use crate::by_url;
use crate::error::{ApiError, ErrorBody, Task};
use crate::limits::ClientAddr;
use crate::path::ApiPath;
use crate::reply::Success;
use crate::slots::MinRate;

/// Small text fields are read up to this many bytes.
const TEXT_FIELD_LIMIT: usize = 4 * 1024;
/// Parts accepted in one request (`file_type`, `file`, and a few extras).
const MAX_PARTS: usize = 16;
/// Longest part name accepted (`file_type` and `file` are what matter).
const NAME_LIMIT: usize = 256;
/// Body bytes that are not part content — preamble, boundaries, part
/// headers — are held by the parser until it finds what it looks for; past
/// this many the request is refused rather than buffered without end. It
/// also covers the one body chunk the parser may hold ahead of the reader.
const FRAMING_LIMIT: u64 = 4 * 1024 * 1024;
/// Longest parser detail repeated in a 400 message.
const DETAIL_LIMIT: usize = 200;
/// A file part up to this many bytes is read whole before its upload
/// begins, so that its quota reservation is its exact size and completing
/// it has no reservation to settle: one database statement fewer for the
/// small files most uploads are. A larger file reserves by the request's
/// length. The storage layer holds as much ciphertext before its first
/// write to the store anyway.
const READ_BEFORE_RESERVING: usize = 256 * 1024;

/// The fields of `UploadBody`, then `"status": "success"`.
pub type UploadReply = Success<UploadBody>;

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = UploadReply)]
pub struct UploadBody {
    /// The new file's id: 16 to 19 decimal digits (files stored before
    /// numeric ids have UUIDs, which keep working).
    #[schema(example = "1037543291543636")]
    media_id: String,
}

/// The multipart body of an upload, in either order of parts.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the body; `upload` reads it part by part
pub struct UploadForm {
    /// One of the app's allowed MIME types.
    #[schema(example = "image/png")]
    file_type: String,
    /// The file, at most the app's size limit (104,857,600 bytes by default).
    /// Or, as a plain text part (no filename, no Content-Type), an `http` or
    /// `https` URL: the service fetches the file from there (2xx answers
    /// only, a few redirects, addresses the operator allows) and stores it
    /// as if it had been sent; its name is the answer's Content-Disposition
    /// filename, else the URL's last segment. A fetch that fails answers
    /// 400 `Unable to fetch the file URL: <reason>`.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Upload a file, or have one fetched from a URL, and get its media id
/// (Gupshup-compatible).
#[utoipa::path(
    post,
    path = "/partner/app/{app_id}/media",
    tag = "media",
    params(("app_id" = String, Path, description = "The app's id")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Stored", body = UploadReply),
        (status = 400, description = "Not a CAPI app, type not allowed, no file, bad body, the file URL could not be fetched, or content contradicts file_type", body = ErrorBody),
        (status = 401, description = "Authentication Failed", body = ErrorBody),
        (status = 403, description = "Storage quota exceeded: the file would take the app past its maxBytesStored or maxMedia; nothing is stored", body = ErrorBody),
        (status = 408, description = "The body came slower than the server's minimum upload rate", body = ErrorBody),
        (status = 413, description = "File size exceeds the maximum limit!", body = ErrorBody),
        (status = 429, description = "Too many uploads for this app (per second, or in progress at once), or too many failed authentications from this address (see Retry-After)", body = ErrorBody),
        (status = 500, description = "Unable to upload requested Media", body = ErrorBody),
        (status = 503, description = "Too many uploads in progress on this server (see Retry-After)", body = ErrorBody),
        (status = 507, description = "The server is out of storage space: its blob directory is down to its reserve of free space (see Retry-After); nothing is stored", body = ErrorBody),
    ),
    security(("token" = []), ("bearer" = []))
)]
pub async fn upload(
    State(state): State<ApiState>,
    ApiPath(app_id): ApiPath<String>,
    headers: HeaderMap,
    client: ClientAddr,
    request: Request,
) -> Result<Json<UploadReply>, ApiError> {
    let app = authenticate(&state, &app_id, &headers, client, Task::Upload).await?;
    app.check_may_upload()?;
    state.limits.check_upload(&app)?;
    // A bounded number of uploads at once, and of them a bounded share per
    // app: past either, refuse rather than queue memory and connections.
    let _slot = state.uploads.try_acquire(app.id.as_str())?;
    let started = Instant::now();
    let form = receive_form(&state, &app, &headers, request, Surface::Gupshup).await?;
    let upload = match (form.file, form.url) {
        (Some(upload), _) => upload,
        (None, Some(url)) => by_url::receive(&state, &app, &url).await?,
        (None, None) => return Err(UploadError::MissingFile.into()),
    };
    let media_id = store(&app, upload, &form.declared, started).await?;
    Ok(Json(Success::new(UploadBody {
        media_id: media_id.into_string(),
    })))
}

/// Which API a form comes from: the field that declares the file's type,
/// the types accepted and their size limits, and whether a text `file` is
/// a URL to fetch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Surface {
    /// `file_type`; the app's own list and size limit; a text `file` is a URL.
    Gupshup,
    /// `type` (or else the file part's Content-Type); the app's WhatsApp
    /// list with a limit per type, within the app's own size limit.
    WhatsApp,
}

impl Surface {
    fn type_field(self) -> &'static str {
        match self {
            Surface::Gupshup => "file_type",
            Surface::WhatsApp => "type",
        }
    }

    /// The declared type, normalised, if `app` accepts it on this surface.
    fn check_type(self, app: &App, declared: Option<&str>) -> Result<String, UploadError> {
        match self {
            Surface::Gupshup => app.check_declared_type(declared),
            Surface::WhatsApp => app.check_whatsapp_type(declared),
        }
    }

    /// The largest file `app` takes of type `declared` on this surface; of
    /// any type it accepts while the type is not known, or not one it
    /// accepts (a generic part type, with `type` still to come).
    fn size_limit(self, app: &App, declared: Option<&str>) -> u64 {
        let own = app.max_file_bytes;
        match self {
            Surface::Gupshup => own,
            Surface::WhatsApp => declared
                .and_then(|declared| app.whatsapp_receive_limit(declared))
                .or_else(|| app.whatsapp_limits().iter().map(|l| l.max_bytes).max())
                .unwrap_or(own)
                .min(own),
        }
    }
}

/// What an upload form brought, its checks passed: the declared type, and
/// the file streamed into an upload, or (Gupshup) the URL to fetch it from.
pub(crate) struct Received {
    pub declared: String,
    pub file: Option<Upload>,
    pub url: Option<String>,
    /// The `messaging_product` field, which the WhatsApp surface requires.
    pub messaging_product: Option<String>,
}

/// The longest multipart boundary (RFC 2046). The parser looks for the
/// boundary across every chunk the body arrives in, so one of 60 KB made
/// each small packet of a trickled body cost that much work.
const MAX_BOUNDARY_LEN: usize = 70;

/// Reads an upload's multipart body as `surface` defines it, streaming the
/// file into the vault as it comes. On any error, what was started is undone
/// before it returns.
pub(crate) async fn receive_form(
    state: &ApiState,
    app: &App,
    headers: &HeaderMap,
    request: Request,
    surface: Surface,
) -> Result<Received, UploadError> {
    if let Some(boundary) = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| multer::parse_boundary(value).ok())
        && boundary.len() > MAX_BOUNDARY_LEN
    {
        return Err(UploadError::Malformed(format!(
            "boundary longer than {MAX_BOUNDARY_LEN} characters"
        )));
    }
    let meter = Arc::new(Meter::new(state.min_upload_rate));
    let mut body = Multipart::from_request(metered(request, meter.clone()), state)
        .await
        .map_err(|e| UploadError::Malformed(e.body_text()))?;
    let mut form = Form {
        state,
        app,
        surface,
        meter: &meter,
        expected_bytes: content_length(headers),
        declared: None,
        part_type: None,
        messaging_product: None,
        upload: None,
        url: None,
    };
    match form.read(&mut body).await.and_then(|()| form.checked_type()) {
        Ok(declared) => Ok(Received {
            declared,
            file: form.upload.take(),
            url: form.url.take(),
            messaging_product: form.messaging_product.take(),
        }),
        Err(error) => {
            form.abandon().await;
            Err(error)
        }
    }
}

/// Finishes a received upload as `declared` and counts it.
pub(crate) async fn store(
    app: &App,
    upload: Upload,
    declared: &str,
    started: Instant,
) -> Result<mediavault_storage::MediaId, UploadError> {
    let size = upload.received();
    let media_id = upload.finish(declared).await?;
    metrics::counter!("mediavault_upload_bytes_total").increment(size);
    metrics::counter!("mediavault_uploads_total").increment(1);
    metrics::histogram!("mediavault_upload_duration_seconds").record(started.elapsed().as_secs_f64());
    tracing::info!(%media_id, app_id = %app.id, "media uploaded");
    Ok(media_id)
}

/// How much of the body arrived, and how much of it was part content.
struct Meter {
    received: AtomicU64,
    delivered: AtomicU64,
    exceeded: AtomicBool,
    /// The minimum rate, if any, and its window under way.
    pace: Option<(MinRate, Mutex<Window>)>,
}

/// A window of the minimum rate: when it ends, and the body bytes received
/// when it began. It runs only while the upload waits for the client: time
/// spent on the store is not the client's to make up.
#[derive(Clone, Copy)]
struct Window {
    ends: tokio::time::Instant,
    received_before: u64,
    /// Since when the upload has been busy elsewhere, if it is.
    paused_at: Option<tokio::time::Instant>,
}

impl Meter {
    fn new(min_rate: Option<MinRate>) -> Meter {
        Meter {
            received: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
            pace: min_rate.map(|rate| {
                let window = Window {
                    ends: tokio::time::Instant::now() + rate.window,
                    received_before: 0,
                    paused_at: None,
                };
                (rate, Mutex::new(window))
            }),
        }
    }

    fn window(&self) -> Option<(MinRate, std::sync::MutexGuard<'_, Window>)> {
        let (rate, window) = self.pace.as_ref()?;
        Some((*rate, window.lock().unwrap_or_else(|e| e.into_inner())))
    }

    /// Resolves when the window under way ends; never without a minimum rate.
    async fn window_ends(&self) {
        match self.window().map(|(_, window)| window.ends) {
            Some(ends) => tokio::time::sleep_until(ends).await,
            None => std::future::pending().await,
        }
    }

    /// At the end of a window: cuts a body that brought less than the
    /// minimum in it, or starts the next window.
    fn check_pace(&self) -> Result<(), UploadError> {
        let Some((rate, mut window)) = self.window() else {
            return Ok(());
        };
        let now = tokio::time::Instant::now();
        if now < window.ends {
            return Ok(());
        }
        let received = self.received.load(Ordering::Relaxed);
        if received - window.received_before < rate.per_window() {
            tracing::info!(
                received = received - window.received_before,
                window = ?rate.window,
                "upload body slower than the minimum rate; request cut"
            );
            return Err(UploadError::TooSlow {
                bytes_per_second: rate.bytes_per_second,
                window: rate.window,
            });
        }
        *window = Window {
            ends: now + rate.window,
            received_before: received,
            paused_at: None,
        };
        Ok(())
    }

    /// The upload waits for the client again: the window moves on by the
    /// time it was paused.
    fn resume(&self) {
        if let Some((_, mut window)) = self.window()
            && let Some(paused_at) = window.paused_at.take()
        {
            window.ends += paused_at.elapsed();
        }
    }

    /// The upload stops waiting for the client (to write to the store, say).
    fn pause(&self) {
        if let Some((_, mut window)) = self.window() {
            window.paused_at = Some(tokio::time::Instant::now());
        }
    }

    fn delivered(&self, bytes: usize) {
        self.delivered.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A parser error, or the framing limit when that is what stopped it.
    fn malformed(&self, error: MultipartError) -> UploadError {
        if self.exceeded.load(Ordering::Relaxed) {
            return UploadError::Malformed(format!(
                "more than {FRAMING_LIMIT} bytes of preamble, boundaries and part headers"
            ));
        }
        malformed(error)
    }
}

/// The request with its body counted against the framing limit.
fn metered(request: Request, meter: Arc<Meter>) -> Request {
    request.map(|body| {
        Body::from_stream(body.into_data_stream().map(move |chunk| {
            let chunk = chunk?;
            let received =
                meter.received.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
            if received.saturating_sub(meter.delivered.load(Ordering::Relaxed)) > FRAMING_LIMIT {
                meter.exceeded.store(true, Ordering::Relaxed);
                return Err(axum::Error::new("framing limit exceeded"));
            }
            Ok(chunk)
        }))
    })
}

/// One read from the body: a client silent for the idle timeout, or slower
/// than the minimum rate over a window, is cut, and once the drain time
/// after SIGTERM is over the upload is interrupted.
async fn step<T>(
    state: &ApiState,
    meter: &Meter,
    next: impl Future<Output = Result<T, MultipartError>>,
) -> Result<T, UploadError> {
    let idle = state.idle_timeout;
    let silent_until = tokio::time::Instant::now() + idle;
    let mut next = std::pin::pin!(next);
    meter.resume();
    let result = loop {
        tokio::select! {
            next = tokio::time::timeout_at(silent_until, &mut next) => {
                break next.map_err(|_| silent(idle)).and_then(|next| next.map_err(|e| meter.malformed(e)));
            }
            () = meter.window_ends() => {
                if let Err(error) = meter.check_pace() {
                    break Err(error);
                }
            }
            () = state.shutdown.cancelled() => break Err(UploadError::Interrupted),
        }
    };
    meter.pause();
    result
}

fn silent(idle: Duration) -> UploadError {
    UploadError::Malformed(format!("no data received for {}s", idle.as_secs_f32()))
}

/// The parts read so far.
struct Form<'a> {
    state: &'a ApiState,
    app: &'a App,
    surface: Surface,
    meter: &'a Meter,
    /// The body's length, if the client sent it: more than the file, so
    /// what the file's quota reservation starts from.
    expected_bytes: Option<u64>,
    /// The type field's value, as sent.
    declared: Option<String>,
    /// The file part's Content-Type, as sent.
    part_type: Option<String>,
    messaging_product: Option<String>,
    upload: Option<Upload>,
    /// The `file` part, when it was a URL to fetch the file from.
    url: Option<String>,
}

impl Form<'_> {
    async fn read(&mut self, body: &mut Multipart) -> Result<(), UploadError> {
        let mut parts = 0;
        while let Some(field) = step(self.state, self.meter, body.next_field()).await? {
            parts += 1;
            if parts > MAX_PARTS {
                return Err(UploadError::Malformed(format!("more than {MAX_PARTS} parts")));
            }
            if field.name().is_some_and(|name| name.len() > NAME_LIMIT) {
                return Err(UploadError::Malformed(format!(
                    "a part name is longer than {NAME_LIMIT} bytes"
                )));
            }
            let type_field = self.surface.type_field();
            match field.name() {
                Some(name) if name == type_field => {
                    if self.declared.is_some() {
                        return Err(UploadError::Malformed(format!(
                            "{type_field} was sent more than once"
                        )));
                    }
                    let declared = read_text(self.state, self.meter, field, type_field).await?;
                    // With the type first, a wrong type is refused before any byte is stored.
                    if self.upload.is_none() {
                        self.surface.check_type(self.app, Some(&declared))?;
                    }
                    self.declared = Some(declared);
                }
                Some("file") => {
                    if self.upload.is_some() || self.url.is_some() {
                        return Err(UploadError::DuplicateFile);
                    }
                    self.receive_file(field).await?;
                }
                Some("messaging_product") if self.surface == Surface::WhatsApp => {
                    if self.messaging_product.is_some() {
                        return Err(UploadError::Malformed(
                            "messaging_product was sent more than once".into(),
                        ));
                    }
                    let value = read_text(self.state, self.meter, field, "messaging_product").await?;
                    self.messaging_product = Some(value);
                }
                // Other fields are tolerated, as Gupshup does, but read with a cap.
                _ => {
                    read_text(self.state, self.meter, field, "form field").await?;
                }
            }
        }
        Ok(())
    }

    async fn receive_file(&mut self, mut field: Field<'_>) -> Result<(), UploadError> {
        // A part with neither filename nor content type is a plain form
        // value: the newer Gupshup API takes a URL there, fetched once the
        // whole form is read (and refused as before when fetching is off).
        // The filename is looked for in the header too: the parser gives
        // none when it is not UTF-8 or comes only as `filename*`, and such
        // a part is still a file (RFC 7578 §4.2), sent without a
        // Content-Type by some clients (Python's requests).
        let has_filename = field.file_name().is_some()
            || field
                .headers()
                .get(axum::http::header::CONTENT_DISPOSITION)
                .is_some_and(|value| names_a_file(value.as_bytes()));
        if !has_filename && field.content_type().is_none() {
            if self.surface != Surface::Gupshup || !self.state.fetcher.enabled() {
                return Err(UploadError::FileIsText);
            }
            self.url = Some(read_text(self.state, self.meter, field, "file").await?);
            return Ok(());
        }
        self.part_type = field.content_type().map(str::to_owned);
        // The type field, if it came first (it was checked as it came), sets
        // the size limit the file is received under; else the largest the
        // form could still declare does, since a type field after the file
        // outranks the part's Content-Type. The form's type is judged, with
        // its own limit, at the end.
        let limit = self.surface.size_limit(self.app, self.declared.as_deref());
        let app = if limit == self.app.max_file_bytes {
            std::borrow::Cow::Borrowed(self.app)
        } else {
            std::borrow::Cow::Owned(App {
                max_file_bytes: limit,
                ..self.app.clone()
            })
        };
        let filename = field.file_name().map(clean_filename).filter(|f| !f.is_empty());
        // Past the size limit, the upload begins at once and refuses the file.
        let head_bytes =
            usize::try_from(limit).map_or(READ_BEFORE_RESERVING, |l| l.min(READ_BEFORE_RESERVING));
        let (head, whole_size) = read_head(self.state, self.meter, &mut field, head_bytes).await?;
        let expected_bytes = whole_size.or(self.expected_bytes);
        let upload = self.upload.insert(
            self.state
                .vault
                .begin_sized_upload(&app, filename.as_deref(), expected_bytes)
                .await?,
        );
        for chunk in head {
            upload.write(&chunk).await?;
        }
        while let Some(chunk) = next_chunk(self.state, self.meter, &mut field).await? {
            upload.write(&chunk).await?;
        }
        Ok(())
    }

    /// The form's declared type, checked once the whole form is read: the
    /// type field, else (WhatsApp) the file part's Content-Type; and the
    /// file must be within that type's limit for its content (received
    /// under the largest the type allows, or before its type was known).
    fn checked_type(&self) -> Result<String, UploadError> {
        let declared = match self.surface {
            Surface::Gupshup => self.declared.as_deref(),
            Surface::WhatsApp => self.declared.as_deref().or(self.part_type.as_deref()),
        };
        let declared = self.surface.check_type(self.app, declared)?;
        let Some(upload) = &self.upload else {
            return Ok(declared);
        };
        // Judged by its content now (an animated sticker may be larger).
        let limit = match self.surface {
            Surface::Gupshup => self.surface.size_limit(self.app, Some(&declared)),
            Surface::WhatsApp => self
                .app
                .whatsapp_limit_of_file(&declared, upload.head())
                .map_or(self.app.max_file_bytes, |limit| {
                    limit.min(self.app.max_file_bytes)
                }),
        };
        if upload.received() > limit {
            return Err(UploadError::TooLarge { limit });
        }
        Ok(declared)
    }

    /// Undoes a started upload before the error is answered, so that nothing
    /// of a refused request is left once the client has its reply.
    async fn abandon(&mut self) {
        if let Some(upload) = self.upload.take() {
            upload.abort().await;
        }
    }
}

/// A file part's first chunks, up to `bytes` or one chunk past them, and
/// the file's size if they are the whole file.
async fn read_head(
    state: &ApiState,
    meter: &Meter,
    field: &mut Field<'_>,
    bytes: usize,
) -> Result<(Vec<Bytes>, Option<u64>), UploadError> {
    let (mut head, mut read) = (Vec::new(), 0);
    while read <= bytes {
        let Some(chunk) = next_chunk(state, meter, field).await? else {
            return Ok((head, Some(read as u64)));
        };
        read += chunk.len();
        head.push(chunk);
    }
    Ok((head, None))
}

/// A file part's next chunk. A client that stops sending is cut after the
/// idle timeout, and one that trickles below the minimum rate after a
/// window, so a slow body cannot hold an upload slot and its buffers
/// forever.
async fn next_chunk(
    state: &ApiState,
    meter: &Meter,
    field: &mut Field<'_>,
) -> Result<Option<Bytes>, UploadError> {
    let chunk = step(state, meter, field.chunk()).await?;
    if let Some(chunk) = &chunk {
        meter.delivered(chunk.len());
    }
    Ok(chunk)
}

/// The request's `Content-Length`, if it has one that reads as a number.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A small text field, read with a cap and the same idle cut-off.
async fn read_text(
    state: &ApiState,
    meter: &Meter,
    mut field: Field<'_>,
    what: &str,
) -> Result<String, UploadError> {
    let mut value = Vec::new();
    while let Some(chunk) = step(state, meter, field.chunk()).await? {
        meter.delivered(chunk.len());
        if value.len() + chunk.len() > TEXT_FIELD_LIMIT {
            return Err(UploadError::Malformed(format!(
                "{what} is longer than {TEXT_FIELD_LIMIT} bytes"
            )));
        }
        value.extend_from_slice(&chunk);
    }
    String::from_utf8(value).map_err(|_| UploadError::Malformed(format!("{what} is not valid UTF-8")))
}

/// A client that vanished mid-body lands here too: it is logged as an abort,
/// and its reply goes nowhere. The parser's detail may quote the client's
/// bytes: it is cut short.
fn malformed(error: MultipartError) -> UploadError {
    let mut why = error.body_text();
    if why.len() > DETAIL_LIMIT {
        let mut cut = DETAIL_LIMIT;
        while !why.is_char_boundary(cut) {
            cut -= 1;
        }
        why.truncate(cut);
        why.push('…');
    }
    tracing::info!(error = %why, "upload body ended or failed to parse; request aborted");
    UploadError::Malformed(why)
}
