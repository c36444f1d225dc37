//! `POST /{version}/{phone-number-id}/media`: Meta's upload. The form is
//! `messaging_product=whatsapp`, `file` (its part's Content-Type the file's
//! type) and `type`, read by the same streaming reader as the Gupshup
//! upload, with the app's WhatsApp list of types and a limit per type.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use mediavault_storage::App;
use serde::{Deserialize, Serialize};

use super::error::{GraphError, MEDIA_UPLOAD_ERROR};
use super::{GraphPath, Versioned, authenticate, is_apps_phone_number};
use crate::ApiState;
use crate::limits::ClientAddr;
use crate::slots::Slot;
use crate::upload::{Surface, receive_form, store};

/// `{"id": "<media id>"}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UploadedReply {
    #[schema(example = "1037543291543636")]
    id: String,
}

/// The multipart body of a WhatsApp upload.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the body; `upload_media` reads it part by part
pub struct WhatsAppUploadForm {
    /// Always `whatsapp`.
    #[schema(example = "whatsapp")]
    messaging_product: String,
    /// The file's MIME type, one of the app's WhatsApp types (Meta's list
    /// by default: audio 16 MiB, documents 100 MiB, images 5 MiB, stickers
    /// 100 KiB, video 16 MiB). Without it, the file part's Content-Type.
    #[schema(example = "image/jpeg")]
    r#type: Option<String>,
    /// The file, with its MIME type as the part's Content-Type.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// A refused upload's body is read, and thrown away, up to this many bytes.
const DRAIN_LIMIT: usize = 1024 * 1024;
/// ... and for at most this long.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Whether the request may upload at all: its token, its phone number, the
/// app's right to upload, its rate and an upload slot (held until the
/// upload ends).
async fn admit(
    state: &ApiState,
    phone_number_id: &str,
    headers: &HeaderMap,
    client: ClientAddr,
) -> Result<(App, Slot), GraphError> {
    let app = authenticate(state, headers, client, MEDIA_UPLOAD_ERROR).await?;
    if !is_apps_phone_number(state, &app, phone_number_id, MEDIA_UPLOAD_ERROR).await? {
        return Err(GraphError::unknown_object("post", phone_number_id));
    }
    app.check_may_upload()?;
    state
        .limits
        .check_upload(&app)
        .map_err(|e| GraphError::from_limit(e, false))?;
    let slot = state
        .uploads
        .try_acquire(app.id.as_str())
        .map_err(|e| GraphError::from_limit(e, false))?;
    Ok((app, slot))
}

/// Reads what is left of a refused upload's body, up to `DRAIN_LIMIT` bytes
/// and `DRAIN_TIME`. A client that writes its whole body before it reads
/// the answer (Node's fetch, which the WhatsApp SDKs use) sees a connection
/// reset, not the refusal, when the server answers and closes while it is
/// still writing. Past the bounds the connection is closed as before, so a
/// refused client cannot make the server read a large body.
async fn drain(request: Request) {
    let mut body = request.into_body().into_data_stream();
    let mut read = 0;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = body.next().await {
            read += chunk.len();
            if read > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

/// The upload's query string: Graph reads `messaging_product` there too.
#[derive(Debug, Default, Deserialize)]
struct UploadQuery {
    messaging_product: Option<String>,
}

impl UploadQuery {
    /// `raw`, read once the caller is authenticated (see
    /// `PhoneNumberQuery::parse`); other parameters are ignored.
    fn parse(raw: Option<&str>) -> Result<UploadQuery, GraphError> {
        serde_urlencoded::from_str(raw.unwrap_or_default())
            .map_err(|e| GraphError::invalid_parameter(format!("Invalid query: {e}")))
    }
}

/// Upload a medium (WhatsApp Cloud API) for the phone number's app.
#[utoipa::path(
    post,
    path = "/{version}/{id}/media",
    tag = "whatsapp",
    params(
        ("version" = String, Path, description = "The Graph API version, `vNN.N` (any)"),
        ("id" = String, Path, description = "A phone-number id mapped to the token's app"),
        ("messaging_product" = Option<String>, Query, description = "`whatsapp`, when the form has no `messaging_product` field"),
    ),
    request_body(content = WhatsAppUploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Stored", body = UploadedReply),
        (status = 400, description = "Graph error 100 (a parameter; subcode 33: the phone number is not the token's app's), or 131053 (content contradicts the type)", body = super::error::GraphErrorReply),
        (status = 401, description = "Graph error 190: invalid access token", body = super::error::GraphErrorReply),
        (status = 403, description = "Graph error 10 (the app may not upload) or 131053 (storage quota exceeded)", body = super::error::GraphErrorReply),
        (status = 408, description = "Graph error 131053: the body came slower than the minimum upload rate", body = super::error::GraphErrorReply),
        (status = 413, description = "Graph error 131053: larger than the type's limit", body = super::error::GraphErrorReply),
        (status = 429, description = "Graph error 80007 (the app's upload rate or share) or 4 (failed authentications)", body = super::error::GraphErrorReply),
        (status = 500, description = "Graph error 131053", body = super::error::GraphErrorReply),
        (status = 503, description = "Graph error 2: too many uploads in progress (see Retry-After)", body = super::error::GraphErrorReply),
        (status = 507, description = "Graph error 131053: the server is out of storage space (see Retry-After)", body = super::error::GraphErrorReply),
    ),
    security(("bearer" = []))
)]
pub async fn upload_media(
    State(state): State<ApiState>,
    Versioned(GraphPath { id, .. }): Versioned,
    headers: HeaderMap,
    client: ClientAddr,
    request: Request,
) -> Response {
    upload(&state, &id, &headers, client, request)
        .await
        .into_response()
}

async fn upload(
    state: &ApiState,
    phone_number_id: &str,
    headers: &HeaderMap,
    client: ClientAddr,
    request: Request,
) -> Result<Json<UploadedReply>, GraphError> {
    let (app, _slot) = match admit(state, phone_number_id, headers, client).await {
        Ok(admitted) => admitted,
        Err(refusal) => {
            drain(request).await;
            return Err(refusal);
        }
    };
    let started = Instant::now();
    // Graph takes a parameter from the query string as from the form: some
    // clients (whatsapp-api-js among them) send `messaging_product` there.
    let query = match UploadQuery::parse(request.uri().query()) {
        Ok(query) => query,
        Err(refusal) => {
            drain(request).await;
            return Err(refusal);
        }
    };
    let form = receive_form(state, &app, headers, request, Surface::WhatsApp).await?;
    let product = form
        .messaging_product
        .as_deref()
        .or(query.messaging_product.as_deref());
    let refusal = match product {
        None => Some(GraphError::invalid_parameter(
            "The parameter messaging_product is required.",
        )),
        // Graph's enum values are read in either case.
        Some(product) if product.eq_ignore_ascii_case("whatsapp") => None,
        Some(other) => Some(GraphError::invalid_parameter(format!(
            "Param messaging_product must be one of {{WHATSAPP}} - got \"{other}\"."
        ))),
    };
    let upload = match (refusal, form.file) {
        (Some(refusal), file) => {
            if let Some(upload) = file {
                upload.abort().await;
            }
            return Err(refusal);
        }
        (None, Some(upload)) => upload,
        (None, None) => return Err(mediavault_storage::UploadError::MissingFile.into()),
    };
    let media_id = store(&app, upload, &form.declared, started).await?;
    Ok(Json(UploadedReply {
        id: media_id.into_string(),
    }))
}
