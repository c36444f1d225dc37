//! Errors in the Graph API's envelope, as WhatsApp Cloud API clients parse
//! them: `{"error":{"message","type","code","error_subcode"?,"error_data"?,
//! "fbtrace_id"}}`, with Meta's codes where Meta has one. The trace id is
//! the request's id (`x-request-id`), so an error a client reports can be
//! found in the log; `envelope` writes it in once the handler has answered.

use axum::Json;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mediavault_storage::{AuthError, ReadError, StoreError, UploadError};
use serde::Serialize;

use crate::error::{ApiError, STORE_FULL, STORE_FULL_RETRY_AFTER};
use crate::observe::REQUEST_ID;

/// Invalid parameter.
pub const INVALID_PARAMETER: u32 = 100;
/// Invalid or expired access token.
pub const INVALID_TOKEN: u32 = 190;
/// An object that does not exist, or that the caller may not see (with 100).
pub const UNKNOWN_OBJECT: u32 = 33;
/// The caller may not do this.
pub const PERMISSION_DENIED: u32 = 10;
/// Too many calls from one client (failed authentications).
pub const TOO_MANY_CALLS: u32 = 4;
/// The app's own rate limit.
pub const RATE_LIMIT_HIT: u32 = 80007;
/// A medium could not be uploaded.
pub const MEDIA_UPLOAD_ERROR: u32 = 131053;
/// A medium could not be read.
pub const MEDIA_DOWNLOAD_ERROR: u32 = 131052;
/// Something failed on the service's side.
pub const UNKNOWN_ERROR: u32 = 1;
/// The service is briefly unable to answer.
pub const SERVICE_UNAVAILABLE: u32 = 2;

/// One Graph error, before its trace id is known.
#[derive(Debug, Clone)]
pub struct GraphError {
    pub status: StatusCode,
    pub code: u32,
    pub subcode: Option<u32>,
    pub kind: &'static str,
    pub message: String,
    /// `error_data.details`, which Meta adds to its 131xxx errors.
    pub details: Option<String>,
    pub retry_after: Option<u32>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_subcode: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_data: Option<ErrorData<'a>>,
    fbtrace_id: &'a str,
}

#[derive(Serialize)]
struct ErrorData<'a> {
    messaging_product: &'static str,
    details: &'a str,
}

impl GraphError {
    fn new(status: StatusCode, code: u32, message: String) -> GraphError {
        GraphError {
            status,
            code,
            subcode: None,
            kind: "OAuthException",
            message,
            details: None,
            retry_after: None,
        }
    }

    /// Code 100: a parameter is missing or wrong. `why` follows `(#100) `.
    pub fn invalid_parameter(why: impl std::fmt::Display) -> GraphError {
        GraphError::new(
            StatusCode::BAD_REQUEST,
            INVALID_PARAMETER,
            format!("(#{INVALID_PARAMETER}) {why}"),
        )
    }

    /// Code 190, HTTP 401: no token, or not a live token of an app.
    pub fn invalid_token() -> GraphError {
        GraphError::new(
            StatusCode::UNAUTHORIZED,
            INVALID_TOKEN,
            "Invalid OAuth access token - Cannot parse access token".to_owned(),
        )
    }

    /// Code 100, subcode 33: the object does not exist for this caller,
    /// in Meta's words. `method` is `get`, `post` or `delete`.
    pub fn unknown_object(method: &str, id: &str) -> GraphError {
        GraphError {
            subcode: Some(UNKNOWN_OBJECT),
            kind: "GraphMethodException",
            ..GraphError::new(
                StatusCode::BAD_REQUEST,
                INVALID_PARAMETER,
                format!(
                    "Unsupported {method} request. Object with ID '{id}' does not exist, cannot be \
                     loaded due to missing permissions, or does not support this operation. Please \
                     read the Graph API documentation at https://developers.facebook.com/docs/graph-api"
                ),
            )
        }
    }

