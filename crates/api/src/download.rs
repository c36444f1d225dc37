//! Downloading media by id: the file itself, whole, by byte range, or
//! (HEAD) its headers alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use mediavault_storage::{AppId, MediaId, MediaInfo, ReadError, StoreError, TokenId, to_datetime};
use utoipa::IntoParams;

use crate::ApiState;
use crate::auth::authenticate;
use crate::conditions::{self, Precondition};
use crate::error::{ApiError, ErrorBody, Task};
use crate::limits::ClientAddr;
use crate::links::Disposition;
use crate::media_path::{MediaPath, plausible};
use crate::pace::paced;
use crate::path::ApiPath;
use crate::range::{self, RangeRequest};

/// The request headers a download (GET or HEAD) honours. Documentation
/// only: the handlers read them from the header map.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(dead_code, reason = "describes headers read from the HeaderMap")]
pub struct DownloadHeaders {
    /// `bytes=a-b`, `bytes=a-` or `bytes=-n`
    #[param(rename = "Range")]
    range: Option<String>,
    /// The ETag (quoted sha256) of a cached copy: 304 if it is this file's
    #[param(rename = "If-None-Match")]
    if_none_match: Option<String>,
    /// The date of a cached copy: 304 unless the file is newer (ignored
    /// with If-None-Match)
    #[param(rename = "If-Modified-Since")]
    if_modified_since: Option<String>,
    /// ETags (compared strongly) or `*`: 412 unless one is this file's
    #[param(rename = "If-Match")]
    if_match: Option<String>,
    /// 412 if the file is newer than this date (ignored with If-Match)
    #[param(rename = "If-Unmodified-Since")]
    if_unmodified_since: Option<String>,
    /// The range is sent only if this names the file (its ETag, compared
    /// strongly, or its Last-Modified date); otherwise the whole file
    #[param(rename = "If-Range")]
    if_range: Option<String>,
}

/// Download a file: whole or one byte range.
#[utoipa::path(
    get,
    path = "/partner/app/{app_id}/media/{media_id}",
    tag = "media",
    params(
        MediaPath,
        DownloadHeaders,
    ),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 304, description = "The cached copy is current"),
        (status = 412, description = "Precondition failed (If-Match or If-Unmodified-Since)", body = ErrorBody),
        (status = 401, description = "Authentication Failed", body = ErrorBody),
        (status = 404, description = "Media not found (unknown, expired, deleted, or another app's)", body = ErrorBody),
        (status = 416, description = "Requested range not satisfiable", body = ErrorBody),
        (status = 500, description = "Unable to fetch requested Media", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address, or this app has its most downloads in progress (see Retry-After)", body = ErrorBody),
        (status = 503, description = "Too many downloads in progress (see Retry-After)", body = ErrorBody),
    ),
    security(("token" = []), ("bearer" = []))
)]
pub async fn download(
    State(state): State<ApiState>,
    ApiPath(path): ApiPath<MediaPath>,
    headers: HeaderMap,
    client: ClientAddr,
) -> Result<Response, ApiError> {
    respond(state, path, headers, client, Payload::File).await
}

/// The headers a download would send (type, length, ETag, range), without
/// the file: nothing is read from the store.
#[utoipa::path(
    head,
    path = "/partner/app/{app_id}/media/{media_id}",
    tag = "media",
    params(
        MediaPath,
        DownloadHeaders,
    ),
    responses(
        (status = 200, description = "The file's headers"),
        (status = 206, description = "The requested range's headers"),
        (status = 304, description = "The cached copy is current"),
        (status = 412, description = "Precondition failed (If-Match or If-Unmodified-Since)"),
        (status = 401, description = "Authentication Failed"),
        (status = 429, description = "Too many failed authentications from this address (see Retry-After)"),
        (status = 404, description = "Media not found (unknown, expired, deleted, or another app's)"),
        (status = 416, description = "Requested range not satisfiable"),
        (status = 500, description = "Unable to fetch requested Media"),
    ),
    security(("token" = []), ("bearer" = []))
)]
pub async fn download_head(
    State(state): State<ApiState>,
    ApiPath(path): ApiPath<MediaPath>,
    headers: HeaderMap,
    client: ClientAddr,
) -> Result<Response, ApiError> {
    respond(state, path, headers, client, Payload::HeadersOnly).await
}

/// What a download answers with: the file, or only its headers.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Payload {
    File,
    HeadersOnly,
}

async fn respond(
    state: ApiState,
    MediaPath { app_id, media_id }: MediaPath,
    headers: HeaderMap,
    client: ClientAddr,
    payload: Payload,
) -> Result<Response, ApiError> {
    let app = authenticate(&state, &app_id, &headers, client, Task::Fetch).await?;
    let media_id = plausible(&media_id)?;
    deliver(
        &state,
        &app.id,
        &media_id,
        None,
        &headers,
        payload,
        Disposition::Attachment,
    )
    .await
}

