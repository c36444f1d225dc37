//! `POST /partner/app/{appId}/media`: the Gupshup upload. The multipart body
//! is read part by part; the `file` part streams straight into the vault, in
//! whichever order the parts come. Checks answer in the contract's order:
//! 401, 400 non-CAPI, 429, 400 `file_type`/`file`, 413, 400 content, 500.

use axum::Json;
use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::{Multipart, State};
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use mediavault_storage::{App, Upload, UploadError};
use serde::Serialize;

use crate::ApiState;
use crate::auth::authenticate;
use crate::error::{ApiError, ErrorBody};
use crate::limits::ClientAddr;
use crate::path::ApiPath;

/// Small text fields are read up to this many bytes.
const TEXT_FIELD_LIMIT: usize = 4 * 1024;
/// Parts accepted in one request (`file_type`, `file`, and a few extras).
const MAX_PARTS: usize = 16;
/// Longest original filename kept for Content-Disposition.
const FILENAME_LIMIT: usize = 255;

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadReply {
    media_id: String,
    status: &'static str,
}

/// The multipart body of an upload, in either order of parts.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the body; `upload` reads it part by part
pub struct UploadForm {
    /// One of the app's allowed MIME types.
    #[schema(example = "image/png")]
    file_type: String,
    /// The file, at most the app's size limit (104,857,600 bytes by default).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Upload a file and get its media id (Gupshup-compatible).
#[utoipa::path(
    post,
    path = "/partner/app/{app_id}/media",
    tag = "media",
    params(("app_id" = String, Path, description = "The app's id")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Stored", body = UploadReply),
        (status = 400, description = "Not a CAPI app, type not allowed, no file, bad body, or content contradicts file_type", body = ErrorBody),
        (status = 401, description = "Authentication Failed", body = ErrorBody),
        (status = 413, description = "File size exceeds the maximum limit!", body = ErrorBody),
        (status = 429, description = "Too many uploads for this app, or too many failed authentications from this address (see Retry-After)", body = ErrorBody),
        (status = 500, description = "Unable to upload requested Media", body = ErrorBody),
    ),
    security(("token" = []), ("bearer" = []))
)]
pub async fn upload(
    State(state): State<ApiState>,
    ApiPath(app_id): ApiPath<String>,
    headers: HeaderMap,
    client: ClientAddr,
    body: Result<Multipart, MultipartRejection>,
) -> Result<Json<UploadReply>, ApiError> {
    let app = authenticate(&state, &app_id, &headers, client).await?;
    app.check_may_upload()?;
    state.limits.check_upload(&app)?;
    // A bounded number of uploads at once: past it, refuse rather than
    // queue memory and connections.
    let Ok(_permit) = state.uploads.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many uploads in progress; retry shortly",
        )
        .with_retry_after(1));
    };
    let started = Instant::now();
    let mut body = body.map_err(|e| UploadError::Malformed(e.body_text()))?;
    let mut form = Form {
        state: &state,
        app: &app,
        declared: None,
        upload: None,
    };
    match form.read(&mut body).await {
        Ok(()) => {}
        Err(error) => {
            form.abandon().await;
            return Err(error.into());
        }
    }
    let declared = match app.check_declared_type(form.declared.as_deref()) {
        Ok(declared) => declared,
        Err(error) => {
            form.abandon().await;
            return Err(error.into());
        }
    };
    let upload = form.upload.take().ok_or(UploadError::MissingFile)?;
    let size = upload.received();
    let media_id = upload.finish(&declared).await?;
    metrics::counter!("mediavault_upload_bytes_total").increment(size);
    metrics::counter!("mediavault_uploads_total").increment(1);
    metrics::histogram!("mediavault_upload_duration_seconds").record(started.elapsed().as_secs_f64());
    tracing::info!(%media_id, app_id = %app.id, "media uploaded");
    Ok(Json(UploadReply {
        media_id,
        status: "success",
    }))
}

/// The parts read so far.
struct Form<'a> {
    state: &'a ApiState,
    app: &'a App,
    declared: Option<String>,
    upload: Option<Upload>,
}

impl Form<'_> {
    async fn read(&mut self, body: &mut Multipart) -> Result<(), UploadError> {
        let mut parts = 0;
        while let Some(field) = body.next_field().await.map_err(malformed)? {
            parts += 1;
            if parts > MAX_PARTS {
                return Err(UploadError::Malformed(format!("more than {MAX_PARTS} parts")));
            }
            match field.name() {
                Some("file_type") => {
                    if self.declared.is_some() {
                        return Err(UploadError::Malformed("file_type was sent more than once".into()));
                    }
                    let declared = read_text(field, "file_type").await?;
                    // With the type first, a wrong type is refused before any byte is stored.
                    if self.upload.is_none() {
                        self.app.check_declared_type(Some(&declared))?;
                    }
                    self.declared = Some(declared);
                }
                Some("file") => {
                    if self.upload.is_some() {
                        return Err(UploadError::DuplicateFile);
                    }
                    self.receive_file(field).await?;
                }
                // Other fields are tolerated, as Gupshup does, but read with a cap.
                _ => {
                    read_text(field, "form field").await?;
                }
            }
        }
        Ok(())
    }

    async fn receive_file(&mut self, mut field: Field<'_>) -> Result<(), UploadError> {
        // A part with neither filename nor content type is a plain form
        // value: the newer Gupshup API takes a URL there, which is not supported.
        if field.file_name().is_none() && field.content_type().is_none() {
            return Err(UploadError::FileIsText);
        }
        let filename = field.file_name().map(clean_filename).filter(|f| !f.is_empty());
        let upload = self.upload.insert(
            self.state
                .vault
                .begin_upload(self.app, filename.as_deref())
                .await?,
        );
        let idle = self.state.idle_timeout;
        // A client that stops sending is cut after `idle`, so a trickling
        // body cannot hold an upload slot and its buffers forever.
        let shutdown = self.state.shutdown.clone();
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(idle, field.chunk()) => next,
                () = shutdown.cancelled() => return Err(UploadError::Interrupted),
            };
            let chunk = next
                .map_err(|_| UploadError::Malformed(format!("no data received for {}s", idle.as_secs())))?
                .map_err(malformed)?;
            let Some(chunk) = chunk else { break };
            upload.write(&chunk).await?;
        }
        Ok(())
    }

    /// Undoes a started upload before the error is answered, so that nothing
    /// of a refused request is left once the client has its reply.
    async fn abandon(&mut self) {
        if let Some(upload) = self.upload.take() {
            upload.abort().await;
        }
    }
}

async fn read_text(mut field: Field<'_>, what: &str) -> Result<String, UploadError> {
    let mut value = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
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
/// and its reply goes nowhere.
fn malformed(error: axum::extract::multipart::MultipartError) -> UploadError {
    tracing::info!(%error, "upload body ended or failed to parse; request aborted");
    UploadError::Malformed(error.body_text())
}

/// The last path component, without control characters, at most 255 bytes.
/// Only ever used as a label in Content-Disposition, never as a path.
fn clean_filename(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut name: String = base.chars().filter(|c| !c.is_control()).collect();
    if name.len() > FILENAME_LIMIT {
        let mut cut = FILENAME_LIMIT;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::clean_filename;

    #[test]
    fn filenames_lose_paths_and_control_characters() {
        assert_eq!(clean_filename("../../etc/passwd"), "passwd");
        assert_eq!(clean_filename("C:\\Users\\me\\photo.png"), "photo.png");
        assert_eq!(clean_filename("a\r\nb.txt"), "ab.txt");
        assert_eq!(clean_filename(&"é".repeat(200)).len(), 254);
    }
}