    /// A method the route does not have, as Meta answers one: the object
    /// "does not support this operation", with 405 rather than Meta's 400,
    /// since no method is served there to any caller.
    pub fn unsupported_method(method: &Method, id: &str) -> GraphError {
        GraphError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            ..GraphError::unknown_object(&method.as_str().to_ascii_lowercase(), id)
        }
    }

    /// A 131xxx media error: Meta's title in the message, ours in the details.
    fn media(status: StatusCode, code: u32, details: impl Into<String>) -> GraphError {
        let title = if code == MEDIA_UPLOAD_ERROR {
            "Media upload error"
        } else {
            "Media download error"
        };
        GraphError {
            details: Some(details.into()),
            ..GraphError::new(status, code, format!("(#{code}) {title}"))
        }
    }

    /// A failure on the service's side: logged, never described.
    pub(super) fn failed(error: &StoreError, code: u32) -> GraphError {
        tracing::error!(%error, "storage failure");
        match code {
            MEDIA_UPLOAD_ERROR | MEDIA_DOWNLOAD_ERROR => {
                GraphError::media(StatusCode::INTERNAL_SERVER_ERROR, code, "Try again later")
            }
            _ => GraphError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                UNKNOWN_ERROR,
                format!("(#{UNKNOWN_ERROR}) An unknown error occurred"),
            ),
        }
    }

    /// The answer to a failed authentication; `code` names the task for a
    /// store failure (see `failed`).
    pub fn from_auth(error: AuthError, code: u32) -> GraphError {
        match error {
            AuthError::Failed => GraphError::invalid_token(),
            AuthError::Unavailable(e) => GraphError::failed(&e, code),
        }
    }

    /// The answer to a failed read of the medium `id` by `method`.
    pub fn from_read(error: ReadError, method: &str, id: &str) -> GraphError {
        match error {
            ReadError::NotFound => GraphError::unknown_object(method, id),
            ReadError::Integrity(why) => {
                tracing::error!(%why, "stored media failed verification");
                GraphError::media(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    MEDIA_DOWNLOAD_ERROR,
                    "Try again later",
                )
            }
            ReadError::Unavailable(e) => {
                let code = if method == "delete" {
                    UNKNOWN_ERROR
                } else {
                    MEDIA_DOWNLOAD_ERROR
                };
                GraphError::failed(&e, code)
            }
        }
    }

    /// A refusal of the shared limits (per-app rate, upload slots, the
    /// failed-authentication lock-out) in Graph terms: 429 is the app's
    /// rate (80007) unless `locked_out`, then it is the client's (4); 503
    /// is the service's (2).
    pub fn from_limit(error: ApiError, locked_out: bool) -> GraphError {
        let mut graph = match error.status {
            StatusCode::TOO_MANY_REQUESTS if locked_out => GraphError::new(
                error.status,
                TOO_MANY_CALLS,
                format!("(#{TOO_MANY_CALLS}) Application request limit reached"),
            ),
            StatusCode::TOO_MANY_REQUESTS => GraphError {
                details: Some(error.message),
                ..GraphError::new(
                    error.status,
                    RATE_LIMIT_HIT,
                    format!("(#{RATE_LIMIT_HIT}) Rate limit hit"),
                )
            },
            StatusCode::SERVICE_UNAVAILABLE => GraphError::unavailable(),
            _ => GraphError::new(
                error.status,
                UNKNOWN_ERROR,
                format!("(#{UNKNOWN_ERROR}) An unknown error occurred"),
            ),
        };
        graph.retry_after = error.retry_after;
        graph
    }

    fn unavailable() -> GraphError {
        GraphError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            SERVICE_UNAVAILABLE,
            format!("(#{SERVICE_UNAVAILABLE}) Service temporarily unavailable"),
        )
    }
}