/// The answer to a download of `media_id` of `app_id` by a caller allowed
/// to read it (by the app's token, or by a signed link): its headers, then
/// the file whole or the range asked for, or 304 when the caller's copy is
/// current. Every download, whatever allowed it, goes through here; one a
/// link allows (`granted_by`, the token the link was made with) stops once
/// that token is revoked.
pub(crate) async fn deliver(
    state: &ApiState,
    app_id: &AppId,
    media_id: &MediaId,
    granted_by: Option<TokenId>,
    headers: &HeaderMap,
    payload: Payload,
    disposition: Disposition,
) -> Result<Response, ApiError> {
    let media = state.vault.find(app_id, media_id).await?.granted_by(granted_by);
    let info = &media.info;
    let size = info.size_bytes;
    let etag = format!("\"{}\"", info.sha256);

    let mut response = Response::new(Body::empty());
    describe(info, &etag, disposition, response.headers_mut());
    match conditions::evaluate(headers, &etag, info.created_at.div_euclid(1000)) {
        Precondition::Holds => {}
        Precondition::NotModified => {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return Ok(response);
        }
        Precondition::Failed => {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "Precondition failed",
            ));
        }
    }
    let last_modified = response.headers()[header::LAST_MODIFIED].clone();
    let if_range = headers
        .get(header::IF_RANGE)
        .map(|v| v.to_str().unwrap_or_default());
    let range_header = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| range::if_range_holds(if_range, &etag, last_modified.to_str().unwrap_or_default()));
    let range = match range::parse(range_header, size) {
        RangeRequest::Full => 0..size,
        RangeRequest::Partial(range) => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let content_range = format!("bytes {}-{}/{size}", range.start, range.end - 1);
            response
                .headers_mut()
                .insert(header::CONTENT_RANGE, header_value(&content_range));
            range
        }
        RangeRequest::Unsatisfiable => {
            let mut refused = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "Requested range not satisfiable",
            )
            .into_response();
            refused
                .headers_mut()
                .insert(header::CONTENT_RANGE, header_value(&format!("bytes */{size}")));
            return Ok(refused);
        }
    };
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(range.end - range.start));
    if payload == Payload::HeadersOnly {
        return Ok(response);
    }
    let slot = state.downloads.try_acquire(info.app_id.as_str())?;
    let length = range.end - range.start;
    // Fused: a response small enough is read to its end before the status
    // goes out, and what is left of it is still chained into the body.
    let mut plaintext = state.vault.read(&media, range).await?.fuse();
    let sent = Arc::new(AtomicU64::new(0));
    let counted = {
        let sent = sent.clone();
        move |piece: &Bytes| {
            sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
            metrics::counter!("mediavault_download_bytes_total").increment(piece.len() as u64);
        }
    };
    // Before the status goes out, a small response is verified whole and a
    // large one's first piece: a file that fails there is a clean 500. A
    // later failure can only cut the body short of its Content-Length
    // (never unverified bytes), and is counted and logged as a failure.
    let verified: Vec<Bytes> = if length <= VERIFIED_BEFORE_STATUS {
        plaintext.by_ref().try_collect().await?
    } else {
        plaintext.try_next().await?.into_iter().collect()
    };
    let media_id = info.id.clone();
    let rest = plaintext.inspect_err(move |error| {
        let reason = match error {
            ReadError::NotFound => "deleted",
            ReadError::Integrity(_) => "integrity",
            ReadError::Unavailable(_) => "store",
        };
        metrics::counter!("mediavault_downloads_cut_total", "reason" => reason).increment(1);
        tracing::error!(
            %media_id, reason, sent = sent.load(Ordering::Relaxed), length,
            "download cut short: {error}"
        );
    });
    let body = futures::stream::iter(verified.into_iter().map(Ok))
        .chain(rest)
        .inspect_ok(counted)
        // The slot is held until the body is sent or dropped.
        .map(move |piece| {
            let _held = &slot;
            piece
        });
    let body = cut_at_shutdown(body.boxed(), state.shutdown.clone());
    *response.body_mut() = Body::from_stream(paced(Box::pin(body), state.min_download_rate));
    Ok(response)
}

