//! mediavault-api: the HTTP surface. Maps requests onto `Vault` calls and
//! their results onto the Gupshup-compatible wire contract. No SQL, crypto or
//! object-store calls here: handlers extract, call the vault, map the result.

mod auth;
mod download;
mod error;
mod path;
mod probes;
mod range;
mod upload;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use mediavault_storage::Vault;

pub use error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub vault: Vault,
}

/// The whole HTTP API.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/partner/app/{app_id}/media",
            // The file size limit is enforced while streaming, per app; the
            // generic 2 MB body limit would cut every real upload short.
            post(upload::upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/partner/app/{app_id}/media/{media_id}",
            get(download::download).delete(download::delete),
        )
        .route("/partner/app/{app_id}/media/{media_id}/info", get(download::info))
        .route("/livez", get(probes::livez))
        .route("/readyz", get(probes::readyz))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
}
