//! `GET /{version}/{media-id}`: a medium's URL and metadata, the URL a
//! signed link valid five minutes (it works with or without the Bearer
//! token Meta's URLs need); `DELETE /{version}/{media-id}`: shredding it.

use std::time::Duration;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use mediavault_storage::{App, MediaId, MediaInfo, now_millis};
use serde::Serialize;

use super::error::{GraphError, MEDIA_DOWNLOAD_ERROR, UNKNOWN_ERROR};
use super::{GraphPath, PhoneNumberQuery, Versioned, authenticate, is_apps_phone_number};
use crate::ApiState;
use crate::auth::presented_token_id;
use crate::limits::ClientAddr;
use crate::links::{self, Disposition};
use crate::media_path::plausible;

/// How long the URL of a media lookup is valid, as Meta's are.
const URL_VALID_FOR: Duration = Duration::from_secs(5 * 60);

/// A medium as Meta's media lookup describes it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MediaUrlReply {
    #[schema(example = "whatsapp")]
    messaging_product: &'static str,
    /// Where to download the file, for five minutes; no token is needed,
    /// and a Bearer token is accepted.
    url: String,
    #[schema(example = "image/jpeg")]
    mime_type: String,
    /// Lowercase hex SHA-256 of the file.
    sha256: String,
    /// The file's size in bytes, as a string (as Meta writes it).
    #[schema(example = "303833")]
    file_size: String,
    #[schema(example = "1037543291543636")]
    id: String,
}

/// Whether the request may see the medium at all: a `phone_number_id`, when
/// given, must be one of the app's. A store failure answers with `code`.
async fn check_phone_number(
    state: &ApiState,
    app: &App,
    query: &PhoneNumberQuery,
    method: &str,
    id: &str,
    code: u32,
) -> Result<(), GraphError> {
    match &query.phone_number_id {
        Some(phone) if !is_apps_phone_number(state, app, phone, code).await? => {
            Err(GraphError::unknown_object(method, id))
        }
        _ => Ok(()),
    }
}

/// `id` as a media id, if it could name one; Graph's unknown-object error
/// for `method` otherwise.
fn media_id(id: &str, method: &str) -> Result<MediaId, GraphError> {
    plausible(id).map_err(|_| GraphError::unknown_object(method, id))
}

/// The medium `id` of `app`, or Graph's unknown-object error.
async fn find(state: &ApiState, app: &App, id: &str, method: &str) -> Result<MediaInfo, GraphError> {
    let media_id = media_id(id, method)?;
    state
        .vault
        .info(&app.id, &media_id)
        .await
        .map_err(|e| GraphError::from_read(e, method, id))
}

/// Retrieve a medium's URL and metadata (WhatsApp Cloud API).
#[utoipa::path(
    get,
    path = "/{version}/{id}",
    tag = "whatsapp",
    params(GraphPath, PhoneNumberQuery),
    responses(
        (status = 200, description = "The medium's URL (valid five minutes) and metadata", body = MediaUrlReply),
        (status = 400, description = "Graph error 100 (subcode 33: no such medium for this token)", body = super::error::GraphErrorReply),
        (status = 401, description = "Graph error 190: invalid access token", body = super::error::GraphErrorReply),
        (status = 429, description = "Graph error 4: too many failed authentications from this address", body = super::error::GraphErrorReply),
        (status = 500, description = "Graph error 131052", body = super::error::GraphErrorReply),
    ),
    security(("bearer" = []))
)]
pub async fn media_url(
    State(state): State<ApiState>,
    Versioned(GraphPath { id, .. }): Versioned,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    client: ClientAddr,
) -> Response {
    let answer = async {
        let app = authenticate(&state, &headers, client, MEDIA_DOWNLOAD_ERROR).await?;
        let query = PhoneNumberQuery::parse(query.as_deref())?;
        check_phone_number(&state, &app, &query, "get", &id, MEDIA_DOWNLOAD_ERROR).await?;
        let info = find(&state, &app, &id, "get").await?;
        let url = match &state.links {
            Some(signer) => {
                // Five minutes, as Meta's are, unless links.max_ttl is shorter.
                let valid_for = URL_VALID_FOR.min(signer.max_ttl());
                let expires_at = now_millis()
                    .saturating_add(valid_for.as_millis() as i64)
                    .min(info.expires_at);
                let token_id = presented_token_id(&headers).ok_or_else(GraphError::invalid_token)?;
                links::url(
                    &state,
                    &headers,
                    &app.id,
                    &info.id,
                    &token_id,
                    expires_at,
                    Disposition::Inline,
                )
            }
            // Without link keys, the authenticated download, which takes
            // the same Bearer token (as Meta's URL needs it).
            None => links::base_url(&state, &headers)
                .map(|base| format!("{base}/partner/app/{}/media/{}", app.id, info.id)),
        }
        .map_err(|e| GraphError::invalid_parameter(e.message))?;
        Ok::<_, GraphError>(Json(MediaUrlReply {
            messaging_product: "whatsapp",
            url,
            mime_type: info.mime_type,
            sha256: info.sha256,
            file_size: info.size_bytes.to_string(),
            id: info.id.into_string(),
        }))
    };
    answer.await.into_response()
}

/// `{"success": true}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeletedReply {
    success: bool,
}

/// Delete a medium (WhatsApp Cloud API): its key is shredded at once.
#[utoipa::path(
    delete,
    path = "/{version}/{id}",
    tag = "whatsapp",
    params(GraphPath, PhoneNumberQuery),
    responses(
        (status = 200, description = "Deleted", body = DeletedReply),
        (status = 400, description = "Graph error 100 (subcode 33: no such medium for this token)", body = super::error::GraphErrorReply),
        (status = 401, description = "Graph error 190: invalid access token", body = super::error::GraphErrorReply),
        (status = 429, description = "Graph error 4: too many failed authentications from this address", body = super::error::GraphErrorReply),
        (status = 500, description = "Graph error 1", body = super::error::GraphErrorReply),
    ),
    security(("bearer" = []))
)]
pub async fn delete_media(
    State(state): State<ApiState>,
    Versioned(GraphPath { id, .. }): Versioned,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    client: ClientAddr,
) -> Response {
    let answer = async {
        let app = authenticate(&state, &headers, client, UNKNOWN_ERROR).await?;
        let query = PhoneNumberQuery::parse(query.as_deref())?;
        check_phone_number(&state, &app, &query, "delete", &id, UNKNOWN_ERROR).await?;
        let media_id = media_id(&id, "delete")?;
        state
            .vault
            .delete(&app.id, &media_id)
            .await
            .map_err(|e| GraphError::from_read(e, "delete", &id))?;
        tracing::info!(%media_id, app_id = %app.id, "media deleted");
        Ok::<_, GraphError>(Json(DeletedReply { success: true }))
    };
    answer.await.into_response()
}