/// `body`, cut short (ending in an error) once the server's drain time is
/// over: a download still running then would hold the process past its
/// shutdown; its client may resume it with a Range request.
fn cut_at_shutdown(
    body: futures::stream::BoxStream<'static, Result<Bytes, ReadError>>,
    shutdown: tokio_util::sync::CancellationToken,
) -> impl futures::Stream<Item = Result<Bytes, ReadError>> {
    futures::stream::unfold(Some((body, shutdown)), |state| async move {
        let (mut body, shutdown) = state?;
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                tracing::info!("download cut short: the server is stopping");
                Some((Err(ReadError::Unavailable(StoreError::Stopping)), None))
            }
            piece = body.next() => piece.map(|piece| (piece, Some((body, shutdown)))),
        }
    })
}

/// Responses up to this size are verified whole before the status is sent.
/// It bounds what one download holds in memory before sending (eight
/// segments), and covers most media a messaging API carries.
const VERIFIED_BEFORE_STATUS: u64 = 512 * 1024;

fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).expect("ASCII header value")
}

/// Headers that describe a stored file, to be shown as `disposition` says.
fn describe(info: &MediaInfo, etag: &str, disposition: Disposition, out: &mut HeaderMap) {
    let content_type = HeaderValue::from_str(&info.mime_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    out.insert(header::CONTENT_TYPE, content_type);
    out.insert(header::ETAG, header_value(etag));
    let modified = to_datetime(info.created_at)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    out.insert(header::LAST_MODIFIED, header_value(&modified));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Kept by the client alone, and asked again before each use (a 304 by
    // the ETag): a copy must not outlive the file's deletion or expiry.
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache, no-transform"),
    );
    // A file is whatever a client uploaded, served from this service's own
    // origin: a browser must neither guess it to be a page nor run anything
    // in it (an HTML or SVG file shown inline, say), so it is shown, if at
    // all, in a sandbox with no access to the origin and no requests of its
    // own.
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(FILE_CSP),
    );
    out.insert(
        header::CONTENT_DISPOSITION,
        content_disposition(disposition, info.filename.as_deref()),
    );
}

/// The policy every file is served under: a sandbox (a unique origin, no
/// scripts, forms or plugins), nothing loaded by it, inline styles alone
/// allowed so that a browser's own viewers render.
const FILE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

/// `attachment` or `inline`, then `; filename="ascii";
/// filename*=UTF-8''percent-encoded` (RFC 6266). Without a filename, the
/// bare word: an attachment with no header would be shown inline by a
/// browser.
fn content_disposition(disposition: Disposition, filename: Option<&str>) -> HeaderValue {
    let bare = HeaderValue::from_static(disposition.as_str());
    let Some(filename) = filename else {
        return bare;
    };
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for byte in filename.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderValue::from_str(&format!(
        "{}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}",
        disposition.as_str()
    ))
    .unwrap_or(bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body read to its end (as a buffering layer or HTTP/2 does; hyper's
    /// HTTP/1 writer stops at Content-Length) ends cleanly, whether it was
    /// verified whole before the status or not.
    #[tokio::test]
    async fn a_download_body_can_be_read_past_its_last_byte() {
        use axum::http::{Request, StatusCode};
        use mediavault_storage::NewApp;
        use tower::ServiceExt;

        let dir = tempfile::tempdir().unwrap();
        let vault = crate::testing::vault(dir.path()).await;
        vault.migrate().await.unwrap();
        let app = vault
            .create_app(NewApp {
                name: "a".into(),
                capi: true,
                ..NewApp::default()
            })
            .await
            .unwrap();
        let token = vault.issue_token(&app.id, None).await.unwrap().token;
        let router = crate::router(crate::ApiState::new(vault.clone()));
        for len in [10, VERIFIED_BEFORE_STATUS as usize + 1] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut upload = vault.begin_upload(&app, None).await.unwrap();
            upload.write(&bytes).await.unwrap();
            let id = upload.finish("text/plain").await.unwrap();
            let request = Request::get(format!("/partner/app/{}/media/{id}", app.id))
                .header("token", &token)
                .body(Body::empty())
                .unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            assert!(body == bytes, "{len} bytes");
        }
    }

    #[test]
    fn filenames_are_quoted_safely() {
        let name = Some("a \"b\"\\c é.png");
        let value = content_disposition(Disposition::Attachment, name);
        assert_eq!(
            value.to_str().unwrap(),
            "attachment; filename=\"a _b__c _.png\"; filename*=UTF-8''a%20%22b%22%5Cc%20%C3%A9.png"
        );
        let value = content_disposition(Disposition::Inline, name);
        assert!(
            value
                .to_str()
                .unwrap()
                .starts_with("inline; filename=\"a _b__c _.png\"; ")
        );
    }

    #[test]
    fn without_a_filename_only_inline_is_said() {
        assert_eq!(content_disposition(Disposition::Inline, None), "inline");
        assert_eq!(content_disposition(Disposition::Attachment, None), "attachment");
    }
}
