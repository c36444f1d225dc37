//! A stored file's metadata, like the WhatsApp Cloud API's media lookup.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;

use crate::ApiState;
use crate::auth::authenticate;
use crate::error::{ApiError, ErrorBody, Task};
use crate::limits::ClientAddr;
use crate::media_path::{MediaPath, plausible};
use crate::path::ApiPath;
use crate::reply::{Success, rfc3339};

/// The fields of `InfoBody`, then `"status": "success"`.
pub type InfoReply = Success<InfoBody>;

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = InfoReply)]
pub struct InfoBody {
    id: String,
    mime_type: String,
    sha256: String,
    file_size: u64,
    created_at: String,
    expires_at: String,
}

/// A file's metadata, like the WhatsApp Cloud API's media lookup.
#[utoipa::path(
    get,
    path = "/partner/app/{app_id}/media/{media_id}/info",
    tag = "media",
    params(MediaPath),
    responses(
        (status = 200, description = "Metadata", body = InfoReply),
        (status = 401, description = "Authentication Failed", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address (see Retry-After)", body = ErrorBody),
        (status = 404, description = "Media not found", body = ErrorBody),
        (status = 500, description = "Unable to fetch requested Media", body = ErrorBody),
    ),
    security(("token" = []), ("bearer" = []))
)]
pub async fn info(
    State(state): State<ApiState>,
    ApiPath(MediaPath { app_id, media_id }): ApiPath<MediaPath>,
    headers: HeaderMap,
    client: ClientAddr,
) -> Result<Json<InfoReply>, ApiError> {
    let app = authenticate(&state, &app_id, &headers, client, Task::Fetch).await?;
    let info = state.vault.info(&app.id, &plausible(&media_id)?).await?;
    Ok(Json(Success::new(InfoBody {
        id: info.id.into_string(),
        mime_type: info.mime_type,
        sha256: info.sha256,
        file_size: info.size_bytes,
        created_at: rfc3339(info.created_at),
        expires_at: rfc3339(info.expires_at),
    })))
}
