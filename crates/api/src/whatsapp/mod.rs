//! The WhatsApp Cloud API's media endpoints, so that a client built for
//! Meta's API works against mediavault by changing its base URL:
//! `POST /{version}/{phone-number-id}/media`, `GET` and `DELETE
//! /{version}/{media-id}`. An app takes part by having phone-number ids
//! mapped to it; its tokens are the Bearer tokens, and a medium stored on
//! either surface is read on both by the same id. Errors are Graph errors
//! (`error`), not the Gupshup shape.

mod error;
pub(crate) mod media;
pub(crate) mod upload;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use mediavault_storage::App;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiState;
use crate::auth::{TokenOf, check_token};
use crate::error::ApiError;
use crate::limits::ClientAddr;
use crate::path::ApiPath;

pub use error::{GraphError, envelope};

/// Failed Bearer authentications with tokens never issued are counted
/// under this scope, the address's (see `check_token`): the token names its
/// app, so no app can be named before it is checked. No app id has a `~`.
const BEARER_SCOPE: &str = "~whatsapp";

/// The path of a medium or a phone number: `/{version}/{id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct GraphPath {
    /// The Graph API version, `vNN.N` (any).
    pub version: String,
    /// The media id, or (uploads) the phone-number id.
    pub id: String,
}

/// A `GraphPath` whose version reads like one: any other path is not a
/// Graph route, and answers the service's plain 404.
pub struct Versioned(pub GraphPath);

impl<S: Send + Sync> FromRequestParts<S> for Versioned {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Versioned, ApiError> {
        let ApiPath(path) = ApiPath::<GraphPath>::from_request_parts(parts, state).await?;
        if !is_version(&path.version) {
            return Err(crate::error::not_found().await);
        }
        Ok(Versioned(path))
    }
}

/// `?phone_number_id=`: when given, the medium must belong to the app of
/// that phone number.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PhoneNumberQuery {
    /// A phone-number id mapped to the token's app.
    pub phone_number_id: Option<String>,
}

impl PhoneNumberQuery {
    /// The query string `raw`, read once the caller is authenticated: one
    /// that does not parse (a field given twice) is Graph's
    /// invalid-parameter error, where axum's `Query` would answer plain
    /// text, and before authentication.
    pub fn parse(raw: Option<&str>) -> Result<PhoneNumberQuery, GraphError> {
        serde_urlencoded::from_str(raw.unwrap_or_default())
            .map_err(|e| GraphError::invalid_parameter(format!("Invalid query: {e}")))
    }
}

/// Whether `version` reads like a Graph API version: `v`, digits, `.`, digits.
fn is_version(version: &str) -> bool {
    let Some((major, minor)) = version.strip_prefix('v').and_then(|v| v.split_once('.')) else {
        return false;
    };
    let digits = |s: &str| (1..=4).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    digits(major) && digits(minor)
}

/// The app whose live token the request carries as `Authorization: Bearer`
/// (or any form the Gupshup routes accept). 190 otherwise; code 4 once the
/// client has failed too often. `code` names the task for a store failure.
async fn authenticate(
    state: &ApiState,
    headers: &HeaderMap,
    ClientAddr(client): ClientAddr,
    code: u32,
) -> Result<App, GraphError> {
    check_token(state, BEARER_SCOPE, TokenOf::AnyApp, headers, client)
        .await
        .map_err(|locked_out| GraphError::from_limit(locked_out, true))?
        .map_err(|e| GraphError::from_auth(e, code))
}

/// Whether `phone_number_id` is mapped to `app`. A store failure answers
/// with `code`, the route's own (as its other failures do).
async fn is_apps_phone_number(
    state: &ApiState,
    app: &App,
    phone_number_id: &str,
    code: u32,
) -> Result<bool, GraphError> {
    let mapped = state
        .vault
        .app_of_phone_number(phone_number_id)
        .await
        .map_err(|e| GraphError::failed(&e, code))?;
    Ok(mapped.as_ref() == Some(&app.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_like_graphs() {
        for good in ["v19.0", "v23.0", "v1.0", "v100.12"] {
            assert!(is_version(good), "{good}");
        }
        for bad in [
            "19.0", "v19", "v19.", "v.0", "vx.0", "V19.0", "v19.0.1", "admin", "", "v12345.0",
        ] {
            assert!(!is_version(bad), "{bad}");
        }
    }
}
