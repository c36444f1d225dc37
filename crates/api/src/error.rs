//! The one place errors become responses: `{"message": "...", "status": "error"}`
//! with the Gupshup messages. 5xx bodies never carry internal detail; the log does.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mediavault_fetch::FetchError;
use mediavault_storage::{AdminError, AuthError, ReadError, StoreError, UploadError};
use serde::Serialize;

use crate::links::LinkError;

pub const AUTH_FAILED: &str = "Authentication Failed";
pub const NOT_CAPI: &str = "Only CAPI apps allowed to generate media ID";
pub const TOO_LARGE: &str = "File size exceeds the maximum limit!";
pub const QUOTA_EXCEEDED: &str = "Storage quota exceeded";
pub const STORE_FULL: &str = "The server is out of storage space; retry later";
/// Seconds a client is asked to wait when the store is out of room: about
/// as long as space takes to be freed, by deletes or the reaper's passes.
pub const STORE_FULL_RETRY_AFTER: u32 = 60;
pub const UPLOAD_FAILED: &str = "Unable to upload requested Media";
pub const MEDIA_NOT_FOUND: &str = "Media not found";
pub const READ_FAILED: &str = "Unable to fetch requested Media";
pub const DELETE_FAILED: &str = "Unable to delete requested Media";
pub const REQUEST_FAILED: &str = "Unable to complete the request; try again later";
/// Before the reason an upload by URL could not fetch its file.
pub const FETCH_FAILED: &str = "Unable to fetch the file URL";
pub const INVALID_LINK: &str = "Invalid link";
pub const LINK_EXPIRED: &str = "Link expired";
pub const LINK_REVOKED: &str = "Link revoked: the API token it was made with is no longer valid";
pub const LINKS_DISABLED: &str = "Signed links are not enabled";

/// What a route was asked to do. When a store fails, at whichever step
/// (authentication included), the 500 names this task, not another route's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Task {
    Upload,
    /// A download, its headers (HEAD), or the file's metadata.
    Fetch,
    Delete,
    /// The admin API.
    Admin,
}

impl Task {
    /// The 500 message of this task.
    pub fn failed(self) -> &'static str {
        match self {
            Task::Upload => UPLOAD_FAILED,
            Task::Fetch => READ_FAILED,
            Task::Delete => DELETE_FAILED,
            Task::Admin => REQUEST_FAILED,
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u32>,
}

/// Every error: `{"message": "...", "status": "error"}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    #[schema(example = "Media not found")]
    message: &'a str,
    #[schema(example = "error")]
    status: &'static str,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// The answer to a refused or failed authentication for `task`.
    pub fn from_auth(error: AuthError, task: Task) -> ApiError {
        match error {
            AuthError::Failed => ApiError::new(StatusCode::UNAUTHORIZED, AUTH_FAILED),
            AuthError::Unavailable(e) => unavailable(&e, task.failed()),
        }
    }

    /// The answer to a failed read of media for `task`.
    pub fn from_read(error: ReadError, task: Task) -> ApiError {
        match error {
            ReadError::NotFound => ApiError::new(StatusCode::NOT_FOUND, MEDIA_NOT_FOUND),
            ReadError::Integrity(why) => {
                tracing::error!(%why, "stored media failed verification");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, task.failed())
            }
            ReadError::Unavailable(e) => unavailable(&e, task.failed()),
        }
    }

    pub fn with_retry_after(mut self, seconds: u32) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            message: &self.message,
            status: "error",
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

fn unavailable(error: &StoreError, message: &str) -> ApiError {
    tracing::error!(%error, "storage failure");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
}

impl From<UploadError> for ApiError {
    fn from(error: UploadError) -> ApiError {
        let message = match error {
            UploadError::NotCapi => NOT_CAPI.to_owned(),
            UploadError::UnsupportedType { allowed, received } => format!(
                "Param file must be a file with one of the following types: {}. Received file of type '{}'.",
                allowed.join(", "),
                received
            ),
            UploadError::MissingFile => {
                "Param file is required: send the file as a multipart/form-data part named 'file'.".to_owned()
            }
            UploadError::FileIsText => {
                "Param file must be a file upload; upload by URL is not supported.".to_owned()
            }
            UploadError::DuplicateFile => {
                "Param file was sent more than once; send exactly one file.".to_owned()
            }
            UploadError::EmptyFile => "Param file must not be empty.".to_owned(),
            UploadError::Malformed(why) => format!("Malformed multipart/form-data request: {why}"),
            UploadError::TooLarge { .. } => return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE),
            UploadError::QuotaExceeded => return ApiError::new(StatusCode::FORBIDDEN, QUOTA_EXCEEDED),
            UploadError::StoreFull => {
                return ApiError::new(StatusCode::INSUFFICIENT_STORAGE, STORE_FULL)
                    .with_retry_after(STORE_FULL_RETRY_AFTER);
            }
            UploadError::ContentMismatch { declared, detected } => {
                format!("Param file content is '{detected}', which does not match file_type '{declared}'.")
            }
            UploadError::TooSlow {
                bytes_per_second,
                window,
            } => {
                return ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "Upload too slow: less than {bytes_per_second} bytes/s over {}s; the request was cut",
                        window.as_secs_f32()
                    ),
                );
            }
            UploadError::Unavailable(e) => return unavailable(&e, Task::Upload.failed()),
            UploadError::Reclaimed => {
                tracing::warn!("{}", UploadError::Reclaimed);
                return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Task::Upload.failed());
            }
            UploadError::Interrupted => {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The service is restarting; retry the upload",
                )
                .with_retry_after(1);
            }
        };
        ApiError::bad_request(message)
    }
}

