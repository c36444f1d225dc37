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

use axum::extract::{FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use axum::middleware::from_fn;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use mediavault_storage::App;
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiState;
use crate::auth::{TokenOf, check_token};
use crate::limits::ClientAddr;

pub use error::GraphError;
use error::envelope;

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
/// Graph route, and answers the service's plain 404. A Graph route's path
/// that does not read (an id that is not UTF-8) is Graph's invalid
/// parameter, as every other failure on these routes is a Graph error.
pub struct Versioned(pub GraphPath);

impl<S: Send + Sync> FromRequestParts<S> for Versioned {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Versioned, Response> {
        match graph_path(parts, state).await {
            Some(Ok(path)) => Ok(Versioned(path)),
            Some(Err(error)) => Err(error.into_response()),
            None => Err(crate::error::not_found().await.into_response()),
        }
    }
}

/// The request's path as a Graph route's: `None` when its first segment is
/// not a version (no Graph route), else the path, or Graph's invalid
/// parameter when it does not read.
async fn graph_path<S: Send + Sync>(parts: &mut Parts, state: &S) -> Option<Result<GraphPath, GraphError>> {
    match Path::<GraphPath>::from_request_parts(parts, state).await {
        Ok(Path(path)) => is_version(&path.version).then_some(Ok(path)),
        // The rejection does not say whether the version read: it is read
        // again from the raw path, decoded as the router decodes it.
        Err(rejection) => {
            let version = parts.uri.path().split('/').nth(1).unwrap_or_default();
            let is_graph = percent_decode_str(version)
                .decode_utf8()
                .is_ok_and(|version| is_version(&version));
            is_graph.then(|| Err(GraphError::invalid_parameter(rejection.body_text())))
        }
    }
}

/// The WhatsApp routes' `method_router`, finished: a method the route does
/// not have is a Graph error like any other failure there, and `envelope`
/// writes each Graph error's body. The fallback is set before the layer, so
/// that the envelope wraps it and the router-wide 405 does not replace it.
pub fn graph_route(method_router: MethodRouter<ApiState>) -> MethodRouter<ApiState> {
    method_router.fallback(wrong_method).layer(from_fn(envelope))
}

/// A method a Graph route does not have: Graph's unsupported-request error
/// with 405 (and the `Allow` header the router adds). A path that is not a
/// Graph route answers the service's own 405, as it did.
async fn wrong_method(method: Method, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    match graph_path(&mut parts, &()).await {
        Some(Ok(path)) => GraphError::unsupported_method(&method, &path.id).into_response(),
        Some(Err(error)) => error.into_response(),
        None => crate::error::method_not_allowed().await.into_response(),
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