impl From<UploadError> for GraphError {
    fn from(error: UploadError) -> GraphError {
        let upload_error = |status, details: String| GraphError::media(status, MEDIA_UPLOAD_ERROR, details);
        match error {
            UploadError::NotCapi => GraphError::new(
                StatusCode::FORBIDDEN,
                PERMISSION_DENIED,
                format!("(#{PERMISSION_DENIED}) Application does not have permission for this action"),
            ),
            UploadError::UnsupportedType { allowed, received } => GraphError::invalid_parameter(format!(
                "Param file must be a file with one of the following types: {}. Received file of type '{}'.",
                allowed.join(", "),
                received
            )),
            UploadError::MissingFile => GraphError::invalid_parameter("The parameter file is required."),
            UploadError::FileIsText => GraphError::invalid_parameter("Param file must be a file upload."),
            UploadError::DuplicateFile => {
                GraphError::invalid_parameter("Param file was sent more than once; send exactly one file.")
            }
            UploadError::EmptyFile => GraphError::invalid_parameter("Param file must not be empty."),
            UploadError::Malformed(why) => {
                GraphError::invalid_parameter(format!("Malformed multipart/form-data request: {why}"))
            }
            UploadError::TooLarge { limit } => upload_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("The file is larger than {limit} bytes, the most this type may have"),
            ),
            UploadError::QuotaExceeded => {
                upload_error(StatusCode::FORBIDDEN, "Storage quota exceeded".into())
            }
            UploadError::StoreFull => GraphError {
                retry_after: Some(STORE_FULL_RETRY_AFTER),
                ..upload_error(StatusCode::INSUFFICIENT_STORAGE, STORE_FULL.into())
            },
            UploadError::ContentMismatch { declared, detected } => upload_error(
                StatusCode::BAD_REQUEST,
                format!("The file's content is '{detected}', which does not match its type '{declared}'"),
            ),
            UploadError::TooSlow {
                bytes_per_second,
                window,
            } => upload_error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "Upload too slow: less than {bytes_per_second} bytes/s over {}s; the request was cut",
                    window.as_secs_f32()
                ),
            ),
            UploadError::Unavailable(e) => GraphError::failed(&e, MEDIA_UPLOAD_ERROR),
            UploadError::Reclaimed => {
                tracing::warn!("{}", UploadError::Reclaimed);
                upload_error(StatusCode::INTERNAL_SERVER_ERROR, "Try again later".into())
            }
            UploadError::Interrupted => GraphError {
                retry_after: Some(1),
                ..GraphError::unavailable()
            },
        }
    }
}

/// A Graph error travels from the handler to `envelope` in the response's
/// extensions; the body is written there, with the trace id.
#[derive(Clone)]
struct Unrendered(GraphError);

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response.extensions_mut().insert(Unrendered(self));
        response
    }
}

/// Middleware of the WhatsApp routes: writes each Graph error's body with
/// the request's id as its `fbtrace_id`.
pub async fn envelope(request: Request, next: Next) -> Response {
    let trace = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut response = next.run(request).await;
    let Some(Unrendered(error)) = response.extensions_mut().remove::<Unrendered>() else {
        return response;
    };
    let body = Envelope {
        error: Body {
            message: &error.message,
            kind: error.kind,
            code: error.code,
            error_subcode: error.subcode,
            error_data: error.details.as_deref().map(|details| ErrorData {
                messaging_product: "whatsapp",
                details,
            }),
            fbtrace_id: &trace,
        },
    };
    let (mut parts, _) = response.into_parts();
    let rendered = Json(body).into_response();
    parts.headers.extend(rendered.headers().clone());
    Response::from_parts(parts, rendered.into_body())
}

/// A Graph error, as the WhatsApp routes answer every failure.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the body `envelope` writes
pub struct GraphErrorReply {
    error: GraphErrorFields,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the body `envelope` writes
struct GraphErrorFields {
    #[schema(example = "(#100) The parameter messaging_product is required.")]
    message: String,
    /// `OAuthException`, or `GraphMethodException` for an unknown object.
    #[serde(rename = "type")]
    kind: String,
    /// Meta's code: 100 invalid parameter, 190 invalid token, 10 permission,
    /// 4 and 80007 rate limits, 131052/131053 media errors, 1 and 2 ours.
    code: u32,
    /// 33 with code 100: no such object for this token.
    error_subcode: Option<u32>,
    /// The detail of a 131xxx error.
    error_data: Option<GraphErrorData>,
    /// The request's id (`x-request-id`), as in the service's log.
    fbtrace_id: String,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the body `envelope` writes
struct GraphErrorData {
    messaging_product: String,
    details: String,
}
