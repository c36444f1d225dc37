//! Deleting a stored file: its key is shredded at once, its blob removed.

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
use crate::reply::Success;

/// The fields of `DeleteBody`, then `"status": "success"`.
pub type DeleteReply = Success<DeleteBody>;

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = DeleteReply)]
pub struct DeleteBody {
    message: &'static str,
}

/// Delete a file: its key is shredded at once, its blob removed.
#[utoipa::path(
    delete,
    path = "/partner/app/{app_id}/media/{media_id}",
    tag = "media",
    params(MediaPath),
    responses(
        (status = 200, description = "Media deleted successfully", body = DeleteReply),
        (status = 401, description = "Authentication Failed", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address (see Retry-After)", body = ErrorBody),
        (status = 404, description = "Media not found", body = ErrorBody),
        (status = 500, description = "Unable to delete requested Media", body = ErrorBody),
    ),
    security(("token" = []), ("bearer" = []))
)]
pub async fn delete(
    State(state): State<ApiState>,
    ApiPath(MediaPath { app_id, media_id }): ApiPath<MediaPath>,
    headers: HeaderMap,
    client: ClientAddr,
) -> Result<Json<DeleteReply>, ApiError> {
    let app = authenticate(&state, &app_id, &headers, client, Task::Delete).await?;
    state
        .vault
        .delete(&app.id, &plausible(&media_id)?)
        .await
        .map_err(|error| ApiError::from_read(error, Task::Delete))?;
    tracing::info!(%media_id, app_id = %app.id, "media deleted");
    Ok(Json(Success::new(DeleteBody {
        message: "Media deleted successfully",
    })))
}