/// A fetch by URL that failed is the caller's URL at fault (or its
/// server): 400, naming the class of the failure and nothing else.
impl From<FetchError> for ApiError {
    fn from(error: FetchError) -> ApiError {
        ApiError::bad_request(format!("{FETCH_FAILED}: {error}"))
    }
}

/// A refused link: 403 when it is not one of ours or its token was
/// revoked, 410 once it has expired.
impl From<LinkError> for ApiError {
    fn from(error: LinkError) -> ApiError {
        match error {
            LinkError::Invalid => ApiError::new(StatusCode::FORBIDDEN, INVALID_LINK),
            LinkError::Expired => ApiError::new(StatusCode::GONE, LINK_EXPIRED),
            LinkError::Revoked => ApiError::new(StatusCode::FORBIDDEN, LINK_REVOKED),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> ApiError {
        ApiError::from_read(error, Task::Fetch)
    }
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> ApiError {
        match error {
            AdminError::AppNotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "App not found"),
            AdminError::TokenNotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "Token not found"),
            AdminError::Invalid(why) => ApiError::bad_request(why),
            AdminError::Conflict(why) => ApiError::new(StatusCode::CONFLICT, why),
            AdminError::Unavailable(e) => unavailable(&e, Task::Admin.failed()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        unavailable(&error, REQUEST_FAILED)
    }
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not found")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, Request};
    use tower::ServiceExt;

    use super::*;
    use crate::ApiState;
    use crate::auth::ConfiguredToken;
    use crate::links::{Disposition, LinkKeys, LinkSigner};
    use mediavault_storage::{AppId, MediaId, TokenId};
    use std::sync::Arc;

    const APP: &str = "0b5e2c4e-6a53-4f4e-9d2b-6f0f7e1c2a10";
    const MEDIA: &str =
        "/partner/app/0b5e2c4e-6a53-4f4e-9d2b-6f0f7e1c2a10/media/0b5e2c4e-6a53-4f4e-9d2b-6f0f7e1c2a11";

    /// A router over a database that was never migrated: every query fails,
    /// token look-ups first.
    async fn failing_router(dir: &std::path::Path, signer: Arc<LinkSigner>) -> axum::Router {
        let vault = crate::testing::vault(dir).await;
        crate::router(ApiState {
            admin_token: Some(ConfiguredToken::new("admin")),
            links: Some(signer),
            ..ApiState::new(vault)
        })
    }

    /// When the token store fails, each route answers with its own task's
    /// message: a failed download does not claim to be a failed upload.
    #[tokio::test]
    async fn a_failed_authentication_answers_for_its_route() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Arc::new(LinkSigner::new(
            LinkKeys::parse(&LinkKeys::generate_line("l1")).unwrap(),
            std::time::Duration::from_secs(60),
        ));
        // A link names the token it was made with, whose liveness is asked
        // of the store at each use.
        let followed = format!(
            "/l/{}",
            signer.token(
                &AppId::new(APP),
                &MediaId::new("0b5e2c4e6a534f4e9d2b6f0f7e1c2a11"),
                &TokenId::new("t1"),
                mediavault_storage::now_millis() + 60_000,
                Disposition::Attachment,
            )
        );
        let app = failing_router(dir.path(), signer).await;
        let upload = format!("/partner/app/{APP}/media");
        let info = format!("{MEDIA}/info");
        let link = format!("{MEDIA}/link");
        let cases = [
            (Method::POST, upload.as_str(), "token", UPLOAD_FAILED),
            (Method::GET, MEDIA, "token", READ_FAILED),
            (Method::HEAD, MEDIA, "token", READ_FAILED),
            (Method::GET, info.as_str(), "token", READ_FAILED),
            (Method::POST, link.as_str(), "token", READ_FAILED),
            (Method::GET, followed.as_str(), "", READ_FAILED),
            (Method::HEAD, followed.as_str(), "", READ_FAILED),
            (Method::DELETE, MEDIA, "token", DELETE_FAILED),
            (Method::GET, "/admin/apps", "Bearer admin", REQUEST_FAILED),
        ];
        for (method, uri, authorization, message) in cases {
            let request = Request::builder()
                .method(method.clone())
                .uri(uri)
                .header("authorization", authorization)
                .body(Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{method} {uri}"
            );
            if method == Method::HEAD {
                continue;
            }
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                body,
                serde_json::json!({"message": message, "status": "error"}),
                "{method} {uri}"
            );
        }
    }
}
