//! Liveness and readiness for orchestrators.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::ApiState;
use crate::reply::Success;

/// The process is up; no dependency is asked.
#[utoipa::path(get, path = "/livez", tag = "operations", responses((status = 200, description = "Up")))]
pub async fn livez() -> Json<Success<()>> {
    Json(Success::new(()))
}

/// Probes of orchestrators time out after a few seconds; answer before.
const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Both stores answer a read-only request.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready"),
        (status = 503, description = "A store does not answer; `checks` says which"),
    )
)]
pub async fn readyz(State(state): State<ApiState>) -> Response {
    let readiness = state.vault.readiness(READINESS_TIMEOUT).await;
    let verdict = |r: &Result<(), _>| if r.is_ok() { "ok" } else { "unavailable" };
    let body = json!({
        "metadata": verdict(&readiness.metadata),
        "blobs": verdict(&readiness.blobs),
    });
    if readiness.metadata.is_ok() && readiness.blobs.is_ok() {
        Json(Success::new(json!({"checks": body}))).into_response()
    } else {
        tracing::warn!(metadata = ?readiness.metadata.as_ref().err(), blobs = ?readiness.blobs.as_ref().err(), "not ready");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "error", "message": "not ready", "checks": body})),
        )
            .into_response()
    }
}
